"""Seasonal deformation model of the paper (Eq. 1–2), fitted per pixel on its own valid dates.

``y(t) = a + b·t + c·cos(2πt/T) + d·sin(2πt/T)`` with t in years since the first acquisition
(days / 365.25) and T the freeze-thaw period (one year by default). Velocity is b (mm/a) and the
seasonal amplitude is Eq. 2, ``A = 2·sqrt(c² + d²)`` (mm, peak-to-peak).

MintPy's ``annualAmplitude`` (``timeseries2velocity``) is ``sqrt(c² + d²)`` in metres: half of A
and in other units, so ``A_mm = 2000 · annualAmplitude_m``.

The fit is vectorised: pixels without gaps share one design matrix (one matmul with the
precomputed normal-matrix inverse); pixels with gaps get their own normal equations, built with one
matmul of the validity mask against the 10 unique products of design columns and solved with a
vectorised 4×4 Cholesky. Pixels are processed in blocks to bound memory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from typing import Literal

import numpy as np

from ftlcloud.errors import ConfigError, InputError

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
# Pixels per block: 82 dates x 2^11 pixels in float32 is 0.7 MB per temporary, so a block and its
# temporaries stay in L2 cache after the one read from memory (fastest block size measured).
_BLOCK_PIXELS = 1 << 11
# A Cholesky pivot this small relative to its diagonal entry means the pixel's design is singular
# to working precision (float32 sums of the missing dates leave ~1e-7 noise; well-posed designs
# spanning a period have relative pivots ~0.25).
_PIVOT_RTOL = 1e-6
# Unique entries of the symmetric 4x4 normal matrix, in the order they are built.
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
    values = _parse_dates(dates)
    days = (values - values[0]) / np.timedelta64(1, "D")
    return np.asarray(days, dtype=np.float64) / DAYS_PER_YEAR


def _design(t_years: np.ndarray, period_years: float) -> np.ndarray:
    """Design matrix G (n_dates, 4) of Eq. 1: columns 1, t, cos(2πt/T), sin(2πt/T)."""
    omega = 2.0 * np.pi / period_years
    return np.column_stack(
        [np.ones_like(t_years), t_years, np.cos(omega * t_years), np.sin(omega * t_years)]
    )


def _cholesky_solve(
    n_ent: np.ndarray, rhs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solve many 4x4 SPD systems at once.

    n_ent holds the 10 unique entries (in ``_PAIRS`` order) of each normal matrix, shape (10, m);
    rhs is (4, m). Returns the solutions (4, m), [N⁻¹]₁₁ (m,) and a mask of non-singular systems.
    """
    idx = {pair: k for k, pair in enumerate(_PAIRS)}

    def n(i: int, j: int) -> np.ndarray:
        return n_ent[idx[(min(i, j), max(i, j))]]

    ok = np.ones(n_ent.shape[1], dtype=bool)
    lower: dict[tuple[int, int], np.ndarray] = {}
    for j in range(4):
        pivot = n(j, j) - sum((lower[(j, k)] ** 2 for k in range(j)), np.zeros(1))
        good = pivot > _PIVOT_RTOL * np.abs(n(j, j))
        ok &= good
        # A neutral pivot keeps the arithmetic finite for singular systems; they are masked out.
        ljj = np.sqrt(np.where(good, pivot, 1.0))
        lower[(j, j)] = ljj
        for i in range(j + 1, 4):
            acc = n(i, j) - sum((lower[(i, k)] * lower[(j, k)] for k in range(j)), np.zeros(1))
            lower[(i, j)] = acc / ljj
    # Forward substitution L z = rhs, then back substitution Lᵀ x = z.
    z: list[np.ndarray] = []
    for i in range(4):
        acc = rhs[i] - sum((lower[(i, k)] * z[k] for k in range(i)), np.zeros(1))
        z.append(acc / lower[(i, i)])
    x: list[np.ndarray] = [np.empty(0)] * 4
    for i in range(3, -1, -1):
        acc = z[i] - sum((lower[(k, i)] * x[k] for k in range(i + 1, 4)), np.zeros(1))
        x[i] = acc / lower[(i, i)]
    # [N⁻¹]₁₁ = ‖L⁻¹ e₁‖²; L⁻¹ e₁ has a zero first entry.
    w1 = 1.0 / lower[(1, 1)]
    w2 = -lower[(2, 1)] * w1 / lower[(2, 2)]
    w3 = -(lower[(3, 1)] * w1 + lower[(3, 2)] * w2) / lower[(3, 3)]
    inv11 = w1**2 + w2**2 + w3**2
    return np.stack(x), inv11, ok


