"""One iteration: thresholds → masks per tile → candidates merged across tiles → publish.

Iterations only re-threshold and re-vectorise the factor tiles computed once per run, so they are
cheap. Outputs go under ``runs/<run>/iterations/<k>/``; the STAC item is published last.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
from distributed import Client, as_completed
from rasterio.errors import WindowError
from rasterio.features import geometry_mask
from rasterio.windows import Window, from_bounds
from rasterio.windows import transform as window_transform
from tqdm.auto import tqdm

from ftlcloud.errors import InputError
from ftlcloud.io.cog import AssetInfo
from ftlcloud.io.store import Store
from ftlcloud.pipeline.grid import GridSpec, Tile
from ftlcloud.pipeline.run import RunPaths
from ftlcloud.pipeline.tiles import assemble_cog, encode_tile, read_tile
from ftlcloud.science.candidates import (
    CANDIDATE_FACTORS,
    flag_known,
    merge_tile_regions,
    score_candidates,
    vectorise_tile,
)
from ftlcloud.science.masks import MASK_FACTORS, MaskBit, compute_masks
from ftlcloud.science.rules import Thresholds

log = logging.getLogger(__name__)

#: Factors the thresholds are learnt from (sampled under the known inventory).
SAMPLED_FACTORS = ("elevation_m", "slope_deg", "aspect_deg", "velocity_mm_a")
#: Factors a mask task reads from its tile: the masks' and the candidates' statistics.
TILE_FACTORS = tuple(dict.fromkeys((*MASK_FACTORS, *CANDIDATE_FACTORS)))


def _feature_window(geom: Any, grid: GridSpec) -> Window | None:
    """The grid window around a feature (one pixel of margin), or None off the grid."""
    left, bottom, right, top = geom.bounds
    res_x, res_y = grid.resolution_xy
    win = (
        from_bounds(left - res_x, bottom - res_y, right + res_x, top + res_y, grid.transform)
        .round_offsets()
        .round_lengths()
    )
    try:
        return win.intersection(Window(0, 0, grid.width, grid.height))
    except WindowError:  # disjoint
        return None


def _inside(geom: Any, win: Window, grid: GridSpec) -> np.ndarray:
    """Pixels of ``win`` (grid coordinates) a feature covers: centres inside a polygon, the
    pixel under a point."""
    transform = window_transform(win, grid.transform)
    shape = (int(win.height), int(win.width))
    if geom.geom_type in ("Point", "MultiPoint"):
        inside = np.zeros(shape, dtype=bool)
        for pt in getattr(geom, "geoms", [geom]):
            col, row = ~transform @ (pt.x, pt.y)
            r, c = int(np.floor(row)), int(np.floor(col))
            if 0 <= r < shape[0] and 0 <= c < shape[1]:
                inside[r, c] = True
        return inside
    return geometry_mask([geom], out_shape=shape, transform=transform, invert=True)


def _sample_tile(
    store: Store,
    paths: RunPaths,
    tile: Tile,
    grid: GridSpec,
    pieces: Sequence[tuple[Any, Window]],
    names: Sequence[str],
) -> dict[str, np.ndarray]:
    bands = read_tile(store, paths.factor_tile(tile), names)
    t = tile.window
    values: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for geom, win in pieces:
        inside = _inside(geom, win, grid)
        rows = slice(int(win.row_off - t.row_off), int(win.row_off - t.row_off + win.height))
        cols = slice(int(win.col_off - t.col_off), int(win.col_off - t.col_off + win.width))
        for n in names:
            values[n].append(bands[n][rows, cols][inside])
    return {n: np.concatenate(v) for n, v in values.items()}


def sample_factors(
    client: Client,
    store: Store,
    paths: RunPaths,
    grid: GridSpec,
    tile_size: int,
    inventory: gpd.GeoDataFrame,
    names: Sequence[str] = SAMPLED_FACTORS,
) -> dict[str, np.ndarray]:
    """Factor values at the inventory's pixels: every pixel whose centre is inside a polygon,
    the pixel under a point (a pixel is counted once per feature covering it).

    One task per factor tile under the inventory reads only those bands of the tile and
    samples the pieces of the features that fall in it; a feature across tile edges is
    sampled in pieces, whose pixels together are the feature's.
    """
    if inventory.crs is None:
        raise InputError("the inventory has no CRS; re-ingest it with a CRS")
    inv = inventory.to_crs(grid.crs)
    tiles = grid.tiles(tile_size)
    by_rc = {(t.row, t.col): t for t in tiles}
    pieces: dict[tuple[int, int], list[tuple[Any, Window]]] = {}
    for geom in inv.geometry:
        if geom is None or geom.is_empty:
            continue
        win = _feature_window(geom, grid)
        if win is None:
            continue
        r0, c0 = int(win.row_off), int(win.col_off)
        r1, c1 = r0 + int(win.height) - 1, c0 + int(win.width) - 1
        for r in range(r0 // tile_size, r1 // tile_size + 1):
            for c in range(c0 // tile_size, c1 // tile_size + 1):
                part = win.intersection(by_rc[(r, c)].window)
                pieces.setdefault((r, c), []).append((geom, part))
    call = uuid.uuid4().hex[:8]  # each iteration samples its own inventory
    futures = [
        client.submit(
            _sample_tile,
            store,
            paths,
            by_rc[rc],
            grid,
            parts,
            tuple(names),
            key=f"sample-{paths.run_id}-{call}-{by_rc[rc].tile_id}",
        )
        for rc, parts in pieces.items()
    ]
    values: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for part in client.gather(futures):
        for n in names:
            values[n].append(part[n])
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
    factors = read_tile(store, paths.factor_tile(tile), TILE_FACTORS)
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
