"""One iteration: thresholds → masks per tile → candidates merged across tiles → publish.

Iterations only re-threshold and re-vectorise the factor tiles computed once per run, so they are
cheap. Outputs go under ``runs/<run>/iterations/<k>/``; the STAC item is published last.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import rasterio
from distributed import Client, as_completed
from rasterio.features import geometry_mask
from rasterio.windows import from_bounds
from tqdm.auto import tqdm

from ftlcloud.errors import InputError
from ftlcloud.io.cog import AssetInfo
from ftlcloud.io.store import Store
from ftlcloud.pipeline.grid import GridSpec, Tile
from ftlcloud.pipeline.run import RunPaths
from ftlcloud.pipeline.tiles import assemble_cog, encode_tile, read_tile
from ftlcloud.science.candidates import (
    flag_known,
    merge_tile_regions,
    score_candidates,
    vectorise_tile,
)
from ftlcloud.science.masks import MaskBit, compute_masks
from ftlcloud.science.rules import Thresholds

log = logging.getLogger(__name__)

#: Factors the thresholds are learnt from (sampled under the known inventory).
SAMPLED_FACTORS = ("elevation_m", "slope_deg", "aspect_deg", "velocity_mm_a")


def sample_factors(
    store: Store,
    paths: RunPaths,
    grid: GridSpec,
    inventory: gpd.GeoDataFrame,
    names: Sequence[str] = SAMPLED_FACTORS,
) -> dict[str, np.ndarray]:
    """Factor values at the inventory's pixels: every pixel inside a polygon, the pixel under a point.

    Reads only the windows around the features from the factor COGs.
    """
    if inventory.crs is None:
        raise InputError("the inventory has no CRS; re-ingest it with a CRS")
    inv = inventory.to_crs(grid.crs)
    values: dict[str, list[np.ndarray]] = {n: [] for n in names}
    with store.rasterio_env():
        sources = {n: rasterio.open(store.gdal_path(paths.factor_cog(n))) for n in names}
        try:
            for geom in inv.geometry:
                if geom is None or geom.is_empty:
                    continue
                left, bottom, right, top = geom.bounds
                res_x, res_y = grid.resolution_xy
                win = (
                    from_bounds(
                        left - res_x, bottom - res_y, right + res_x, top + res_y, grid.transform
                    )
                    .round_offsets()
                    .round_lengths()
                )
                win = win.intersection(rasterio.windows.Window(0, 0, grid.width, grid.height))
                transform = rasterio.windows.transform(win, grid.transform)
                shape = (int(win.height), int(win.width))
                if geom.geom_type in ("Point", "MultiPoint"):
                    inside = np.zeros(shape, dtype=bool)
                    for pt in getattr(geom, "geoms", [geom]):
                        col, row = ~transform @ (pt.x, pt.y)
                        r, c = int(np.floor(row)), int(np.floor(col))
                        if 0 <= r < shape[0] and 0 <= c < shape[1]:
                            inside[r, c] = True
                else:
                    inside = geometry_mask(
                        [geom], out_shape=shape, transform=transform, invert=True, all_touched=False
                    )
                for n, src in sources.items():
                    values[n].append(src.read(1, window=win)[inside])
        finally:
            for src in sources.values():
                src.close()
    return {
        n: (np.concatenate(v) if v else np.empty(0, dtype=np.float32)) for n, v in values.items()
    }


def _mask_tile(
    store: Store,
    paths: RunPaths,
    k: int,
    tile: Tile,
    grid: GridSpec,
    thresholds: Thresholds,
) -> gpd.GeoDataFrame:
    factors = read_tile(store, paths.factor_tile(tile))
    bits = compute_masks(factors, thresholds)
    transform = grid.tile_transform(tile.window)
    store.write_bytes(
        paths.mask_tile(k, tile), encode_tile({"mask": bits}, transform, grid.crs, "uint8")
    )
    overlap = (bits & MaskBit.OVERLAP) != 0
    return vectorise_tile(overlap, factors, transform, grid.crs)


@dataclass(frozen=True)
class IterationOutputs:
    """What an iteration computed, before it is written."""

    thresholds: Thresholds
    candidates: gpd.GeoDataFrame
    mask: AssetInfo
    pixels_in_overlap: int


def mask_and_vectorise(
    client: Client,
    store: Store,
    paths: RunPaths,
    k: int,
    grid: GridSpec,
    tile_size: int,
    thresholds: Thresholds,
    inventory: gpd.GeoDataFrame | None,
    *,
    min_area_ha: float = 0.0,
    progress: bool = True,
) -> IterationOutputs:
    """Masks per tile on the workers, candidates merged across tile edges on the client."""
    tiles = grid.tiles(tile_size)
    futures = [
        client.submit(
            _mask_tile,
            store,
            paths,
            k,
            t,
            grid,
            thresholds,
            key=f"mask-{paths.run_id}-{k}-{t.tile_id}",
        )
        for t in tiles
    ]
    parts: list[gpd.GeoDataFrame] = []
    with tqdm(
        total=len(futures), desc=f"iteration {k} masks", unit="tile", disable=not progress
    ) as bar:
        for fut in as_completed(futures):
            parts.append(fut.result())
            bar.update(1)
    candidates = merge_tile_regions(parts, grid.crs, min_area_ha=min_area_ha, id_prefix=f"it{k}-c")
    candidates.insert(1, "iteration", np.int32(k))
    if inventory is not None and len(inventory):
        candidates["overlaps_known"] = flag_known(candidates, inventory).to_numpy(dtype=bool)
    else:
        candidates["overlaps_known"] = np.zeros(len(candidates), dtype=bool)
    candidates["score"] = score_candidates(candidates).to_numpy(dtype=float)
    mask = assemble_cog(
        store,
        grid,
        tiles,
        [paths.mask_tile(k, t) for t in tiles],
        1,
        paths.iteration(k, "mask.tif"),
        kind="mask",
        description="mask bits: 1 elevation, 2 slope, 4 aspect, 8 |velocity|, 16 overlap",
    )
    n_overlap = int(candidates["n_pixels"].sum()) if len(candidates) else 0
    return IterationOutputs(thresholds, candidates, mask, n_overlap)