def _thin_matmul(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """left @ right for a thin operand (4–10 rows or columns) without BLAS.

    einsum's own single-threaded loop streams the block once; multi-threaded BLAS on such
    thin products is slower and, on a machine shared with other work, erratic (measured 3–10×;
    single-threaded BLAS, as in a Dask worker, gave no gain over the whole fit either).
    """
    return np.einsum("ij,jk->ik", left, right, optimize=False)


def _ssr(
    block: np.ndarray, g32: np.ndarray, sol: np.ndarray, valid: np.ndarray | None
) -> np.ndarray:
    """Residual sum of squares from explicit residuals (float32, no cancellation)."""
    resid = _thin_matmul(g32, sol.astype(np.float32))
    np.subtract(block, resid, out=resid)
    if valid is not None:
        # block holds zeros at missing dates: zero their residuals too.
        np.multiply(resid, valid, out=resid)
    return np.einsum("tp,tp->p", resid, resid).astype(np.float64)


def _fit_gaps(
    block: np.ndarray,
    g32: np.ndarray,
    gt32: np.ndarray,
    col_products_32: np.ndarray,
    col_totals: np.ndarray,
    t_years: np.ndarray,
    min_valid: int,
    min_span: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit pixels with missing dates; returns coef (4, m), [N⁻¹]₁₁, SSR and n_valid (int16)."""
    valid = np.isfinite(block)
    n_here = valid.sum(axis=0, dtype=np.int16)
    m = block.shape[1]
    nan = np.float64(np.nan)
    coef = np.full((4, m), nan)
    inv11 = np.full(m, nan)
    ssr = np.full(m, nan)
    # Pixels with too few dates (no data at all, typically: water, layover, snow) are never
    # fitted: skip their arithmetic.
    fit = np.flatnonzero(n_here >= min_valid)
    if fit.size == 0:
        return coef, inv11, ssr, n_here
    if fit.size < m:
        block, valid = block[:, fit], valid[:, fit]
    missing = (~valid).astype(np.float32)
    # Normal matrices as exact totals minus the few missing dates' products (accurate in float32).
    n_ent = col_totals[:, None] - _thin_matmul(col_products_32, missing).astype(np.float64)
    y0 = np.where(valid, block, np.float32(0.0))
    gty = _thin_matmul(gt32, y0).astype(np.float64)
    sol, inv11_fit, ok = _cholesky_solve(n_ent, gty)
    # The span test needs the first and last valid date only where an end date is missing.
    ends_missing = np.flatnonzero(~(valid[0] & valid[-1]) & ok)
    if ends_missing.size:
        sub = valid[:, ends_missing]
        first = t_years[np.argmax(sub, axis=0)]
        last = t_years[sub.shape[0] - 1 - np.argmax(sub[::-1], axis=0)]
        ok[ends_missing] &= last - first >= min_span
    ssr_fit = _ssr(y0, g32, sol, valid)
    coef[:, fit] = np.where(ok, sol, nan)
    inv11[fit] = np.where(ok, inv11_fit, nan)
    ssr[fit] = np.where(ok, ssr_fit, nan)
    return coef, inv11, ssr, n_here


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
    t_years = years_since_first(dates)
    _validate(cube, t_years.size, unit, float(period_years), int(min_valid))
    n_dates, ny, nx = cube.shape
    n_pix = ny * nx
    to_mm = _UNIT_TO_MM[unit]
    # Strict span rule with a microsecond of slack for dates given at whole days.
    min_span = float(period_years) - 1e-9

    g = _design(t_years, float(period_years))
    inv_full = np.linalg.inv(g.T @ g)
    full_ok = t_years[-1] - t_years[0] >= min_span and n_dates >= min_valid
    # float32 copies feed single-precision BLAS: the data are float32 and the one pass over them
    # from main memory is the cost that matters. Precision is kept where it is lost otherwise:
    # normal matrices as exact float64 totals minus the (few) missing dates, and the residual
    # sum of squares from explicit residuals rather than by cancellation (Y·Y − coefᵀGᵀY).
    gt32 = np.ascontiguousarray(g.T, dtype=np.float32)
    g32 = np.ascontiguousarray(g, dtype=np.float32)
    col_products = np.stack([g[:, i] * g[:, j] for i, j in _PAIRS])
    col_products_32 = col_products.astype(np.float32)
    col_totals = col_products.sum(axis=1)
    shared = (g32, gt32, col_products_32, col_totals, t_years, min_valid, min_span)

    flat = cube.reshape(n_dates, n_pix)
    coef = np.full((4, n_pix), np.nan)
    inv11 = np.full(n_pix, np.nan)
    ssr = np.full(n_pix, np.nan)
    n_valid = np.full(n_pix, n_dates, dtype=np.int16)
    n_gap_pixels = 0

    for start in range(0, n_pix if full_ok else 0, _BLOCK_PIXELS):
        stop = min(start + _BLOCK_PIXELS, n_pix)
        block = flat[:, start:stop]
        if block.dtype != np.float32:
            block = block.astype(np.float32)
        # Column sums (row 0 of GᵀY) are NaN exactly for pixels with a missing date.
        gty = _thin_matmul(gt32, block)
        gaps = ~np.isfinite(gty[0])
        n_gaps = int(gaps.sum())
        n_gap_pixels += n_gaps
        sl = slice(start, stop)
        if n_gaps * 4 >= gaps.size:
            # Mostly pixels with gaps: one path for the whole block is cheaper than splitting.
            coef[:, sl], inv11[sl], ssr[sl], n_valid[sl] = _fit_gaps(block, *shared)
            continue
        sol = inv_full @ gty.astype(np.float64)
        coef[:, sl] = sol
        inv11[sl] = inv_full[1, 1]
        ssr[sl] = _ssr(block, g32, sol, None)
        if n_gaps:
            where = np.flatnonzero(gaps)
            fitted = _fit_gaps(block[:, where], *shared)
            coef[:, start + where], inv11[start + where], ssr[start + where] = fitted[:3]
            n_valid[start + where] = fitted[3]

    if not full_ok:
        n_valid[:] = np.isfinite(flat).sum(axis=0)
        logger.warning(
            "the %d dates span %.3f years, less than the period %.3f years (or fewer than "
            "min_valid=%d): no pixel can be fitted",
            n_dates,
            t_years[-1] - t_years[0],
            period_years,
            min_valid,
        )
    logger.debug("fit_seasonal: %d of %d pixels have gaps", n_gap_pixels, n_pix)
    return _results(coef, inv11, ssr, n_valid, to_mm, t_years, dates, float(period_years), (ny, nx))


# Pixels per chunk of the published fields: their ~20 float64 temporaries stay in L2 cache.
_RESULT_PIXELS = 1 << 15


def _results(
    coef: np.ndarray,
    inv11: np.ndarray,
    ssr: np.ndarray,
    n_valid: np.ndarray,
    to_mm: float,
    t_years: np.ndarray,
    dates: Sequence[date | datetime | np.datetime64 | str],
    period_years: float,
    shape: tuple[int, int],
) -> SeasonalFit:
    """Turn the least-squares solution into the published fields (mm, float32)."""
    first = _parse_dates(dates)[0]
    first_days = (first - np.datetime64("1970-01-01T00:00:00", "us")) / np.timedelta64(1, "D")
    # Peaks fall within one period of the first date: look their year start up among the few
    # candidate years (a per-pixel datetime64 round trip costs a third of the whole fit).
    years = np.arange(
        first.astype("datetime64[Y]"),
        first.astype("datetime64[Y]") + np.timedelta64(int(np.ceil(period_years)) + 2, "Y"),
    )
    starts = years.astype("datetime64[D]").astype(np.int64).astype(np.float64)
    n_pix = n_valid.size
    fields_out = {
        name: np.empty(n_pix, dtype=np.float32) for name in FIT_FIELDS if name != "n_valid"
    }
    for lo in range(0, n_pix, _RESULT_PIXELS):
        sl = slice(lo, min(lo + _RESULT_PIXELS, n_pix))
        a, b, c, d = coef[:, sl] * to_mm
        # Cancellation in Y·Y − coefᵀGᵀY can leave tiny negatives for near-perfect fits.
        ssr_mm2 = np.maximum(ssr[sl], 0.0) * to_mm**2
        n = n_valid[sl].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            velocity_std = np.sqrt(ssr_mm2 / (n - 4.0) * inv11[sl])
            rmse = np.sqrt(ssr_mm2 / n)
        # sqrt rather than hypot (3x slower): amplitudes in mm are far from overflow.
        half_amp = np.sqrt(c * c + d * d)
        # c·cos(ωt) + d·sin(ωt) = R·cos(ωt − φ) with φ = atan2(d, c): maxima at t = φ/ω + kT.
        # float32 atan2 is vectorised (float64 is not) and its ~1e-7 rad error is ~1e-5 day.
        phase = np.arctan2(d.astype(np.float32), c.astype(np.float32)).astype(np.float64)
        t_peak = np.mod(phase / (2.0 * np.pi) * period_years, period_years)
        peak_days = first_days + t_peak * DAYS_PER_YEAR
        finite = np.isfinite(peak_days)
        safe_days = np.where(finite, peak_days, starts[0])
        year_start = starts[np.searchsorted(starts, np.floor(safe_days), side="right") - 1]
        doy = np.where(finite & (half_amp > 0), peak_days - year_start + 1.0, np.nan)
        fields_out["velocity_mm_a"][sl] = b
        fields_out["velocity_std_mm_a"][sl] = velocity_std
        fields_out["seasonal_amplitude_mm"][sl] = 2.0 * half_amp
        fields_out["seasonal_peak_doy"][sl] = doy
        fields_out["intercept_mm"][sl] = a
        fields_out["rmse_mm"][sl] = rmse
    return SeasonalFit(
        **{name: values.reshape(shape) for name, values in fields_out.items()},
        n_valid=n_valid.reshape(shape),
    )
