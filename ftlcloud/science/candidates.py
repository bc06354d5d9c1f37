"""Candidate FTLs: connected regions of the overlap mask as polygons with attributes.

One code path serves whole rasters and tiles: ``vectorise_tile`` turns one tile into partial
regions carrying additive statistics (pixel count, sums, counts, maxima, sums of sin/cos of aspect)
and ``merge_tile_regions`` joins partial regions that connect across tile edges, with the same
connectivity rule as inside a tile (with 8-connectivity, regions touching only at a tile corner
join too). Geometry is joined in integer pixel coordinates, so the union is exact and the tiled
result equals the whole-raster one. ``vectorise_candidates`` is a single tile plus the merge.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio.features
import shapely
from affine import Affine
from pyproj import CRS
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ftlcloud.errors import InputError
from ftlcloud.science.ndvi import is_hidden, is_small

logger = logging.getLogger(__name__)

CANDIDATE_COLUMNS = (
    "candidate_id",
    "area_ha",
    "perimeter_km",
    "n_pixels",
    "velocity_mean_abs_mm_a",
    "velocity_max_abs_mm_a",
    "seasonal_amplitude_mean_mm",
    "slope_mean_deg",
    "aspect_circmean_deg",
    "elevation_mean_m",
    "delta_ndvi_mean",
    "hidden",
    "small",
    "centroid_x",
    "centroid_y",
)

#: Factors averaged over a region: factor name -> stem of the partial sum/count columns.
_MEAN_FACTORS = {
    "velocity_mm_a": "velocity_abs",
    "seasonal_amplitude_mm": "seasonal_amplitude",
    "slope_deg": "slope",
    "elevation_m": "elevation",
    "delta_ndvi": "delta_ndvi",
}
#: The factors vectorise_tile reads (the others are ignored).
CANDIDATE_FACTORS = (*_MEAN_FACTORS, "aspect_deg")
_TILE_COLUMNS = ("tile_a", "tile_b", "tile_c", "tile_d", "tile_e", "tile_f")

#: Columns of a partial-region frame (vectorise_tile's output), besides geometry.
PARTIAL_COLUMNS = (
    "n_pixels",
    "anchor_x",
    "anchor_y",
    *(f"{stem}_{kind}" for stem in _MEAN_FACTORS.values() for kind in ("sum", "count")),
    "velocity_abs_max",
    "aspect_sin_sum",
    "aspect_cos_sum",
    "aspect_count",
    "connectivity",
    *_TILE_COLUMNS,
)

# Pixel-space vertices of joined tiles must land this close to integers (in pixels).
_GRID_TOLERANCE_PX = 1e-6


def _structure(connectivity: int) -> np.ndarray:
    if connectivity == 8:
        return np.ones((3, 3), dtype=bool)
    if connectivity == 4:
        return ndimage.generate_binary_structure(2, 1)
    raise InputError(f"connectivity must be 4 or 8, got {connectivity}")


def _empty_partial(crs: Any) -> gpd.GeoDataFrame:
    data: dict[str, Any] = {c: pd.Series(dtype="float64") for c in PARTIAL_COLUMNS}
    data["n_pixels"] = pd.Series(dtype="int64")
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


def empty_candidates(crs: Any) -> gpd.GeoDataFrame:
    """A candidates frame with no rows, the right columns and dtypes, and the CRS."""
    data: dict[str, Any] = {c: pd.Series(dtype="float64") for c in CANDIDATE_COLUMNS}
    data["candidate_id"] = pd.Series(dtype="object")
    data["n_pixels"] = pd.Series(dtype="int64")
    data["hidden"] = pd.Series(dtype="bool")
    data["small"] = pd.Series(dtype="bool")
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


def _check_tile(
    overlap_tile: np.ndarray, factors_tile: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    mask = np.asarray(overlap_tile)
    if mask.ndim != 2:
        raise InputError(f"overlap mask must be 2-D, got shape {mask.shape}")
    arrays: dict[str, np.ndarray] = {}
    for name, values in factors_tile.items():
        arr = np.asarray(values)
        if arr.shape != mask.shape:
            raise InputError(
                f"factor '{name}' has shape {arr.shape} but the overlap mask has {mask.shape}; "
                "pass arrays on the same grid"
            )
        arrays[name] = arr
    return mask.astype(bool), arrays


def vectorise_tile(
    overlap_tile: np.ndarray,
    factors_tile: Mapping[str, np.ndarray],
    transform_tile: Affine,
    crs: Any,
    *,
    connectivity: int = 8,
) -> gpd.GeoDataFrame:
    """Partial regions of one tile: polygons in the CRS plus additive statistics (PARTIAL_COLUMNS).

    anchor_x/anchor_y are the world coordinates of the centre of each region's first pixel in
    row-major order; tile_a..tile_f the tile's affine transform. Pass the frames of all tiles to
    merge_tile_regions.
    """
    mask, arrays = _check_tile(overlap_tile, factors_tile)
    structure = _structure(connectivity)
    labels, n_regions = ndimage.label(mask, structure=structure)
    if n_regions == 0:
        return _empty_partial(crs)
    # Converted to float64 only once the tile is known to hold regions.
    arrays = {name: np.asarray(arr, dtype=np.float64) for name, arr in arrays.items()}
    labels = labels.astype(np.int32)
    flat = labels.ravel()
    size = n_regions + 1

    def per_label(weights: np.ndarray | None) -> np.ndarray:
        return np.bincount(flat, weights=weights, minlength=size)[1:]

    data: dict[str, Any] = {"n_pixels": per_label(None).astype(np.int64)}
    uniq, first_index = np.unique(flat, return_index=True)
    first_rows, first_cols = np.divmod(first_index[uniq > 0], mask.shape[1])
    ax, ay = _apply(transform_tile, first_cols + 0.5, first_rows + 0.5)
    data["anchor_x"] = ax
    data["anchor_y"] = ay

    for name, stem in _MEAN_FACTORS.items():
        if name in arrays:
            values = arrays[name].ravel()
            if name == "velocity_mm_a":
                values = np.abs(values)
            valid = np.isfinite(values) & (flat > 0)
            data[f"{stem}_sum"] = per_label(np.where(valid, values, 0.0))
            data[f"{stem}_count"] = per_label(valid.astype(np.float64))
        else:
            data[f"{stem}_sum"] = np.zeros(n_regions)
            data[f"{stem}_count"] = np.zeros(n_regions)

    vmax = np.full(size, -np.inf)
    if "velocity_mm_a" in arrays:
        v = np.abs(arrays["velocity_mm_a"].ravel())
        ok = np.isfinite(v) & (flat > 0)
        np.maximum.at(vmax, flat[ok], v[ok])
    data["velocity_abs_max"] = np.where(np.isfinite(vmax[1:]), vmax[1:], np.nan)

    if "aspect_deg" in arrays:
        a = arrays["aspect_deg"].ravel()
        # flat cells (FLAT_ASPECT, -1) and nodata codes carry no direction: outside [0, 360]
        ok = np.isfinite(a) & (a >= 0.0) & (a <= 360.0) & (flat > 0)
        rad = np.deg2rad(np.where(ok, a, 0.0))
        data["aspect_sin_sum"] = per_label(np.where(ok, np.sin(rad), 0.0))
        data["aspect_cos_sum"] = per_label(np.where(ok, np.cos(rad), 0.0))
        data["aspect_count"] = per_label(ok.astype(np.float64))
    else:
        for col in ("aspect_sin_sum", "aspect_cos_sum", "aspect_count"):
            data[col] = np.zeros(n_regions)

    data["connectivity"] = np.full(n_regions, connectivity, dtype=np.int64)
    for col, value in zip(_TILE_COLUMNS, tuple(transform_tile)[:6], strict=True):
        data[col] = np.full(n_regions, float(value))

    # 4-connected pieces in pixel space (integer vertices); pieces of one 8-connected label that
    # touch at a corner become a valid MultiPolygon.
    pieces: list[list[shapely.Geometry]] = [[] for _ in range(n_regions)]
    for geom, value in rasterio.features.shapes(
        labels, mask=labels > 0, connectivity=4, transform=Affine.identity()
    ):
        pieces[int(value) - 1].append(shapely.geometry.shape(geom))
    pixel_geoms = np.array([shapely.union_all(p) for p in pieces], dtype=object)
    world = _to_world(pixel_geoms, transform_tile)
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(world, crs=crs), crs=crs)


def _apply(t: Affine, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Affine t applied to coordinate arrays."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f


def _to_world(pixel_geoms: np.ndarray, transform: Affine) -> np.ndarray:
    t = transform
    return np.asarray(
        [shapely.affinity.affine_transform(g, [t.a, t.b, t.d, t.e, t.c, t.f]) for g in pixel_geoms],
        dtype=object,
    )


def _to_pixels(world_geoms: np.ndarray, inverse: Affine) -> tuple[np.ndarray, float]:
    """World geometries to integer pixel coordinates of the reference grid, and the max rounding."""
    worst = 0.0

    def snap(coords: np.ndarray) -> np.ndarray:
        nonlocal worst
        cols, rows = _apply(inverse, coords[:, 0], coords[:, 1])
        px = np.column_stack([cols, rows])
        snapped = np.round(px)
        if px.size:
            worst = max(worst, float(np.max(np.abs(px - snapped))))
        return snapped

    return shapely.transform(world_geoms, snap), worst


def _area_perimeter(geoms: np.ndarray, crs: CRS) -> tuple[np.ndarray, np.ndarray]:
    """Area in ha and perimeter in km: geodesic for geographic CRSs, planar otherwise."""
    if crs.is_geographic:
        geod = crs.get_geod()
        if geod is None:
            raise InputError(f"CRS {crs.to_string()} has no ellipsoid; cannot compute areas")
        ap = [geod.geometry_area_perimeter(g) for g in geoms]
        area_m2 = np.array([abs(a) for a, _ in ap], dtype=np.float64)
        perim_m = np.array([p for _, p in ap], dtype=np.float64)
    else:
        unit = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
        area_m2 = shapely.area(geoms).astype(np.float64) * unit**2
        perim_m = shapely.length(geoms).astype(np.float64) * unit
    return area_m2 / 1e4, perim_m / 1e3


def merge_tile_regions(
    parts: Sequence[gpd.GeoDataFrame],
    crs: Any,
    *,
    min_area_ha: float = 0.0,
    id_prefix: str = "c",
) -> gpd.GeoDataFrame:
    """Join partial regions connected across tile edges into candidates with final attributes.

    Tiles must be on one pixel grid and must not overlap (trim halos first). Parts connect when
    they share an edge, or, when the tiles were vectorised with connectivity=8, also a corner.
    Ids are ``<id_prefix><n>`` in the row-major order of each candidate's first pixel;
    min_area_ha is applied before numbering.
    """
    if crs is None:
        raise InputError("merge_tile_regions needs the CRS of the tiles (crs=...)")
    crs_obj = CRS.from_user_input(crs)
    frames = [p for p in parts if len(p)]
    if not frames:
        return empty_candidates(crs_obj)
    for i, frame in enumerate(frames):
        missing = [c for c in PARTIAL_COLUMNS if c not in frame.columns]
        if missing:
            raise InputError(
                f"partial-region frame {i} lacks columns {missing}; make it with vectorise_tile"
            )
    table = pd.concat(
        [pd.DataFrame(f.drop(columns=f.geometry.name)) for f in frames], ignore_index=True
    )
    world_in = np.concatenate([np.asarray(f.geometry.values, dtype=object) for f in frames])

    conn = np.unique(table["connectivity"].to_numpy(np.int64))
    if conn.size != 1:
        raise InputError(
            f"partial regions were vectorised with different connectivities {conn.tolist()}; "
            "use one connectivity for every tile"
        )
    connectivity = int(conn[0])
    _structure(connectivity)  # validates the value
    tiles = table[list(_TILE_COLUMNS)].to_numpy(dtype=np.float64)
    scale = np.abs(tiles[0, [0, 1, 3, 4]]).max()
    if not np.allclose(
        tiles[:, [0, 1, 3, 4]], tiles[0, [0, 1, 3, 4]], rtol=1e-9, atol=1e-12 * scale
    ):
        raise InputError(
            "partial regions come from tiles with different pixel sizes or rotations; "
            "tile one grid (same resolution_xy) before merging"
        )
    # The reference grid is the top-left tile among the parts, whatever order the parts came in
    # (tasks finish in any order), so the output does not depend on the order of `parts`.
    first = Affine(*tiles[0])
    ocol, orow = _apply(~first, tiles[:, 2], tiles[:, 5])
    ref_row = int(np.lexsort((np.round(ocol), np.round(orow)))[0])
    ref = Affine(*tiles[ref_row])
    inverse = ~ref
    acol, arow = _apply(inverse, table["anchor_x"].to_numpy(), table["anchor_y"].to_numpy())
    anchor_col = np.floor(np.asarray(acol) + 1e-6).astype(np.int64)
    anchor_row = np.floor(np.asarray(arow) + 1e-6).astype(np.int64)
    # Rows in first-pixel order make the float sums below independent of the input order too.
    order_in = np.lexsort((anchor_col, anchor_row))
    table = table.iloc[order_in].reset_index(drop=True)
    world_in = world_in[order_in]
    anchor_col, anchor_row = anchor_col[order_in], anchor_row[order_in]
    pixel_geoms, worst = _to_pixels(world_in, inverse)
    if worst > _GRID_TOLERANCE_PX:
        raise InputError(
            f"tile origins are off the common pixel grid by up to {worst:.3g} px; tiles must be "
            "windows of one raster grid"
        )

    # Which parts touch? Exact predicates on integer pixel coordinates.
    n = len(table)
    tree = shapely.STRtree(pixel_geoms)
    left, right = tree.query(pixel_geoms, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    if connectivity == 4 and left.size:
        shared = shapely.length(shapely.intersection(pixel_geoms[left], pixel_geoms[right]))
        edge = shared > 0
        left, right = left[edge], right[edge]
    graph = coo_matrix((np.ones(left.size), (left, right)), shape=(n, n))
    n_groups, group = connected_components(graph, directed=False)

    def group_sum(col: str) -> np.ndarray:
        return np.bincount(group, weights=table[col].to_numpy(np.float64), minlength=n_groups)

    n_pixels = np.bincount(
        group, weights=table["n_pixels"].to_numpy(np.float64), minlength=n_groups
    ).astype(np.int64)
    vmax = np.full(n_groups, -np.inf)
    vm = table["velocity_abs_max"].to_numpy(np.float64)
    ok = np.isfinite(vm)
    np.maximum.at(vmax, group[ok], vm[ok])
    # first pixel of a merged region: the smallest (row, col) of its parts' first pixels
    order = np.lexsort((anchor_col, anchor_row))
    first_of_group = np.full(n_groups, -1, dtype=np.int64)
    for idx in order[::-1]:
        first_of_group[group[idx]] = idx
    g_row, g_col = anchor_row[first_of_group], anchor_col[first_of_group]

    members: list[list[int]] = [[] for _ in range(n_groups)]
    for idx, g in enumerate(group):
        members[g].append(idx)
    merged_px = np.empty(n_groups, dtype=object)
    for g, idxs in enumerate(members):
        merged = shapely.union_all(pixel_geoms[idxs])
        # drop collinear vertices left on former tile edges, then a canonical vertex order
        merged_px[g] = shapely.normalize(shapely.simplify(merged, 0.0))
    union_px_area = shapely.area(merged_px)
    if not np.allclose(union_px_area, n_pixels, rtol=0, atol=1e-6):
        bad = int(np.argmax(np.abs(union_px_area - n_pixels)))
        raise InputError(
            f"merged region at pixel (row {g_row[bad]}, col {g_col[bad]}) covers "
            f"{union_px_area[bad]:g} px but counts {n_pixels[bad]} px: tiles overlap; trim halos "
            "so tiles do not overlap before vectorising"
        )
    world = _to_world(merged_px, ref)
    invalid = ~shapely.is_valid(world)
    if invalid.any():
        world[invalid] = shapely.make_valid(world[invalid])
    area_ha, perimeter_km = _area_perimeter(world, crs_obj)

    with np.errstate(invalid="ignore", divide="ignore"):
        means = {
            stem: group_sum(f"{stem}_sum") / group_sum(f"{stem}_count")
            for stem in _MEAN_FACTORS.values()
        }
        s, c = group_sum("aspect_sin_sum"), group_sum("aspect_cos_sum")
        aspect_n = group_sum("aspect_count")
    aspect_mean = np.mod(np.rad2deg(np.arctan2(s, c)), 360.0)
    aspect_mean = np.where(
        (aspect_n > 0) & (np.hypot(s, c) > 1e-12 * aspect_n), aspect_mean, np.nan
    )
    centroids = shapely.centroid(world)

    result = pd.DataFrame(
        {
            "area_ha": area_ha,
            "perimeter_km": perimeter_km,
            "n_pixels": n_pixels,
            "velocity_mean_abs_mm_a": means["velocity_abs"],
            "velocity_max_abs_mm_a": np.where(np.isfinite(vmax), vmax, np.nan),
            "seasonal_amplitude_mean_mm": means["seasonal_amplitude"],
            "slope_mean_deg": means["slope"],
            "aspect_circmean_deg": aspect_mean,
            "elevation_mean_m": means["elevation"],
            "delta_ndvi_mean": means["delta_ndvi"],
            "centroid_x": shapely.get_x(centroids),
            "centroid_y": shapely.get_y(centroids),
            "_row": g_row,
            "_col": g_col,
        }
    )
    result["geometry"] = world
    result = result[result["area_ha"] >= min_area_ha]
    result = result.sort_values(["_row", "_col"], kind="stable").reset_index(drop=True)
    if result.empty:
        return empty_candidates(crs_obj)
    width = max(5, len(str(len(result))))
    result["candidate_id"] = [f"{id_prefix}{i + 1:0{width}d}" for i in range(len(result))]
    result["hidden"] = np.asarray(is_hidden(result["delta_ndvi_mean"].to_numpy()), dtype=bool)
    result["small"] = np.asarray(is_small(result["area_ha"].to_numpy()), dtype=bool)
    result = result[[*CANDIDATE_COLUMNS, "geometry"]]
    logger.debug("merged %d partial regions into %d candidates", n, len(result))
    return gpd.GeoDataFrame(result, geometry="geometry", crs=crs_obj)


def vectorise_candidates(
    overlap: np.ndarray,
    factors: Mapping[str, np.ndarray],
    transform: Affine,
    crs: Any,
    *,
    min_area_ha: float = 0.0,
    connectivity: int = 8,
    id_prefix: str = "c",
) -> gpd.GeoDataFrame:
    """Candidates of a whole raster: vectorise_tile on one tile, then merge_tile_regions."""
    part = vectorise_tile(overlap, factors, transform, crs, connectivity=connectivity)
    return merge_tile_regions([part], crs, min_area_ha=min_area_ha, id_prefix=id_prefix)


# -- review priority ------------------------------------------------------------------------

#: |velocity| at which the velocity component saturates (Table 2's first threshold).
SCORE_VELOCITY_SATURATION_MM_A = 50.0
#: Seasonal amplitude at which its component saturates (the paper: > 10 mm is FTL-prone).
SCORE_AMPLITUDE_SATURATION_MM = 20.0
#: Area below which a candidate is down-weighted as a sliver.
SCORE_AREA_SATURATION_HA = 1.0
#: Weights of velocity, seasonal amplitude, compactness and size; they sum to 1.
SCORE_WEIGHTS = {"velocity": 0.45, "amplitude": 0.25, "compactness": 0.15, "size": 0.15}


def score_candidates(gdf: pd.DataFrame) -> pd.Series:
    """Review priority in [0, 1]; higher first. Deterministic; a NaN component contributes 0.

    score = 0.45·min(|v̄| / 50 mm/a, 1) + 0.25·min(Ā / 20 mm, 1)
          + 0.15·min(Polsby–Popper / (π/4), 1) + 0.15·min(area / 1 ha, 1)
    with |v̄| the mean |velocity|, Ā the mean seasonal amplitude, and Polsby–Popper
    4π·area/perimeter² (π/4 for a square, the most compact pixel shape), which favours
    compact bodies over thin strips.
    """
    needed = ("velocity_mean_abs_mm_a", "seasonal_amplitude_mean_mm", "area_ha", "perimeter_km")
    missing = [c for c in needed if c not in gdf.columns]
    if missing:
        raise InputError(f"score_candidates needs columns {missing}; pass vectorise output")

    def component(values: pd.Series, saturation: float) -> np.ndarray:
        v = np.abs(values.to_numpy(dtype=np.float64)) / saturation
        return np.nan_to_num(np.clip(v, 0.0, 1.0), nan=0.0)

    area_m2 = gdf["area_ha"].to_numpy(dtype=np.float64) * 1e4
    perim_m = gdf["perimeter_km"].to_numpy(dtype=np.float64) * 1e3
    with np.errstate(invalid="ignore", divide="ignore"):
        polsby = 4.0 * math.pi * area_m2 / perim_m**2
    compact = np.nan_to_num(np.clip(polsby / (math.pi / 4.0), 0.0, 1.0), nan=0.0, posinf=0.0)
    score = (
        SCORE_WEIGHTS["velocity"]
        * component(gdf["velocity_mean_abs_mm_a"], SCORE_VELOCITY_SATURATION_MM_A)
        + SCORE_WEIGHTS["amplitude"]
        * component(gdf["seasonal_amplitude_mean_mm"], SCORE_AMPLITUDE_SATURATION_MM)
        + SCORE_WEIGHTS["compactness"] * compact
        + SCORE_WEIGHTS["size"] * component(gdf["area_ha"], SCORE_AREA_SATURATION_HA)
    )
    return pd.Series(np.clip(score, 0.0, 1.0), index=gdf.index, name="score", dtype="float64")


def flag_known(candidates: gpd.GeoDataFrame, inventory: gpd.GeoDataFrame) -> pd.Series:
    """'overlaps_known': the candidate intersects a known FTL polygon or contains a known point.

    The inventory is reprojected to the candidates' CRS when they differ. A point on a
    candidate's boundary counts as contained.
    """
    flags = np.zeros(len(candidates), dtype=bool)
    if len(candidates) and len(inventory):
        if candidates.crs is None or inventory.crs is None:
            raise InputError(
                "flag_known needs a CRS on both the candidates and the inventory; set one "
                "(GeoDataFrame.set_crs) before flagging"
            )
        inv = inventory if inventory.crs == candidates.crs else inventory.to_crs(candidates.crs)
        inv_geoms = inv.geometry.values[~(inv.geometry.isna() | inv.geometry.is_empty).to_numpy()]
        if len(inv_geoms):
            _, cand_idx = candidates.sindex.query(inv_geoms, predicate="intersects")
            flags[np.unique(cand_idx)] = True
    return pd.Series(flags, index=candidates.index, name="overlaps_known", dtype=bool)
