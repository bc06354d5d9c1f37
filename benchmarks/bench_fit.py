"""Seasonal fit: ftlcloud vs the memory-bandwidth floor, MintPy's estimator and xarray curvefit."""

from __future__ import annotations

import logging
import time
from datetime import date, timedelta

import numpy as np

from benchmarks._timing import Row, best_of, check
from ftlcloud.science.fit import fit_seasonal

logger = logging.getLogger(__name__)

N_DATES = 82
REVISIT_DAYS = 12
XR_SIDE = 16  # xarray curvefit is a scipy curve_fit per pixel: time a 16x16 sub-cube and scale


def make_cube(side: int, seed: int = 0) -> tuple[np.ndarray, list[date]]:
    """A (82, side, side) float32 displacement cube in metres: trend + annual cycle + noise."""
    rng = np.random.default_rng(seed)
    dates = [date(2018, 1, 3) + timedelta(days=REVISIT_DAYS * i) for i in range(N_DATES)]
    t_years = np.array([(d - dates[0]).days / 365.25 for d in dates], dtype=np.float32)
    vel_m_a = rng.normal(0.0, 0.02, (side, side)).astype(np.float32)
    amp_m = rng.uniform(0.0, 0.01, (side, side)).astype(np.float32)
    phase = np.float32(2 * np.pi) * t_years[:, None, None]
    cube = vel_m_a[None] * t_years[:, None, None] + amp_m[None] * np.cos(phase)
    cube += rng.normal(0.0, 0.002, cube.shape).astype(np.float32)
    return np.ascontiguousarray(cube, dtype=np.float32), dates


def with_gaps(cube: np.ndarray, fraction: float = 0.05, seed: int = 1) -> np.ndarray:
    """A copy of the cube with ``fraction`` of the samples set to NaN at random."""
    rng = np.random.default_rng(seed)
    gappy = cube.copy()
    gappy[rng.random(cube.shape) < fraction] = np.nan
    return gappy


def _xarray_curvefit_s(cube: np.ndarray, dates: list[date]) -> float:
    import xarray as xr

    t_years = np.array([(d - dates[0]).days / 365.25 for d in dates])
    sub = cube[:, :XR_SIDE, :XR_SIDE].astype(np.float64)
    da = xr.DataArray(sub, dims=("t", "y", "x"), coords={"t": t_years})

    def model(t: np.ndarray, a: float, b: float, c: float, d: float) -> np.ndarray:
        w = 2 * np.pi * t
        return a + b * t + c * np.cos(w) + d * np.sin(w)

    start = time.perf_counter()
    da.curvefit("t", model)
    return time.perf_counter() - start


def run(side: int) -> list[Row]:
    """Every fit figure for a (82, side, side) cube."""
    cube, dates = make_cube(side)
    gappy = with_gaps(cube)
    n_pix = side * side
    logger.info("fit: cube %s (%.0f MB)", cube.shape, cube.nbytes / 1e6)

    # The floor is one read pass: a plain reduction over time reads every byte once and writes
    # one (y, x) plane. nansum copies the cube first (NaN -> 0), copy() reads and writes it:
    # both are more than one pass and are shown for context only.
    t_read = best_of(lambda: cube.sum(axis=0), 5)
    t_nansum = best_of(lambda: np.nansum(cube, axis=0))
    t_copy = best_of(lambda: cube.copy())
    t_fit = best_of(lambda: fit_seasonal(cube, dates, unit="m"), 5)
    t_fit_gaps = best_of(lambda: fit_seasonal(gappy, dates, unit="m"), 5)

    from mintpy.utils import time_func

    model = {"polynomial": 1, "periodic": [1.0]}
    date_list = [d.strftime("%Y%m%d") for d in dates]
    flat = cube.reshape(N_DATES, n_pix)
    t_mintpy = best_of(lambda: time_func.estimate_time_func(model, date_list, flat))
    try:
        time_func.estimate_time_func(model, date_list, gappy.reshape(N_DATES, n_pix))
        mintpy_gaps = "MintPy fitted the cube with gaps"
    except ValueError as err:  # scipy lstsq: "array must not contain infs or NaNs"
        mintpy_gaps = f"MintPy on 5% gaps: {err}"

    t_xr_sub = _xarray_curvefit_s(cube, dates)
    t_xr = t_xr_sub * n_pix / (XR_SIDE * XR_SIDE)

    def pps(seconds: float) -> float:
        return n_pix / seconds

    shape = f"(82, {side}, {side})"
    return [
        Row(f"fit {shape} complete: ftlcloud", pps(t_fit), "pixels/s", note=f"{t_fit:.3f} s"),
        Row(
            f"fit {shape} 5% gaps: ftlcloud",
            pps(t_fit_gaps),
            "pixels/s",
            note=f"{t_fit_gaps:.3f} s",
        ),
        Row(
            "floor: one read pass, cube.sum(axis=0)",
            pps(t_read),
            "pixels/s",
            note=f"{t_read:.3f} s, {cube.nbytes / t_read / 1e9:.1f} GB/s",
        ),
        Row(
            "context: np.nansum (copy + read)", pps(t_nansum), "pixels/s", note=f"{t_nansum:.3f} s"
        ),
        Row("context: cube.copy() (read + write)", pps(t_copy), "pixels/s", note=f"{t_copy:.3f} s"),
        Row(
            "MintPy estimate_time_func (gap-free only)",
            pps(t_mintpy),
            "pixels/s",
            note=f"{t_mintpy:.3f} s",
        ),
        Row(
            "xarray curvefit (scaled from 16x16)",
            pps(t_xr),
            "pixels/s",
            note=f"{t_xr_sub:.3f} s for {XR_SIDE * XR_SIDE} px",
        ),
        check("fit complete / one read pass", t_fit / t_read, at_most=2.0),
        check("fit 5% gaps / one read pass", t_fit_gaps / t_read, at_most=4.0),
        check("fit complete / nansum (context)", t_fit / t_nansum),
        check("fit 5% gaps / nansum (context)", t_fit_gaps / t_nansum),
        check(
            "MintPy / fit complete (speed-up)",
            t_mintpy / t_fit,
            at_least=30.0,
            note=mintpy_gaps[:60],
        ),
        check(
            "MintPy / one read pass (bound on any speed-up)",
            t_mintpy / t_read,
            note="a fit cannot beat one read of its input",
        ),
        check("xarray curvefit / fit 5% gaps (speed-up)", t_xr / t_fit_gaps),
    ]
