"""Tests for ftlcloud.science.metrics: Eq. 3–5 and one-to-one object matching."""

from __future__ import annotations

import math

import geopandas as gpd
import pytest
from shapely.geometry import Point, box

from ftlcloud.errors import InputError
from ftlcloud.science.metrics import (
    match_objects,
    verification_rates,
    verification_rates_from_records,
)


def test_paper_rates_14_tp_0_fp_1_fn() -> None:
    r = verification_rates(14, 0, 1)
    assert r.n == 15
    assert round(r.tpr_pct, 1) == 93.3
    assert r.fpr_pct == 0.0
    assert round(r.fnr_pct, 1) == 6.7
    assert r.tpr_pct == pytest.approx(100 * 14 / 15)
    assert r.tpr_pct + r.fpr_pct + r.fnr_pct == pytest.approx(100.0)


def test_rates_from_records_and_errors() -> None:
    records = ["TP"] * 10 + ["tp", " Tp "] + ["FN"] + ["fp", "FP"]
    r = verification_rates_from_records(records)
    assert (r.n_tp, r.n_fp, r.n_fn, r.n) == (12, 2, 1, 15)
    assert r.fpr_pct == pytest.approx(100 * 2 / 15)
    with pytest.raises(InputError, match=r"record 2 has label 'TN'"):
        verification_rates_from_records(["TP", "FN", "TN"])
    with pytest.raises(InputError, match="N = TP \\+ FP \\+ FN is 0"):
        verification_rates_from_records([])
    with pytest.raises(InputError, match="n_fp"):
        verification_rates(1, -1, 0)


def _frame(geoms: list, crs: str = "EPSG:32647") -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(geometry=geoms, crs=crs)


def test_match_objects_intersects_one_to_one() -> None:
    detected = _frame(
        [
            box(0, 0, 10, 10),  # overlaps ref A mostly and ref B slightly
            box(20, 0, 30, 10),  # contains point ref C
            box(50, 50, 60, 60),  # nothing: FP
            box(9, 12, 15, 20),  # touches ref B only along an edge: not a match
        ]
    )
    reference = _frame(
        [
            box(1, 1, 9, 9),  # A
            box(9, 9, 12, 12),  # B: small overlap with detected 0, which A takes
            Point(25, 5),  # C
            box(100, 100, 110, 110),  # D: FN
        ]
    )
    m = match_objects(detected, reference)
    assert (m.n_detected, m.n_reference) == (4, 4)
    assert (m.n_true_positive, m.n_false_positive, m.n_false_negative) == (2, 2, 2)
    assert m.precision == pytest.approx(0.5) and m.recall == pytest.approx(0.5)
    assert m.f1 == pytest.approx(0.5)
    tp = m.table[m.table.status == "TP"].set_index("detected")["reference"].to_dict()
    assert tp == {0: 0, 1: 2}
    assert m.table.loc[m.table.detected == 0, "iou"].item() == pytest.approx(64 / 100)
    assert math.isnan(m.table.loc[m.table.detected == 1, "iou"].item())  # a point match
    assert sorted(m.table[m.table.status == "FN"]["reference"]) == [1, 3]
    assert m.rule == "intersects"


def test_match_objects_iou_rule_and_greedy_order() -> None:
    # two detections compete for one reference: the higher IoU wins
    detected = _frame([box(0, 0, 10, 10), box(2, 0, 12, 10)])
    reference = _frame([box(2, 0, 12, 10), box(0, 0, 1, 1)])
    m = match_objects(detected, reference, rule="iou", min_iou=0.5)
    tp = m.table[m.table.status == "TP"]
    assert tp["detected"].tolist() == [1] and tp["reference"].tolist() == [0]
    assert tp["iou"].item() == pytest.approx(1.0)
    # detected 0 vs reference 1: IoU 0.01 < 0.5, no match
    assert (m.n_true_positive, m.n_false_positive, m.n_false_negative) == (1, 1, 1)
    assert m.rule == "iou>=0.5"
    loose = match_objects(detected, reference, rule="iou", min_iou=0.01)
    assert loose.n_true_positive == 2


def test_match_objects_reprojects_and_handles_empty() -> None:
    detected = _frame([box(500000, 4200000, 500300, 4200300)])
    reference = _frame([Point(500150, 4200150)]).to_crs("EPSG:4326")
    assert match_objects(detected, reference).n_true_positive == 1
    none = match_objects(detected.iloc[:0], reference)
    assert none.n_false_negative == 1 and math.isnan(none.precision) and none.recall == 0.0
    assert math.isnan(none.f1)
    with pytest.raises(InputError, match="rule"):
        match_objects(detected, reference, rule="overlap")  # type: ignore[arg-type]
    # the status column feeds Eq. 3–5 directly
    m = match_objects(detected, _frame([Point(500150, 4200150), Point(0, 0)]))
    rates = verification_rates_from_records(m.table["status"])
    assert (rates.n_tp, rates.n_fp, rates.n_fn) == (1, 0, 1)
