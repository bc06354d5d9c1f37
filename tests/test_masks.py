"""Tests for ftlcloud.science.masks: one bit per factor, the overlap, NaN and flat cells."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ftlcloud.errors import InputError
from ftlcloud.science.masks import (
    FACTOR_BITS,
    MaskBit,
    compute_masks,
    mask_pixel_counts,
    overlap,
)
from ftlcloud.science.rules import TABLE2, Range, Thresholds
from ftlcloud.science.terrain import FLAT_ASPECT


def _factors(**overrides: list[float]) -> dict[str, np.ndarray]:
    base = {
        "elevation_m": [3800.0],
        "slope_deg": [20.0],
        "aspect_deg": [200.0],
        "velocity_mm_a": [-60.0],
    }
    base.update(overrides)
    n = max(len(v) for v in base.values())
    return {
        k: np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)).reshape(1, n).copy()
        for k, v in base.items()
    }


def test_each_bit_against_table2_iteration5() -> None:
    t = TABLE2[4]  # 3600–4400 m, 1–40°, 0–112.5 & 135–360°, |v| >= 10
    f = _factors(
        elevation_m=[3600.0, 4400.0, 3599.9, 4400.1, np.nan, 4000.0, 4000.0, 4000.0],
        slope_deg=[1.0, 40.0, 20.0, 20.0, 20.0, 0.5, np.nan, 20.0],
        aspect_deg=[0.0, 360.0, 120.0, FLAT_ASPECT, 135.0, 112.5, 50.0, np.nan],
        velocity_mm_a=[10.0, -10.0, 9.99, -50.0, np.nan, 11.0, -11.0, 100.0],
    )
    bits = compute_masks(f, t)
    assert bits.dtype == np.uint8 and bits.shape == (1, 8)
    e, s, a, v, o = (int(b) for b in MaskBit)
    expected = [
        e | s | a | v | o,  # every bound is inclusive
        e | s | a | v | o,
        s,  # elevation just below, aspect in the dropped sector, |v| just below
        s | v,  # elevation just above, flat aspect; |v| 50 passes
        s | a,  # NaN elevation and velocity set nothing
        e | a | v,  # slope 0.5 below 1
        e | a | v,  # NaN slope
        e | s | v,  # NaN aspect
    ]
    assert bits[0].tolist() == expected
    assert overlap(bits)[0].tolist() == [True, True] + [False] * 6


def test_flat_cells_never_pass_aspect_even_with_a_full_circle() -> None:
    t = Thresholds(1, Range(0, 9000), Range(0, 90), (Range(0.0, 360.0),), 0.0)
    bits = compute_masks(_factors(aspect_deg=[FLAT_ASPECT, 0.0, 180.0]), t)
    assert [bool(b & MaskBit.ASPECT) for b in bits[0]] == [False, True, True]


def test_tilewise_equals_whole_raster() -> None:
    rng = np.random.default_rng(11)
    shape = (37, 29)
    f = {
        "elevation_m": rng.uniform(3400, 4600, shape),
        "slope_deg": rng.uniform(0, 50, shape),
        "aspect_deg": np.where(rng.random(shape) < 0.1, FLAT_ASPECT, rng.uniform(0, 360, shape)),
        "velocity_mm_a": rng.normal(0, 30, shape),
    }
    f["velocity_mm_a"][rng.random(shape) < 0.1] = np.nan
    t = TABLE2[4]
    whole = compute_masks(f, t)
    assert overlap(whole).any() and not overlap(whole).all()
    tiled = np.zeros_like(whole)
    for r in range(0, shape[0], 5):
        for c in range(0, shape[1], 7):
            sl = (slice(r, r + 5), slice(c, c + 7))
            tiled[sl] = compute_masks({k: v[sl] for k, v in f.items()}, t)
    np.testing.assert_array_equal(tiled, whole)


def test_missing_factor_and_shape_mismatch() -> None:
    f = _factors()
    del f["slope_deg"]
    with pytest.raises(InputError, match="'slope_deg'"):
        compute_masks(f, TABLE2[0])
    f = _factors()
    f["velocity_mm_a"] = np.zeros((2, 2))
    with pytest.raises(InputError, match="one grid"):
        compute_masks(f, TABLE2[0])
    f = _factors()
    f["elevation_m"] = np.zeros(3)
    with pytest.raises(InputError, match="2-D"):
        compute_masks(f, TABLE2[0])


def test_mask_pixel_counts() -> None:
    bits = np.array([[31, 1], [8, 0]], dtype=np.uint8)
    counts = mask_pixel_counts(bits)
    assert counts == {"elevation": 2, "slope": 1, "aspect": 1, "velocity": 2, "overlap": 1}


_values = st.one_of(
    st.floats(-500, 5000, allow_nan=False),
    st.just(np.nan),
    st.just(FLAT_ASPECT),
    st.sampled_from([0.0, 1.0, 10.0, 40.0, 112.5, 135.0, 315.0, 360.0, 3600.0, 4400.0]),
)
_arrays = hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=_values)


@given(
    arrays=st.tuples(_arrays, _arrays, _arrays, _arrays),
    iteration=st.integers(1, 5),
)
@settings(max_examples=200, deadline=None)
def test_property_bit_set_iff_condition_holds(
    arrays: tuple[np.ndarray, ...], iteration: int
) -> None:
    shape = arrays[0].shape
    elev, slope, aspect, vel = (np.resize(a, shape) for a in arrays)
    t = TABLE2[iteration - 1]
    bits = compute_masks(
        {"elevation_m": elev, "slope_deg": slope, "aspect_deg": aspect, "velocity_mm_a": vel}, t
    )
    for idx in np.ndindex(shape):
        e_ok = t.elevation_m.low <= elev[idx] <= t.elevation_m.high
        s_ok = t.slope_deg.low <= slope[idx] <= t.slope_deg.high
        a_ok = any(r.low <= aspect[idx] <= r.high for r in t.aspect_deg)
        v_ok = abs(vel[idx]) >= t.velocity_abs_min_mm_a
        b = int(bits[idx])
        assert bool(b & MaskBit.ELEVATION) == e_ok
        assert bool(b & MaskBit.SLOPE) == s_ok
        assert bool(b & MaskBit.ASPECT) == a_ok
        assert bool(b & MaskBit.VELOCITY) == v_ok
        assert bool(b & MaskBit.OVERLAP) == (e_ok and s_ok and a_ok and v_ok)
        assert (b & FACTOR_BITS == FACTOR_BITS) == bool(overlap(bits)[idx])
        if aspect[idx] == FLAT_ASPECT:
            assert not b & MaskBit.ASPECT
