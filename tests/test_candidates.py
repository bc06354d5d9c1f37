"""Tests for ftlcloud.science.candidates: vectorising, tile merging, attributes, score, flags."""

from __future__ import annotations

import math
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from affine import Affine
from pyproj import Geod
from scipy import ndimage
from shapely.geometry import Point, box

from ftlcloud.errors import InputError
from ftlcloud.science.candidates import (
    CANDIDATE_COLUMNS,
    flag_known,
    merge_tile_regions,
    score_candidates,
    vectorise_candidates,
    vectorise_tile,
)
from ftlcloud.science.terrain import FLAT_ASPECT

UTM = "EPSG:32647"
T_UTM = Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 4200000.0)


def _random_scene(seed: int, shape: tuple[int, int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) < 0.45
    factors = {
        "velocity_mm_a": rng.normal(0, 40, shape),
        "seasonal_amplitude_mm": rng.uniform(0, 30, shape),
        "slope_deg": rng.uniform(0, 45, shape),
        "elevation_m": rng.uniform(3500, 4500, shape),
        "delta_ndvi": rng.normal(-0.05, 0.2, shape),
        "aspect_deg": rng.uniform(0, 360, shape),
    }
    factors["aspect_deg"][rng.random(shape) < 0.1] = FLAT_ASPECT
    factors["delta_ndvi"][rng.random(shape) < 0.2] = np.nan
    factors["seasonal_amplitude_mm"][rng.random(shape) < 0.1] = np.nan
    return mask, factors


def _tiled(
    mask: np.ndarray,
    factors: dict[str, np.ndarray],
    transform: Affine,
    crs: str,
    tile_hw: tuple[int, int],
    connectivity: int = 8,
    parts_only: bool = False,
    **kwargs: object,
) -> Any:
    th, tw = tile_hw
    parts = []
    for r in range(0, mask.shape[0], th):
        for c in range(0, mask.shape[1], tw):
            sl = (slice(r, r + th), slice(c, c + tw))
            parts.append(
                vectorise_tile(
                    mask[sl],
                    {k: v[sl] for k, v in factors.items()},
                    transform @ Affine.translation(c, r),
                    crs,
                    connectivity=connectivity,
                )
            )
    if parts_only:
        return parts
    return merge_tile_regions(parts, crs, **kwargs)  # type: ignore[arg-type]


def _assert_same(whole: gpd.GeoDataFrame, tiled: gpd.GeoDataFrame) -> None:
    assert list(tiled.columns) == [*CANDIDATE_COLUMNS, "geometry"]
    assert tiled.crs == whole.crs
    assert tiled["candidate_id"].tolist() == whole["candidate_id"].tolist()
    numeric = [c for c in CANDIDATE_COLUMNS if c != "candidate_id"]
    pd.testing.assert_frame_equal(
        pd.DataFrame(tiled[numeric]), pd.DataFrame(whole[numeric]), rtol=1e-9, atol=1e-9
    )
    for a, b in zip(whole.geometry, tiled.geometry, strict=True):
        assert a.equals(b)
        assert a.equals_exact(b, tolerance=1e-6)  # same vertices, same order


def _boundary_edges(labels: np.ndarray, k: int) -> int:
    """Independent perimeter: count pixel edges between region k and anything else."""
    inside = np.pad(labels == k, 1)
    return int(
        np.count_nonzero(inside[1:, :] != inside[:-1, :])
        + np.count_nonzero(inside[:, 1:] != inside[:, :-1])
    )


@pytest.mark.parametrize("connectivity", [8, 4])
def test_tiled_equals_whole_on_random_raster(connectivity: int) -> None:
    mask, factors = _random_scene(42, (31, 38))
    whole = vectorise_candidates(mask, factors, T_UTM, UTM, connectivity=connectivity)
    structure = np.ones((3, 3)) if connectivity == 8 else None
    labels, n = ndimage.label(mask, structure=structure)
    assert len(whole) == n > 10
    tiled = _tiled(mask, factors, T_UTM, UTM, (5, 7), connectivity=connectivity)
    _assert_same(whole, tiled)
    # tasks finish in any order: shuffled parts give the identical frame
    parts = _tiled(mask, factors, T_UTM, UTM, (5, 7), connectivity=connectivity, parts_only=True)
    shuffled = [parts[i] for i in np.random.default_rng(5).permutation(len(parts))]
    again = merge_tile_regions(shuffled, UTM)
    pd.testing.assert_frame_equal(pd.DataFrame(again), pd.DataFrame(tiled), check_exact=True)
    assert whole.geometry.is_valid.all()
    # independent truths per region, matched by the region's first pixel (row-major)
    first = ndimage.labeled_comprehension(
        np.arange(mask.size).reshape(mask.shape), labels, np.arange(1, n + 1), np.min, int, -1
    )
    order = np.argsort(first)  # ids follow first-pixel order
    for rank, k in enumerate(order + 1):
        row = whole.iloc[rank]
        sel = labels == k
        assert row["n_pixels"] == sel.sum()
        assert row["area_ha"] == pytest.approx(sel.sum() * 900 / 1e4)
        assert row["perimeter_km"] == pytest.approx(_boundary_edges(labels, k) * 30 / 1e3)
        v = np.abs(factors["velocity_mm_a"][sel])
        assert row["velocity_mean_abs_mm_a"] == pytest.approx(v.mean())
        assert row["velocity_max_abs_mm_a"] == pytest.approx(v.max())
        amp = factors["seasonal_amplitude_mm"][sel]
        if np.isfinite(amp).any():
            assert row["seasonal_amplitude_mean_mm"] == pytest.approx(np.nanmean(amp))
        assert row["elevation_mean_m"] == pytest.approx(factors["elevation_m"][sel].mean())
        asp = factors["aspect_deg"][sel]
        asp = np.deg2rad(asp[asp != FLAT_ASPECT])
        if asp.size:
            ref = math.degrees(math.atan2(np.sin(asp).sum(), np.cos(asp).sum())) % 360
            assert row["aspect_circmean_deg"] == pytest.approx(ref)


def test_region_across_edges_and_diagonal_corner_is_one_candidate() -> None:
    # tiles of 5x7 px: tile edges at row 5 and column 7
    mask = np.zeros((10, 14), dtype=bool)
    mask[2:8, 5:9] = True  # 24 px crossing both tile edges
    mask[8, 9] = True  # diagonal neighbour of (7, 8), in the next tile
    mask[9, 10] = True  # diagonal neighbour of (8, 9)
    mask[4, 0] = True  # separate
    mask[0, 13] = True  # separate
    factors = {"velocity_mm_a": np.full(mask.shape, -20.0), "aspect_deg": np.full(mask.shape, 90.0)}
    for conn, expected_n in ((8, 3), (4, 5)):
        whole = vectorise_candidates(mask, factors, T_UTM, UTM, connectivity=conn)
        tiled = _tiled(mask, factors, T_UTM, UTM, (5, 7), connectivity=conn)
        assert len(whole) == expected_n
        _assert_same(whole, tiled)
    whole8 = vectorise_candidates(mask, factors, T_UTM, UTM)
    big = whole8.loc[whole8["n_pixels"].idxmax()]
    assert big["n_pixels"] == 24 + 2
    assert big.geometry.geom_type == "MultiPolygon" and len(big.geometry.geoms) == 3
    assert big["velocity_mean_abs_mm_a"] == pytest.approx(20.0)
    assert big["aspect_circmean_deg"] == pytest.approx(90.0)


def test_corner_only_touch_at_a_tile_corner() -> None:
    # a 4x4 grid cut into 2x2 tiles; pixels (1, 1) and (2, 2) meet only at the shared tile corner
    mask = np.zeros((4, 4), dtype=bool)
    mask[1, 1] = mask[2, 2] = True
    factors: dict[str, np.ndarray] = {}
    eight = _tiled(mask, factors, T_UTM, UTM, (2, 2), connectivity=8)
    four = _tiled(mask, factors, T_UTM, UTM, (2, 2), connectivity=4)
    assert len(eight) == 1 and eight.iloc[0]["n_pixels"] == 2
    assert len(four) == 2
    _assert_same(vectorise_candidates(mask, factors, T_UTM, UTM), eight)
    _assert_same(vectorise_candidates(mask, factors, T_UTM, UTM, connectivity=4), four)


def test_rectangle_area_perimeter_and_attributes_analytic() -> None:
    mask = np.zeros((6, 8), dtype=bool)
    mask[1:4, 2:6] = True  # 3 rows x 4 cols of 30 m pixels: 120 m x 90 m
    vel = np.full(mask.shape, np.nan)
    vel[1:4, 2:6] = np.array([-10.0, 20.0, -30.0, 40.0])
    aspect = np.full(mask.shape, 350.0)
    aspect[1:4, 3] = 10.0
    aspect[1:4, 4:6] = FLAT_ASPECT  # ignored: the mean of 350 and 10 is north
    factors = {
        "velocity_mm_a": vel,
        "aspect_deg": aspect,
        "delta_ndvi": np.full(mask.shape, -0.05),
        "slope_deg": np.full(mask.shape, 12.0),
    }
    out = vectorise_candidates(mask, factors, T_UTM, UTM, id_prefix="k1-")
    assert len(out) == 1
    c = out.iloc[0]
    assert c["candidate_id"] == "k1-00001"
    assert c["area_ha"] == pytest.approx(120 * 90 / 1e4)
    assert c["perimeter_km"] == pytest.approx(2 * (120 + 90) / 1e3)
    assert c["n_pixels"] == 12
    assert c["velocity_mean_abs_mm_a"] == pytest.approx(25.0)
    assert c["velocity_max_abs_mm_a"] == pytest.approx(40.0)
    assert min(c["aspect_circmean_deg"], 360 - c["aspect_circmean_deg"]) == pytest.approx(
        0.0, abs=1e-9
    )
    assert c["slope_mean_deg"] == pytest.approx(12.0)
    assert math.isnan(c["seasonal_amplitude_mean_mm"])  # factor absent
    assert bool(c["hidden"]) is True  # ΔNDVI -0.05 > -0.1
    assert bool(c["small"]) is True  # 1.08 ha < 10 ha
    assert c.geometry.equals(box(500060, 4200000 - 120, 500180, 4200000 - 30))
    assert (c["centroid_x"], c["centroid_y"]) == pytest.approx((500120.0, 4199925.0))


def test_hole_is_excluded_from_area() -> None:
    mask = np.ones((5, 5), dtype=bool)
    mask[2, 2] = False
    out = vectorise_candidates(mask, {}, T_UTM, UTM)
    geom = out.geometry.iloc[0]
    assert geom.is_valid and len(geom.interiors) == 1
    assert out["area_ha"].iloc[0] == pytest.approx(24 * 0.09)
    assert out["perimeter_km"].iloc[0] == pytest.approx((20 + 4) * 0.03)
    tiled = _tiled(mask, {}, T_UTM, UTM, (2, 3))
    _assert_same(out, tiled)


def test_geographic_area_and_perimeter_match_pyproj_geod() -> None:
    res = 0.001
    t = Affine(res, 0.0, 100.0, 0.0, -res, 38.5)
    mask = np.zeros((12, 15), dtype=bool)
    mask[2:9, 3:13] = True  # 7 rows x 10 cols
    out = vectorise_candidates(mask, {}, t, "EPSG:4326")
    lon0, lon1 = 100.0 + 3 * res, 100.0 + 13 * res
    lat0, lat1 = 38.5 - 9 * res, 38.5 - 2 * res
    # densify the edges so the independent Geod polygon follows the same vertices as the raster
    lons = [lon0, *np.linspace(lon0, lon1, 11)[1:], lon1, *np.linspace(lon1, lon0, 11)[1:]]
    lats = [lat0, *[lat0] * 10, lat1, *[lat1] * 10]
    ring_lons = [lon0, lon1, lon1, lon0]
    ring_lats = [lat0, lat0, lat1, lat1]
    area, perim = Geod(ellps="WGS84").polygon_area_perimeter(ring_lons, ring_lats)
    assert len(lons) == len(lats)
    assert out["area_ha"].iloc[0] == pytest.approx(abs(area) / 1e4, rel=1e-9)
    assert out["perimeter_km"].iloc[0] == pytest.approx(perim / 1e3, rel=1e-9)
    # sanity against a spherical-rectangle estimate (~ 880 m x 777 m)
    approx_m2 = (10 * res * 111320 * math.cos(math.radians(38.4945))) * (7 * res * 110990)
    assert out["area_ha"].iloc[0] == pytest.approx(approx_m2 / 1e4, rel=5e-3)
    tiled = _tiled(mask, {}, t, "EPSG:4326", (5, 7))
    _assert_same(out, tiled)


def test_min_area_filter_and_contiguous_ids() -> None:
    mask = np.zeros((8, 8), dtype=bool)
    mask[0, 0] = True  # 0.09 ha
    mask[3:7, 3:7] = True  # 1.44 ha
    mask[0, 6:8] = True  # 0.18 ha
    out = vectorise_candidates(mask, {}, T_UTM, UTM, min_area_ha=0.1)
    assert out["n_pixels"].tolist() == [2, 16]
    assert out["candidate_id"].tolist() == ["c00001", "c00002"]
    none = vectorise_candidates(mask, {}, T_UTM, UTM, min_area_ha=5.0)
    assert none.empty and list(none.columns) == [*CANDIDATE_COLUMNS, "geometry"]


def test_empty_mask_gives_empty_frame_with_columns_and_crs() -> None:
    mask = np.zeros((6, 6), dtype=bool)
    out = vectorise_candidates(mask, {"velocity_mm_a": np.zeros((6, 6))}, T_UTM, UTM)
    assert out.empty
    assert list(out.columns) == [*CANDIDATE_COLUMNS, "geometry"]
    assert out.crs == UTM
    assert out["hidden"].dtype == bool and out["n_pixels"].dtype == np.int64
    assert merge_tile_regions([], UTM).crs == UTM


def test_input_errors() -> None:
    mask = np.ones((4, 4), dtype=bool)
    with pytest.raises(InputError, match="'slope_deg' has shape"):
        vectorise_candidates(mask, {"slope_deg": np.zeros((3, 4))}, T_UTM, UTM)
    with pytest.raises(InputError, match="connectivity"):
        vectorise_candidates(mask, {}, T_UTM, UTM, connectivity=6)
    with pytest.raises(InputError, match="CRS"):
        vectorise_candidates(mask, {}, T_UTM, None)
    a = vectorise_tile(mask, {}, T_UTM, UTM)
    overlapping = vectorise_tile(mask, {}, T_UTM @ Affine.translation(2, 0), UTM)
    with pytest.raises(InputError, match="tiles overlap"):
        merge_tile_regions([a, overlapping], UTM)
    off_grid = vectorise_tile(mask, {}, T_UTM @ Affine.translation(4.5, 0), UTM)
    with pytest.raises(InputError, match="off the common pixel grid"):
        merge_tile_regions([a, off_grid], UTM)
    other_res = vectorise_tile(mask, {}, Affine(10, 0, 500120, 0, -10, 4200000), UTM)
    with pytest.raises(InputError, match="pixel sizes"):
        merge_tile_regions([a, other_res], UTM)


def test_score_is_bounded_monotone_and_nan_safe() -> None:
    frame = pd.DataFrame(
        {
            "velocity_mean_abs_mm_a": [10.0, 40.0, 80.0, np.nan, 40.0],
            "seasonal_amplitude_mean_mm": [5.0, 5.0, 30.0, np.nan, 5.0],
            "area_ha": [2.0, 2.0, 2.0, 0.09, 2.0],
            "perimeter_km": [0.6, 0.6, 0.6, 0.12, 3.0],
        }
    )
    s = score_candidates(frame)
    assert s.name == "score" and s.between(0, 1).all() and s.notna().all()
    assert s[1] > s[0]  # faster
    assert s[1] > s[4]  # same but less compact
    # row 2: velocity and amplitude saturate
    pp = 4 * math.pi * 2e4 / 600.0**2 / (math.pi / 4)
    assert s[2] == pytest.approx(0.45 + 0.25 + 0.15 * min(pp, 1.0) + 0.15)
    # row 3: one 30 m pixel, NaN velocity/amplitude contribute 0: compactness 1, size 0.09
    assert s[3] == pytest.approx(0.15 * 1.0 + 0.15 * 0.09)
    pd.testing.assert_series_equal(s, score_candidates(frame))
    with pytest.raises(InputError, match="perimeter_km"):
        score_candidates(frame.drop(columns="perimeter_km"))


def test_flag_known_polygons_points_and_reprojection() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[1:3, 1:3] = True
    mask[6:9, 6:9] = True
    mask[1, 8] = True
    cands = vectorise_candidates(mask, {}, T_UTM, UTM)
    assert len(cands) == 3  # first pixels: (1,1), (1,8), (6,6)
    x0, y0 = 500000.0, 4200000.0
    inventory = gpd.GeoDataFrame(
        geometry=[
            Point(x0 + 7.5 * 30, y0 - 7.5 * 30),  # inside the (6,6) block
            box(x0 + 60, y0 - 60, x0 + 90, y0 - 30),  # overlaps the (1,1) block's edge column
            Point(x0 + 5 * 30, y0 - 5 * 30),  # in none
        ],
        crs=UTM,
    )
    flags = flag_known(cands, inventory)
    assert flags.name == "overlaps_known"
    assert flags.tolist() == [True, False, True]
    assert flag_known(cands, inventory.to_crs("EPSG:4326")).tolist() == [True, False, True]
    assert flag_known(cands, inventory.iloc[:0]).tolist() == [False, False, False]
    assert shapely.is_valid(cands.geometry.values).all()
