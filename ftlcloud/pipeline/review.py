"""Review aids over the store: the HTML review page of an iteration."""

from __future__ import annotations

from ftlcloud.io.store import Store
from ftlcloud.pipeline.api import read_candidates
from ftlcloud.pipeline.run import RunManifest, RunPaths
from ftlcloud.pipeline.tiles import read_full_band


def publish_review_page(store: Store, run_id: str, k: int) -> tuple[str, str]:
    """Build the iteration's review page (chips from the factor COGs) and store it."""
    from ftlcloud.review.page import build_review_page
    from ftlcloud.science.terrain import hillshade

    paths = RunPaths(run_id)
    manifest = RunManifest.from_json(store.read_text(paths.manifest))
    grid = manifest.grid
    candidates = read_candidates(store, run_id, k)
    layers = {}
    for name in ("elevation_m", "velocity_mm_a", "seasonal_amplitude_mm", "delta_ndvi"):
        layers[name] = (read_full_band(store, paths.factor_cog(name)), grid.transform)
    dem = layers.pop("elevation_m")[0]
    layers = {
        "hillshade": (
            hillshade(dem, grid.transform, geographic=grid.is_geographic),
            grid.transform,
        ),
        "velocity": layers["velocity_mm_a"],
        "seasonal_amplitude": layers["seasonal_amplitude_mm"],
        "delta_ndvi": layers["delta_ndvi"],
    }
    html = build_review_page(candidates, layers, title=f"{run_id} iteration {k}", crs=grid.crs)
    key = paths.iteration(k, "review.html")
    store.write_text(key, html)
    return store.href(key), html
