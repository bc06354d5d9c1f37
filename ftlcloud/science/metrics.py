"""Validation metrics: the paper's TPR/FPR/FNR (Eq. 3–5) and object matching against a reference.

Eq. 3–5 divide by N = N_TP + N_FP + N_FN, the number of verified FTL points (TP: identified and
confirmed; FP: identified, not confirmed; FN: confirmed, not identified). The paper's 14 TP, 0 FP,
1 FN give TPR 93.3 %, FPR 0 %, FNR 6.7 %.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from ftlcloud.errors import InputError

logger = logging.getLogger(__name__)

_LABELS = ("TP", "FP", "FN")


@dataclass(frozen=True)
class VerificationRates:
    """Counts and rates (percent) of Eq. 3–5."""

    n_tp: int
    """True positives: identified and confirmed."""
    n_fp: int
    """False positives: identified, not confirmed."""
    n_fn: int
    """False negatives: confirmed, not identified."""
    n: int
    """N = n_tp + n_fp + n_fn."""
    tpr_pct: float
    """Eq. 3: 100·N_TP/N."""
    fpr_pct: float
    """Eq. 4: 100·N_FP/N."""
    fnr_pct: float
    """Eq. 5: 100·N_FN/N."""


def verification_rates(n_tp: int, n_fp: int, n_fn: int) -> VerificationRates:
    """TPR, FPR, FNR in percent with N = N_TP + N_FP + N_FN (Eq. 3–5)."""
    counts = {"n_tp": n_tp, "n_fp": n_fp, "n_fn": n_fn}
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise InputError(f"{name} must be a non-negative integer, got {value!r}")
    n = int(n_tp) + int(n_fp) + int(n_fn)
    if n == 0:
        raise InputError(
            "verification rates need at least one verified FTL (N = TP + FP + FN is 0); "
            "add verification records"
        )
    return VerificationRates(
        n_tp=int(n_tp),
        n_fp=int(n_fp),
        n_fn=int(n_fn),
        n=n,
        tpr_pct=100.0 * int(n_tp) / n,
        fpr_pct=100.0 * int(n_fp) / n,
        fnr_pct=100.0 * int(n_fn) / n,
    )


def verification_rates_from_records(labels: Iterable[str]) -> VerificationRates:
    """Rates from verification labels 'TP'/'FP'/'FN' (case-insensitive, surrounding spaces ok)."""
    counts = dict.fromkeys(_LABELS, 0)
    for position, label in enumerate(labels):
        key = label.strip().upper() if isinstance(label, str) else None
        if key not in counts:
            raise InputError(
                f"verification record {position} has label {label!r}; expected one of "
                f"{', '.join(_LABELS)}"
            )
        counts[key] += 1
    return verification_rates(counts["TP"], counts["FP"], counts["FN"])


@dataclass(frozen=True)
class ObjectMatch:
    """Result of one-to-one matching of detected objects to reference objects."""

    precision: float
    """n_true_positive / n_detected (NaN when nothing was detected)."""
    recall: float
    """n_true_positive / n_reference (NaN when there is no reference)."""
    f1: float
    """Harmonic mean of precision and recall (NaN when either is NaN)."""
    n_detected: int
    n_reference: int
    n_true_positive: int
    n_false_positive: int
    n_false_negative: int
    rule: str
    """'intersects' or 'iou>=<min_iou>'."""
    table: pd.DataFrame = field(default_factory=pd.DataFrame, compare=False, hash=False, repr=False)
    """One row per detected object and per unmatched reference object: columns detected,
    reference (index labels of the input frames, None when unmatched), iou (NaN for point
    matches and unmatched rows), status
    ('TP', 'FP' or 'FN'); status feeds verification_rates_from_records directly."""


def _pair_scores(det: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intersection area and IoU per pair; -1 marks pairs where either side has no area."""
    inter = shapely.area(shapely.intersection(det, ref))
    union = shapely.area(shapely.union(det, ref))
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    areal = (shapely.area(det) > 0) & (shapely.area(ref) > 0)
    return np.where(areal, inter, -1.0), np.where(areal, iou, -1.0)


