"""The factor stage: per tile on Dask, once per run.

Each tile task gets its deformation block (whole time axis), its DEM block with a one-pixel halo and
its NDVI blocks, computes every factor with the pure science functions, and writes one multi-band
tile GeoTIFF to the store. Finished tiles are skipped on rerun. Then one COG per factor is assembled
from the tiles, and the factors' STAC item is published last.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dask.array as da
import numpy as np
from affine import Affine
from dask import delayed
from distributed import Client, as_completed
from tqdm.auto import tqdm

from ftlcloud.io.cog import AssetInfo
from ftlcloud.io.store import Store
from ftlcloud.pipeline.grid import GridSpec, Tile
from ftlcloud.pipeline.run import FactorSettings, RunPaths
from ftlcloud.pipeline.tiles import assemble_cog, encode_tile
from ftlcloud.science.fit import FIT_FIELDS, fit_seasonal
from ftlcloud.science.ndvi import delta_ndvi
from ftlcloud.science.terrain import slope_aspect

log = logging.getLogger(__name__)

TERRAIN_FIELDS = ("elevation_m", "slope_deg", "aspect_deg")
FACTOR_NAMES: tuple[str, ...] = (*FIT_FIELDS, *TERRAIN_FIELDS, "delta_ndvi")

FACTOR_UNITS = {
    "velocity_mm_a": "mm/a",
    "velocity_std_mm_a": "mm/a",
    "seasonal_amplitude_mm": "mm",
    "seasonal_peak_doy": "day of year",
    "intercept_mm": "mm",
    "rmse_mm": "mm",
    "n_valid": "count",
    "elevation_m": "m",
    "slope_deg": "degree",
    "aspect_deg": "degree",
    "delta_ndvi": "1",
}


def tile_factors(
    displacement_mm: np.ndarray,
    dates: Sequence[dt.date],
    dem_halo_m: np.ndarray,
    halo_transform: Affine,
    ndvi_early: np.ndarray,
    ndvi_late: np.ndarray,
    *,
    geographic: bool,
    settings: FactorSettings,
) -> dict[str, np.ndarray]:
    """Every factor of one tile (pure: arrays in, arrays out).

    ``dem_halo_m`` carries a one-pixel halo on every side (NaN beyond the raster's edge), so that
    slope and aspect equal whole-raster processing; the halo is trimmed here.
    """
    fit = fit_seasonal(
        displacement_mm,
        list(dates),
        unit="mm",
        period_years=settings.period_years,
        min_valid=settings.min_valid_dates,
    ).as_dict()
    slope, aspect = slope_aspect(dem_halo_m, halo_transform, geographic=geographic)
    inner = (slice(1, -1), slice(1, -1))
    out = {name: np.asarray(fit[name], dtype=np.float32) for name in FIT_FIELDS}
    out["elevation_m"] = np.asarray(dem_halo_m[inner], dtype=np.float32)
    out["slope_deg"] = np.asarray(slope[inner], dtype=np.float32)
    out["aspect_deg"] = np.asarray(aspect[inner], dtype=np.float32)
    out["delta_ndvi"] = np.asarray(delta_ndvi(ndvi_late, ndvi_early), dtype=np.float32)
    return out


def _process_tile(
    store: Store,
    key: str,
    tile: Tile,
    grid: GridSpec,
    displacement_mm: np.ndarray,
    dates: Sequence[dt.date],
    dem_halo_m: np.ndarray,
    ndvi_early: np.ndarray,
    ndvi_late: np.ndarray,
    settings: FactorSettings,
) -> dict[str, object]:
    start = time.perf_counter()
    w = tile.window
    halo_transform = grid.transform @ Affine.translation(w.col_off - 1, w.row_off - 1)
    factors = tile_factors(
        displacement_mm,
        dates,
        dem_halo_m,
        halo_transform,
        ndvi_early,
        ndvi_late,
        geographic=grid.is_geographic,
        settings=settings,
    )
    data = encode_tile(factors, grid.tile_transform(w), grid.crs)
    store.write_bytes(key, data)
    valid = int(np.count_nonzero(np.isfinite(factors["velocity_mm_a"])))
    return {
        "tile": tile.tile_id,
        "pixels": int(w.width * w.height),
        "fitted_pixels": valid,
        "seconds": time.perf_counter() - start,
    }


@dataclass(frozen=True)
class FactorStageResult:
    """What the factor stage did."""

    tiles_total: int
    tiles_computed: int
    pixels: int
    fitted_pixels: int
    cogs: dict[str, AssetInfo]
    seconds: float


def compute_factor_tiles(
    client: Client,
    store: Store,
    paths: RunPaths,
    grid: GridSpec,
    layers: Mapping[str, da.Array],
    dates: Sequence[dt.date],
    settings: FactorSettings,
    *,
    progress: bool = True,
) -> list[dict[str, object]]:
    """Compute and store the factor tiles not yet in the store; return per-tile stats."""
    tiles = grid.tiles(settings.tile_size)
    todo = [t for t in tiles if not store.exists(paths.factor_tile(t))]
    log.info("factor tiles: %d of %d to compute", len(todo), len(tiles))
    if not todo:
        return []
    cube_blocks = layers["displacement_mm"].to_delayed()
    dem_halo = da.overlap.overlap(
        layers["dem_m"], depth={0: 1, 1: 1}, boundary={0: np.nan, 1: np.nan}
    ).to_delayed()
    early_blocks = layers["ndvi_early"].to_delayed()
    late_blocks = layers["ndvi_late"].to_delayed()
    tasks = []
    for tile in todo:
        r, c = tile.row, tile.col
        tasks.append(
            delayed(_process_tile, pure=False)(
                store,
                paths.factor_tile(tile),
                tile,
                grid,
                cube_blocks[0, r, c],
                tuple(dates),
                dem_halo[r, c],
                early_blocks[r, c],
                late_blocks[r, c],
                settings,
                dask_key_name=f"factors-{paths.run_id}-{tile.tile_id}",
            )
        )
    futures = client.compute(tasks)
    stats: list[dict[str, object]] = []
    with tqdm(total=len(futures), desc="factor tiles", unit="tile", disable=not progress) as bar:
        for fut in as_completed(futures):
            stats.append(fut.result())
            bar.update(1)
    return stats


def assemble_factor_cogs(
    client: Client,
    store: Store,
    paths: RunPaths,
    grid: GridSpec,
    settings: FactorSettings,
    *,
    progress: bool = True,
) -> dict[str, AssetInfo]:
    """One COG per factor from the tiles, assembled on the workers in parallel."""
    tiles = grid.tiles(settings.tile_size)
    keys = [paths.factor_tile(t) for t in tiles]
    futures = {
        name: client.submit(
            assemble_cog,
            store,
            grid,
            tiles,
            keys,
            band,
            paths.factor_cog(name),
            kind="continuous",
            description=name,
            unit=FACTOR_UNITS[name],
            key=f"assemble-{paths.run_id}-{name}",
            pure=False,
        )
        for band, name in enumerate(FACTOR_NAMES, start=1)
    }
    out: dict[str, AssetInfo] = {}
    with tqdm(total=len(futures), desc="factor COGs", unit="cog", disable=not progress) as bar:
        for name, fut in futures.items():
            out[name] = fut.result()
            bar.update(1)
    return out
