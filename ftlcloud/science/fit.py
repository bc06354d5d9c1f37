"""Seasonal deformation model of the paper (Eq. 1–2), fitted per pixel on its own valid dates.

``y(t) = a + b·t + c·cos(2πt/T) + d·sin(2πt/T)`` with t in years since the first acquisition
(days / 365.25) and T the freeze-thaw period (one year by default). Velocity is b (mm/a) and the
seasonal amplitude is Eq. 2, ``A = 2·sqrt(c² + d²)`` (mm, peak-to-peak).

MintPy's ``annualAmplitude`` (``timeseries2velocity``) is ``sqrt(c² + d²)`` in metres: half of A
and in other units, so ``A_mm = 2000 · annualAmplitude_m``.

The fit is one compiled pass over blocks of pixels (:mod:`ftlcloud.science._fit_kernel`, numba):
pixels without gaps share the precomputed normal-matrix inverse; pixels with gaps get their own
normal equations (the full ones minus their missing dates' products, in float64) and a 4×4
Cholesky solve; residuals are summed explicitly. Memory beyond the outputs is a few KB.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from typing import Literal

import numpy as np

from ftlcloud.errors import ConfigError, InputError
from ftlcloud.science._fit_kernel import fit_pixels

logger = logging.getLogger(__name__)

FIT_FIELDS: tuple[str, ...] = (
    "velocity_mm_a",
    "velocity_std_mm_a",
    "seasonal_amplitude_mm",
    "seasonal_peak_doy",
    "intercept_mm",
    "rmse_mm",
    "n_valid",
)

DAYS_PER_YEAR = 365.25
_UNIT_TO_MM = {"m": 1000.0, "mm": 1.0}
# A Cholesky pivot this small relative to its diagonal entry means the pixel's design is singular
# to working precision (float32 sums of the missing dates leave ~1e-7 noise; well-posed designs
# spanning a period have relative pivots ~0.25).
_PIVOT_RTOL = 1e-6
# Unique entries of the symmetric 4x4 normal matrix, row-major upper triangle (the order the
# kernel's `_pair` indexes).
_PAIRS: tuple[tuple[int, int], ...] = tuple((i, j) for i in range(4) for j in range(i, 4))


@dataclass(frozen=True)
class SeasonalFit:
    """Per-pixel results of Eq. 1–2, each a (y, x) array; NaN where the pixel was not fitted."""

    velocity_mm_a: np.ndarray
    """Linear rate b (mm/a), float32."""
    velocity_std_mm_a: np.ndarray
    """Standard error of b from the residuals, sqrt(SSR/(n−4)·[(GᵀG)⁻¹]₁₁) (mm/a), float32."""
    seasonal_amplitude_mm: np.ndarray
    """Eq. 2, A = 2·sqrt(c² + d²) (mm, peak-to-peak; twice MintPy's annualAmplitude), float32."""
    seasonal_peak_doy: np.ndarray
    """Fractional day of year (1.0 = 1 January 00:00) of the first maximum of the seasonal term
    at or after the first acquisition; NaN where the amplitude is exactly zero, float32."""
    intercept_mm: np.ndarray
    """Eq. 1 a: the modelled displacement at the first acquisition (mm), float32."""
    rmse_mm: np.ndarray
    """Residual RMS sqrt(SSR/n) over the pixel's valid dates (mm), float32."""
    n_valid: np.ndarray
    """Number of valid (finite) dates of the pixel, int16 (reported also where not fitted)."""

    def as_dict(self) -> dict[str, np.ndarray]:
        """The fields keyed by :data:`FIT_FIELDS`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _to_datetime64(value: object, index: int) -> np.datetime64:
    """One acquisition date as datetime64[us] from date, datetime, datetime64, ISO or YYYYMMDD."""
    try:
        if isinstance(value, np.datetime64):
            out = value
        elif isinstance(value, datetime):
            # Aware datetimes are taken in UTC; naive ones as given.
            if value.tzinfo is not None:
                value = value.astimezone(UTC).replace(tzinfo=None)
            out = np.datetime64(value)
        elif isinstance(value, date):
            out = np.datetime64(value)
        elif isinstance(value, str):
            text = value.strip()
            if len(text) == 8 and text.isdigit():  # MintPy's YYYYMMDD
                text = f"{text[:4]}-{text[4:6]}-{text[6:]}"
            out = np.datetime64(text)
        else:
            raise TypeError(f"unsupported type {type(value).__name__}")
        if np.isnat(out):
            raise ValueError("NaT")
        return out.astype("datetime64[us]")
    except (TypeError, ValueError) as err:
        raise InputError(
            f"dates[{index}] = {value!r} is not a date: give datetime.date/datetime, "
            f"numpy.datetime64, or a string 'YYYY-MM-DD' / 'YYYYMMDD' ({err})"
        ) from err


def _parse_dates(dates: Sequence[date | datetime | np.datetime64 | str]) -> np.ndarray:
    """Dates as a strictly increasing datetime64[us] array, with clear errors otherwise."""
    if isinstance(dates, np.ndarray) and np.issubdtype(dates.dtype, np.datetime64):
        values = dates.astype("datetime64[us]").ravel()
        if np.isnat(values).any():
            bad = int(np.flatnonzero(np.isnat(values))[0])
            raise InputError(f"dates[{bad}] is NaT: every acquisition needs a date")
    else:
        values = np.array([_to_datetime64(v, i) for i, v in enumerate(dates)], "datetime64[us]")
    if values.size == 0:
        raise InputError("dates is empty: give one acquisition date per time step of the cube")
    steps = np.diff(values)
    if (steps <= np.timedelta64(0, "us")).any():
        i = int(np.flatnonzero(steps <= np.timedelta64(0, "us"))[0])
        kind = "duplicate" if values[i] == values[i + 1] else "unsorted"
        raise InputError(
            f"dates are not strictly increasing: dates[{i}] = {values[i]} and "
            f"dates[{i + 1}] = {values[i + 1]} ({kind}); sort the cube by date and drop or merge "
            "duplicate acquisitions"
        )
    return values


def years_since_first(dates: Sequence[date | datetime | np.datetime64 | str]) -> np.ndarray:
    """Time of each acquisition in years (days / 365.25) since the first one, float64."""
    return _years_since_first(_parse_dates(dates))


def _years_since_first(values: np.ndarray) -> np.ndarray:
    days = (values - values[0]) / np.timedelta64(1, "D")
    return np.asarray(days, dtype=np.float64) / DAYS_PER_YEAR


def _design(t_years: np.ndarray, period_years: float) -> np.ndarray:
    """Design matrix G (n_dates, 4) of Eq. 1: columns 1, t, cos(2πt/T), sin(2πt/T)."""
    omega = 2.0 * np.pi / period_years
    return np.column_stack(
        [np.ones_like(t_years), t_years, np.cos(omega * t_years), np.sin(omega * t_years)]
    )


def _validate(
    cube: np.ndarray, n_dates: int, unit: str, period_years: float, min_valid: int
) -> None:
    if not isinstance(cube, np.ndarray) or cube.ndim != 3:
        shape = getattr(cube, "shape", None)
        raise InputError(
            f"cube must be a 3-D numpy array (time, y, x); got shape {shape}: stack the "
            "displacement rasters along a leading time axis"
        )
    if not np.issubdtype(cube.dtype, np.floating):
        raise InputError(
            f"cube dtype is {cube.dtype}; give float32 or float64 with NaN marking missing values"
        )
    if cube.shape[0] != n_dates:
        raise InputError(
            f"dates has {n_dates} entries but the cube's time axis has {cube.shape[0]}: "
            "give exactly one date per time step"
        )
    if n_dates > np.iinfo(np.int16).max:
        raise InputError(f"{n_dates} dates exceed the int16 n_valid field; split the series")
    if unit not in _UNIT_TO_MM:
        raise ConfigError(f"unit={unit!r} is not known: give 'm' or 'mm' (the cube's unit)")
    if not (np.isfinite(period_years) and period_years > 0):
        raise ConfigError(f"period_years={period_years!r} must be a positive number of years")
    if min_valid < 5:
        # Four parameters need at least five dates to leave one degree of freedom for the error.
        raise ConfigError(f"min_valid={min_valid} must be at least 5 (4 parameters + 1)")


def fit_seasonal(
    cube: np.ndarray,
    dates: Sequence[date | datetime | np.datetime64 | str],
    *,
    unit: Literal["m", "mm"],
    period_years: float = 1.0,
    min_valid: int = 8,
) -> SeasonalFit:
    """Fit Eq. 1 to every pixel of a (time, y, x) displacement cube (NaN = missing).

    Each pixel is fitted on its own valid dates. Pixels with fewer than ``min_valid`` valid
    dates, whose valid dates span less than one period (trend and season are then not
    separable) or whose design is singular are NaN; ``n_valid`` is reported for every pixel.
    """
    parsed = _parse_dates(dates)
    t_years = _years_since_first(parsed)
    _validate(cube, t_years.size, unit, float(period_years), int(min_valid))
    n_dates, ny, nx = cube.shape
    n_pix = ny * nx
    to_mm = _UNIT_TO_MM[unit]
    # Strict span rule with a microsecond of slack for dates given at whole days.
    min_span = float(period_years) - 1e-9

    g = _design(t_years, float(period_years))
    inv_full = np.linalg.inv(g.T @ g)
    full_ok = bool(t_years[-1] - t_years[0] >= min_span and n_dates >= min_valid)
    col_products = np.stack([g[:, i] * g[:, j] for i, j in _PAIRS], axis=1)
    first = parsed[0]
    first_days = (first - np.datetime64("1970-01-01T00:00:00", "us")) / np.timedelta64(1, "D")
    # Peaks fall within one period of the first date: their year starts are among a few.
    years = np.arange(
        first.astype("datetime64[Y]"),
        first.astype("datetime64[Y]") + np.timedelta64(int(np.ceil(period_years)) + 2, "Y"),
    )
    year_starts = years.astype("datetime64[D]").astype(np.int64).astype(np.float64)
    flat = np.ascontiguousarray(cube.reshape(n_dates, n_pix))
    out = np.empty((6, n_pix), dtype=np.float32)
    n_valid = np.empty(n_pix, dtype=np.int16)
    fit_pixels(
        flat,
        np.ascontiguousarray(g),
        inv_full,
        np.ascontiguousarray(col_products),
        col_products.sum(axis=0),
        t_years,
        int(min_valid),
        min_span,
        full_ok,
        _PIVOT_RTOL,
        to_mm,
        float(first_days),
        float(period_years),
        year_starts,
        out,
        n_valid,
    )
    if not full_ok:
        logger.warning(
            "the %d dates span %.3f years, less than the period %.3f years (or fewer than "
            "min_valid=%d): no pixel can be fitted",
            n_dates,
            t_years[-1] - t_years[0],
            period_years,
            min_valid,
        )
    names = [n for n in FIT_FIELDS if n != "n_valid"]
    return SeasonalFit(
        **{name: out[i].reshape(ny, nx) for i, name in enumerate(names)},
        n_valid=n_valid.reshape(ny, nx),
    )
