"""Validation and the run report: metrics into the iteration item, figures and HTML into the store."""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
from rasterio.enums import Resampling

from ftlcloud.io.catalog import Catalog
from ftlcloud.io.cog import AssetInfo, multihash_sha256
from ftlcloud.io.store import Store
from ftlcloud.pipeline.api import ITERATIONS_COLLECTION, iteration_item_id
from ftlcloud.pipeline.loop import LoopResult, accepted_ftls, all_candidates
from ftlcloud.pipeline.run import RunManifest, RunPaths, run_lock
from ftlcloud.science.metrics import ObjectMatch, VerificationRates, match_objects

log = logging.getLogger(__name__)

#: Largest edge of the rasters drawn in the report (read from the COG overviews).
REPORT_RASTER_EDGE = 1200


def validate_run(
    detected: gpd.GeoDataFrame,
    reference: gpd.GeoDataFrame,
    *,
    rule: str = "intersects",
    min_iou: float = 0.1,
) -> tuple[ObjectMatch, VerificationRates]:
    """Object-level match of detected FTLs against a reference, and Eq. 3–5 from its TP/FP/FN."""
    from ftlcloud.science.metrics import verification_rates

    match = match_objects(detected, reference, rule=rule, min_iou=min_iou)  # type: ignore[arg-type]
    rates = verification_rates(
        match.n_true_positive, match.n_false_positive, match.n_false_negative
    )
    return match, rates


def _read_decimated(store: Store, key: str, edge: int) -> tuple[np.ndarray, Any]:
    with store.rasterio_env(), rasterio.open(store.gdal_path(key)) as src:
        scale = max(1.0, max(src.shape) / edge)
        shape = (max(1, int(src.height / scale)), max(1, int(src.width / scale)))
        arr = src.read(1, out_shape=shape, resampling=Resampling.average).astype("float32")
        transform = src.transform @ src.transform.scale(src.width / shape[1], src.height / shape[0])
        return arr, transform


def area_rasters(store: Store, run_id: str) -> Any:
    """Velocity, amplitude and a hillshade over the area, decimated for the report."""
    from ftlcloud.report.model import AreaRasters
    from ftlcloud.science.terrain import hillshade

    paths = RunPaths(run_id)
    vel, transform = _read_decimated(store, paths.factor_cog("velocity_mm_a"), REPORT_RASTER_EDGE)
    amp, _ = _read_decimated(store, paths.factor_cog("seasonal_amplitude_mm"), REPORT_RASTER_EDGE)
    dem, _ = _read_decimated(store, paths.factor_cog("elevation_m"), REPORT_RASTER_EDGE)
    manifest = RunManifest.from_json(store.read_text(paths.manifest))
    shade = hillshade(dem, transform, geographic=manifest.grid.is_geographic)
    return AreaRasters(
        velocity_mm_a=vel, seasonal_amplitude_mm=amp, transform=transform, hillshade=shade
    )


def publish_report(
    store: Store,
    loop: LoopResult,
    *,
    title: str = "ftlcloud run",
    match: ObjectMatch | None = None,
    rates: VerificationRates | None = None,
    verification: VerificationRates | None = None,
) -> str:
    """Build the run report, store it under ``runs/<run>/report/`` and attach it to the last
    iteration's item (with the validation metrics). Returns the report's index href."""
    # The report is written under the run's keys and re-publishes its last item: hold the run's
    # lock (re-entrant, so a caller already holding it, like `ftlcloud iterate`, keeps it).
    with run_lock(store, loop.run_id):
        return _publish_report(store, loop, title, match, rates, verification)


def _publish_report(
    store: Store,
    loop: LoopResult,
    title: str,
    match: ObjectMatch | None,
    rates: VerificationRates | None,
    verification: VerificationRates | None,
) -> str:
    from ftlcloud.report.build import build_report
    from ftlcloud.report.model import IterationSummary, ReportInputs

    run_id = loop.run_id
    manifest = RunManifest.from_json(store.read_text(RunPaths(run_id).manifest))
    ftls = accepted_ftls(loop.iterations, store, run_id)
    candidates = all_candidates(loop.iterations, ftls)
    summaries = [
        IterationSummary(
            iteration=r.iteration,
            thresholds={
                "elevation": r.thresholds.elevation_m.label,
                "slope": r.thresholds.slope_deg.label,
                "aspect": r.thresholds.aspect_label,
                "velocity": f"≥ {r.thresholds.velocity_abs_min_mm_a:g}",
            },
            n_candidates=r.n_candidates,
            n_accepted=r.counts.get("accepted", 0),
            n_rejected=r.counts.get("rejected", 0),
            n_new_ftls=r.counts.get("new_ftls", 0),
        )
        for r in loop.iterations
    ]
    verification_doc: Mapping[str, float] | None = None
    shown = verification or rates
    if shown is not None:
        verification_doc = {k: float(v) for k, v in asdict(shown).items()}
    match_doc = None
    if match is not None:
        match_doc = {
            "precision": match.precision,
            "recall": match.recall,
            "f1": match.f1,
            "rule": match.rule,
        }
    inputs = ReportInputs(
        title=title,
        run_id=run_id,
        crs=manifest.grid.crs,
        iterations=summaries,
        ftls=ftls,
        candidates=candidates,
        rasters=area_rasters(store, run_id),
        verification=verification_doc,
        object_match=match_doc,
        notes=(f"Stop: {loop.stop_reason}",),
    )
    files = build_report(inputs)
    prefix = f"{RunPaths(run_id).prefix}/report"
    infos: dict[str, AssetInfo] = {}
    for name, data in sorted(files.items()):
        key = f"{prefix}/{name}"
        store.write_bytes(key, data)
        infos[name] = AssetInfo(
            href=store.href(key),
            key=key,
            media_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
            checksum=multihash_sha256(data),
            size=len(data),
        )
    if loop.iterations:
        _attach(store, run_id, loop.iterations[-1].iteration, infos, match, shown)
    return store.href(f"{prefix}/index.html")


def _attach(
    store: Store,
    run_id: str,
    k: int,
    infos: Mapping[str, AssetInfo],
    match: ObjectMatch | None,
    rates: VerificationRates | None,
) -> None:
    catalog = Catalog(store)
    item = catalog.get_item(ITERATIONS_COLLECTION, iteration_item_id(run_id, k))
    if item is None:
        return
    item.make_asset_hrefs_absolute()
    for name, info in infos.items():
        stem = name.rsplit(".", 1)[0]
        asset_key = "report" if name == "index.html" else f"report-{stem}"
        roles = ("overview",) if name == "index.html" else ("visual",)
        item.add_asset(asset_key, info.to_asset(roles=roles, title=f"report: {name}"))
    if match is not None:
        item.properties["ftl:object_match"] = {
            "precision": _num(match.precision),
            "recall": _num(match.recall),
            "f1": _num(match.f1),
            "rule": match.rule,
            "n_detected": match.n_detected,
            "n_reference": match.n_reference,
        }
    if rates is not None:
        item.properties["ftl:verification"] = {k: _num(v) for k, v in asdict(rates).items()}
    catalog.add_item(item, ITERATIONS_COLLECTION)


def _num(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)
