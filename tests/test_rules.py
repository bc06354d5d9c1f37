"""Tests for ftlcloud.science.rules: Table 2, derived thresholds, JSON round trips, parse_rules."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftlcloud.errors import ConfigError, InputError
from ftlcloud.science import rules
from ftlcloud.science.rules import (
    STABLE_BAND_MM_A,
    TABLE2,
    VELOCITY_SCHEDULE_MM_A,
    Range,
    Thresholds,
    derive_thresholds,
    parse_rules,
    table2_thresholds,
)
from ftlcloud.science.terrain import FLAT_ASPECT


def test_table2_matches_the_paper() -> None:
    # Wei et al. (2025), Table 2, typed from the paper row by row
    expected = [
        (3600, 4000, 1, 30, [(0, 315)], 50),
        (3600, 4100, 1, 35, [(0, 315)], 40),
        (3600, 4200, 1, 35, [(0, 315)], 30),
        (3600, 4300, 1, 35, [(0, 315)], 20),
        (3600, 4400, 1, 40, [(0, 112.5), (135, 360)], 10),
    ]
    assert len(TABLE2) == 5
    for k, (t, (e0, e1, s0, s1, asp, v)) in enumerate(zip(TABLE2, expected, strict=True), 1):
        assert t.iteration == k
        assert (t.elevation_m.low, t.elevation_m.high) == (e0, e1)
        assert (t.slope_deg.low, t.slope_deg.high) == (s0, s1)
        assert [(r.low, r.high) for r in t.aspect_deg] == asp
        assert t.velocity_abs_min_mm_a == v
        assert t.source == "table2"
        assert table2_thresholds(k) is t
    assert TABLE2[4].aspect_label == "0–112.5 & 135–360"
    assert TABLE2[0].aspect_label == "0–315"
    assert VELOCITY_SCHEDULE_MM_A == (50.0, 40.0, 30.0, 20.0, 10.0)
    assert STABLE_BAND_MM_A == 10.0


def test_table2_out_of_range_iteration() -> None:
    with pytest.raises(ConfigError, match="iterations 1–5"):
        table2_thresholds(6)
    with pytest.raises(ConfigError):
        table2_thresholds(0)


def test_range_validation_and_contains() -> None:
    with pytest.raises(ConfigError, match="low must be <= high"):
        Range(5.0, 1.0)
    with pytest.raises(ConfigError, match="finite"):
        Range(0.0, math.inf)
    r = Range(1.0, 30.0)
    got = r.contains(np.array([0.99, 1.0, 15.0, 30.0, 30.01, np.nan]))
    assert got.tolist() == [False, True, True, True, False, False]
    assert r.label == "1–30"


def test_aspect_union_excludes_flat_cells() -> None:
    t = TABLE2[4]
    values = np.array([FLAT_ASPECT, 0.0, 112.5, 120.0, 135.0, 359.9, 360.0, np.nan])
    assert t.aspect_contains(values).tolist() == [False, True, True, False, True, True, True, False]


def test_thresholds_validation_names_the_field() -> None:
    good = TABLE2[0].to_dict()
    for field_name, bad_value, pattern in [
        ("aspect_deg", [[300.0, 400.0]], "aspect_deg"),
        ("slope_deg", [5.0, 1.0], "slope_deg"),
        ("slope_deg", [0.0, 95.0], "slope_deg"),
        ("velocity_abs_min_mm_a", -1.0, "velocity_abs_min_mm_a"),
        ("iteration", 0, "iteration"),
        ("source", "guess", "source"),
        ("elevation_m", "high", "elevation_m"),
    ]:
        d = dict(good)
        d[field_name] = bad_value
        with pytest.raises(ConfigError, match=pattern):
            Thresholds.from_dict(d)
    d = dict(good)
    del d["slope_deg"]
    with pytest.raises(ConfigError, match="missing field 'slope_deg'"):
        Thresholds.from_dict(d)
    with pytest.raises(ConfigError, match="unknown field"):
        Thresholds.from_dict({**good, "slop_deg": [1, 2]})
    with pytest.raises(ConfigError, match="malformed"):
        Thresholds.from_json("{not json")


def test_json_round_trip_of_table2_and_derived() -> None:
    for t in TABLE2:
        again = Thresholds.from_json(t.to_json())
        assert again == t
        assert again.details == t.details
    rng = np.random.default_rng(3)
    samples = {
        "elevation_m": rng.uniform(3650, 3990, 500),
        "slope_deg": rng.uniform(3, 28, 500),
        "aspect_deg": rng.uniform(0, 360, 500),
    }
    derived = derive_thresholds(samples, 2)
    again = Thresholds.from_json(derived.to_json())
    assert again == derived
    assert again.details == json.loads(json.dumps(derived.to_dict()))["details"]


_range = st.tuples(
    st.floats(-1e4, 1e4, allow_nan=False), st.floats(-1e4, 1e4, allow_nan=False)
).map(lambda p: Range(min(p), max(p)))
_slope = st.tuples(st.floats(0, 90), st.floats(0, 90)).map(lambda p: Range(min(p), max(p)))
_aspect = st.tuples(st.floats(0, 360), st.floats(0, 360)).map(lambda p: Range(min(p), max(p)))
_thresholds = st.builds(
    Thresholds,
    iteration=st.integers(1, 50),
    elevation_m=_range,
    slope_deg=_slope,
    aspect_deg=st.lists(_aspect, min_size=1, max_size=4).map(tuple),
    velocity_abs_min_mm_a=st.floats(0, 500),
    source=st.sampled_from(rules.SOURCES),
    details=st.dictionaries(
        st.text(max_size=5),
        st.one_of(st.integers(-5, 5), st.floats(-1, 1), st.text(max_size=5)),
        max_size=3,
    ),
)


@given(_thresholds)
@settings(max_examples=150, deadline=None)
def test_property_dict_and_json_round_trip(t: Thresholds) -> None:
    assert Thresholds.from_dict(t.to_dict()) == t
    assert Thresholds.from_json(t.to_json()) == t
    assert Thresholds.from_dict(t.to_dict()).to_dict() == t.to_dict()


def test_derive_rounds_outward_to_steps() -> None:
    # elevations 3612..3987 evenly: 5th/95th percentiles ~3631/3968 -> 3600..4000
    elevation = np.linspace(3612.0, 3987.0, 200)
    slope = np.linspace(2.2, 31.0, 200)
    p5, p95 = np.percentile(slope, [5, 95])
    t = derive_thresholds(
        {"elevation_m": elevation, "slope_deg": slope, "aspect_deg": np.linspace(0, 359, 200)}, 1
    )
    assert (t.elevation_m.low, t.elevation_m.high) == (3600.0, 4000.0)
    assert t.slope_deg.low == math.floor(p5 / 5) * 5
    assert t.slope_deg.high == math.ceil(p95 / 5) * 5
    assert t.slope_deg.low <= p5 and t.slope_deg.high >= p95
    assert t.velocity_abs_min_mm_a == 50.0
    assert t.source == "derived"
    assert t.aspect_label == "0–360"  # uniform aspect: no sector is sparse
    assert t.details["n_samples"]["elevation_m"] == 200


def test_derive_aspect_reproduces_table2_iteration5_shape() -> None:
    # every 22.5° sector populated except 112.5–135; flat cells and NaN must be ignored
    rng = np.random.default_rng(7)
    sectors = [i for i in range(16) if i != 5]
    aspect = np.concatenate([rng.uniform(i * 22.5, (i + 1) * 22.5 - 1e-6, 20) for i in sectors])
    aspect = np.concatenate([aspect, np.full(50, FLAT_ASPECT), np.full(5, np.nan)])
    n = aspect.size
    samples = {
        "elevation_m": rng.uniform(3600, 4400, n),
        "slope_deg": rng.uniform(1, 40, n),
        "aspect_deg": aspect,
    }
    t = derive_thresholds(samples, 5)
    assert t.aspect_label == "0–112.5 & 135–360"
    assert t.details["dropped_aspect_sectors"] == [[112.5, 135.0]]
    assert t.details["n_samples"]["aspect_deg"] == 15 * 20
    assert t.velocity_abs_min_mm_a == 10.0


def test_derive_drops_sparse_sectors_and_handles_north_wrap() -> None:
    # samples on both sides of north only: kept 0–45 and 315–360 remain two ranges in [0, 360]
    rng = np.random.default_rng(1)
    aspect = np.concatenate(
        [rng.uniform(0, 45 - 1e-6, 100), rng.uniform(315, 360 - 1e-6, 100), [200.0]]
    )
    samples = {"elevation_m": np.full(201, 3700.0), "slope_deg": np.full(201, 12.0)}
    t = derive_thresholds({**samples, "aspect_deg": aspect}, 7, min_sector_share=0.02)
    assert t.aspect_label == "0–45 & 315–360"
    assert t.velocity_abs_min_mm_a == 10.0  # past the schedule: the last value
    assert 200.0 not in [x for r in t.aspect_deg for x in (r.low, r.high)]
    assert not t.aspect_contains(np.array([200.0]))[0]
    t2 = derive_thresholds({**samples, "aspect_deg": aspect}, 1, velocity_abs_min_mm_a=33.0)
    assert t2.velocity_abs_min_mm_a == 33.0


def test_derive_too_few_samples_suggests_table2() -> None:
    samples = {
        "elevation_m": np.full(10, 3700.0),
        "slope_deg": np.full(100, 10.0),
        "aspect_deg": np.full(100, 10.0),
    }
    with pytest.raises(InputError, match=r"at least 30 valid 'elevation_m'.*got 10.*table2"):
        derive_thresholds(samples, 1)
    with pytest.raises(InputError, match="'slope_deg'"):
        derive_thresholds({"elevation_m": np.full(50, 1.0), "aspect_deg": np.ones(50)}, 1)
    flat = {**samples, "elevation_m": np.full(100, 3700.0), "aspect_deg": np.full(100, FLAT_ASPECT)}
    with pytest.raises(InputError, match=r"'aspect_deg'.*got 0"):
        derive_thresholds(flat, 1)


def test_parse_rules_modes(tmp_path) -> None:
    assert parse_rules("table2").thresholds_for(3) == TABLE2[2]
    assert parse_rules("table2")(4) == TABLE2[3]
    assert parse_rules("TABLE2").max_iteration == 5
    derived = parse_rules("derived", derive_options={"percentiles": (10.0, 90.0)})
    samples = {
        "elevation_m": np.linspace(3600, 4000, 100),
        "slope_deg": np.linspace(1, 30, 100),
        "aspect_deg": np.linspace(0, 359, 100),
    }
    t = derived.thresholds_for(2, samples)
    assert t.source == "derived" and t.details["percentiles"] == [10.0, 90.0]
    with pytest.raises(InputError, match="samples"):
        derived.thresholds_for(2)

    schedule = [
        TABLE2[4].to_dict() | {"iteration": 2},
        {**TABLE2[0].to_dict(), "source": "explicit"},
    ]
    del schedule[1]["details"]
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(schedule))
    from_file = parse_rules(path)
    assert from_file.mode == "explicit" and from_file.max_iteration == 2
    assert from_file.thresholds_for(2).aspect_label == "0–112.5 & 135–360"
    assert from_file.thresholds_for(1).velocity_abs_min_mm_a == 50.0
    assert parse_rules(str(path)) == from_file
    assert parse_rules(json.dumps({"schedule": schedule})).schedule == from_file.schedule
    with pytest.raises(ConfigError, match="not 3"):
        from_file.thresholds_for(3)
    with pytest.raises(ConfigError, match="not 'table2', 'derived'"):
        parse_rules(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="entry 0"):
        parse_rules([{"iteration": 1}])
    with pytest.raises(ConfigError, match="repeats"):
        parse_rules([TABLE2[0], TABLE2[0]])