def match_objects(
    detected: gpd.GeoDataFrame,
    reference: gpd.GeoDataFrame,
    *,
    rule: Literal["intersects", "iou"] = "intersects",
    min_iou: float = 0.1,
) -> ObjectMatch:
    """Match detected to reference objects one-to-one, greedily by overlap.

    Eligible pairs: polygons whose interiors overlap (rule 'intersects': intersection area > 0;
    rule 'iou': IoU >= min_iou); a point (either side) is eligible when it lies in or on the
    other object's polygon, under both rules. Eligible pairs are taken in order of decreasing
    IoU (point pairs count as 1), ties broken by input order, each object at most once.
    The reference is reprojected to the detected CRS when they differ; IoU uses planar areas.
    """
    if rule not in ("intersects", "iou"):
        raise InputError(f"rule must be 'intersects' or 'iou', got {rule!r}")
    if rule == "iou" and not 0.0 < min_iou <= 1.0:
        raise InputError(f"min_iou must be in (0, 1], got {min_iou}")
    if len(detected) and len(reference) and detected.crs != reference.crs:
        if detected.crs is None or reference.crs is None:
            raise InputError(
                "match_objects needs a CRS on both frames (or neither); set one with set_crs"
            )
        reference = reference.to_crs(detected.crs)
    det_geoms = np.asarray(detected.geometry.values, dtype=object)
    ref_geoms = np.asarray(reference.geometry.values, dtype=object)

    pairs_det = np.empty(0, dtype=np.int64)
    pairs_ref = np.empty(0, dtype=np.int64)
    if len(det_geoms) and len(ref_geoms):
        tree = shapely.STRtree(det_geoms)
        pairs_ref, pairs_det = tree.query(ref_geoms, predicate="intersects")
    inter, iou = _pair_scores(det_geoms[pairs_det], ref_geoms[pairs_ref])
    point_pair = iou < 0
    overlapping = inter > 0 if rule == "intersects" else iou >= min_iou
    eligible = point_pair | overlapping
    score = np.where(point_pair, 1.0, iou)
    shown_iou = np.where(point_pair, math.nan, iou)
    pairs_det, pairs_ref = pairs_det[eligible], pairs_ref[eligible]
    score, shown_iou = score[eligible], shown_iou[eligible]
    order = np.lexsort((pairs_ref, pairs_det, -score))

    used_det: dict[int, tuple[int, float]] = {}
    used_ref: set[int] = set()
    for k in order:
        d, r = int(pairs_det[k]), int(pairs_ref[k])
        if d in used_det or r in used_ref:
            continue
        used_det[d] = (r, float(shown_iou[k]))
        used_ref.add(r)

    rows = []
    for d in range(len(det_geoms)):
        if d in used_det:
            r, s = used_det[d]
            rows.append((detected.index[d], reference.index[r], s, "TP"))
        else:
            rows.append((detected.index[d], None, math.nan, "FP"))
    for r in range(len(ref_geoms)):
        if r not in used_ref:
            rows.append((None, reference.index[r], math.nan, "FN"))
    table = pd.DataFrame(rows, columns=["detected", "reference", "iou", "status"])

    n_tp = len(used_det)
    n_det, n_ref = len(det_geoms), len(ref_geoms)
    precision = n_tp / n_det if n_det else math.nan
    recall = n_tp / n_ref if n_ref else math.nan
    if math.isnan(precision) or math.isnan(recall):
        f1 = math.nan
    elif precision + recall == 0:
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return ObjectMatch(
        precision=precision,
        recall=recall,
        f1=f1,
        n_detected=n_det,
        n_reference=n_ref,
        n_true_positive=n_tp,
        n_false_positive=n_det - n_tp,
        n_false_negative=n_ref - n_tp,
        rule="intersects" if rule == "intersects" else f"iou>={min_iou:g}",
        table=table,
    )
