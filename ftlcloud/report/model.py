"""Inputs of the report: small frozen dataclasses, validated at construction.

The pipeline fills these from the store; the report module turns them into bytes and never reads
the store itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
from affine import Affine

from ftlcloud.errors import InputError

#: Columns every non-empty FTL inventory must carry (the attributes plotted in Fig. 4 and Fig. 7).
FTL_COLUMNS: tuple[str, ...] = (
    "area_ha",
    "perimeter_km",
    "aspect_circmean_deg",
    "elevation_mean_m",
    "slope_mean_deg",
    "delta_ndvi_mean",
    "velocity_mean_abs_mm_a",
    "seasonal_amplitude_mean_mm",
    "iteration",
    "hidden",
    "small",
)

#: Columns every non-empty candidate table must carry.
CANDIDATE_COLUMNS: tuple[str, ...] = ("iteration", "accepted")

#: Keys of IterationSummary.thresholds shown in Table 2, in column order.
THRESHOLD_KEYS: tuple[str, ...] = ("elevation", "slope", "aspect", "velocity")


@dataclass(frozen=True)
class IterationSummary:
    """What one iteration did: its thresholds and its counts (one row of Table 2)."""

    iteration: int
    """Iteration number, 1-based as in the paper's Table 2."""
    thresholds: Mapping[str, str]
    """Display labels per factor: ``elevation`` "3600–4000", ``slope`` "1–30",
    ``aspect`` "0–315", ``velocity`` "≥ 50" (units are in the table header)."""
    n_candidates: int
    """Candidate regions offered to the reviewer."""
    n_accepted: int
    """Candidates the reviewer accepted."""
    n_rejected: int
    """Candidates the reviewer rejected."""
    n_new_ftls: int
    """FTLs added to the inventory by this iteration (accepted and not already known)."""
    recall: float | None = None
    """Object recall (0–1) against a reference inventory after this iteration, if known."""
    object_precision: float | None = None
    """Object precision (0–1) against a reference inventory after this iteration, if known."""

    def __post_init__(self) -> None:
        counts = {
            "n_candidates": self.n_candidates,
            "n_accepted": self.n_accepted,
            "n_rejected": self.n_rejected,
            "n_new_ftls": self.n_new_ftls,
        }
        for name, value in counts.items():
            if value < 0:
                raise InputError(
                    f"IterationSummary for iteration {self.iteration}: field {name!r} is {value}; "
                    "counts must be >= 0."
                )
        for name, frac in (("recall", self.recall), ("object_precision", self.object_precision)):
            if frac is not None and not (0.0 <= frac <= 1.0):
                raise InputError(
                    f"IterationSummary for iteration {self.iteration}: field {name!r} is {frac}; "
                    "give a fraction between 0 and 1 (not a percentage) or None."
                )


@dataclass(frozen=True, eq=False)
class AreaRasters:
    """Factor rasters over the area, on one grid, possibly decimated for display."""

    velocity_mm_a: np.ndarray
    """Eq. 1 trend b, mm/a, 2-D (rows, cols), NaN where unknown."""
    seasonal_amplitude_mm: np.ndarray
    """Eq. 2 peak-to-peak seasonal amplitude A, mm, same shape."""
    transform: Affine
    """Affine transform of the (decimated) grid, in ReportInputs.crs."""
    hillshade: np.ndarray | None = None
    """Hillshade (any grey scale) for the map underlay, same shape; None for no underlay."""
    ftl_mask: np.ndarray | None = None
    """Boolean mask of FTL pixels, same shape; None to rasterise ReportInputs.ftls instead."""

    def __post_init__(self) -> None:
        shape = np.shape(self.velocity_mm_a)
        if len(shape) != 2 or 0 in shape:
            raise InputError(
                f"AreaRasters.velocity_mm_a has shape {shape}; "
                "give a non-empty 2-D array (rows, cols)."
            )
        others = {
            "seasonal_amplitude_mm": self.seasonal_amplitude_mm,
            "hillshade": self.hillshade,
            "ftl_mask": self.ftl_mask,
        }
        for name, arr in others.items():
            if arr is not None and np.shape(arr) != shape:
                raise InputError(
                    f"AreaRasters.{name} has shape {np.shape(arr)} but velocity_mm_a has {shape}; "
                    "give every raster on the same grid."
                )

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the grid."""
        rows, cols = np.shape(self.velocity_mm_a)
        return int(rows), int(cols)

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(left, right, bottom, top) for matplotlib's imshow, valid for north-up grids."""
        rows, cols = self.shape
        x0, y0 = self.transform @ (0, 0)
        x1, y1 = self.transform @ (cols, rows)
        return (min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1))


@dataclass(frozen=True, eq=False)
class ReportInputs:
    """Everything a run or iteration report shows."""

    title: str
    """Report heading, e.g. "Qilian Mountains, descending track 33"."""
    run_id: str
    """Run identifier, as in the store keys ``runs/<run_id>/…``."""
    crs: str
    """CRS of the rasters and geometries (any pyproj input, e.g. "EPSG:4326")."""
    iterations: Sequence[IterationSummary]
    """One summary per iteration done so far (Table 2 rows)."""
    ftls: gpd.GeoDataFrame
    """Final inventory: polygons with FTL_COLUMNS; ``iteration`` NaN for the initial inventory."""
    candidates: gpd.GeoDataFrame
    """All candidates of all iterations, with ``iteration`` and ``accepted`` columns."""
    rasters: AreaRasters | None = None
    """Area rasters for the Fig. 6/7 analogue; None when not available."""
    verification: Mapping[str, float] | None = None
    """Eq. 3–5 counts and rates: n_tp, n_fp, n_fn, tpr_pct, fpr_pct, fnr_pct."""
    object_match: Mapping[str, Any] | None = None
    """Object-level match to a reference inventory: precision, recall, f1 (0–1) and rule (text)."""
    notes: Sequence[str] = field(default_factory=tuple)
    """Free-text lines shown under the title (e.g. inputs, threshold schedule)."""

    def __post_init__(self) -> None:
        _require_columns(self.ftls, FTL_COLUMNS, "ReportInputs.ftls (the FTL inventory)")
        _require_columns(self.candidates, CANDIDATE_COLUMNS, "ReportInputs.candidates")
        seen: set[int] = set()
        for summary in self.iterations:
            if summary.iteration in seen:
                raise InputError(
                    f"ReportInputs.iterations lists iteration {summary.iteration} twice; "
                    "give one IterationSummary per iteration."
                )
            seen.add(summary.iteration)
        if self.verification is not None:
            missing = [k for k in ("n_tp", "n_fp", "n_fn") if k not in self.verification]
            if missing:
                raise InputError(
                    f"ReportInputs.verification lacks {missing}; give n_tp, n_fp, n_fn "
                    "(and optionally tpr_pct, fpr_pct, fnr_pct)."
                )
        if self.object_match is not None:
            missing = [k for k in ("precision", "recall", "f1") if k not in self.object_match]
            if missing:
                raise InputError(
                    f"ReportInputs.object_match lacks {missing}; give precision, recall, f1 "
                    "(fractions 0–1) and rule."
                )


def _require_columns(frame: gpd.GeoDataFrame, columns: Sequence[str], what: str) -> None:
    """Raise InputError naming the missing columns; an empty frame may have none of them."""
    if len(frame) == 0:
        return
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(
            f"{what} lacks column(s) {missing}; it has {list(frame.columns)}. "
            "Compute the attributes (ftlcloud.science) before building the report."
        )
