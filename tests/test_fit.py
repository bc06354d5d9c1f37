"""Tests of ftlcloud.science.fit against analytic series, per-pixel lstsq and MintPy."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import pytest

from ftlcloud.errors import ConfigError, InputError
from ftlcloud.science.fit import FIT_FIELDS, SeasonalFit, fit_seasonal, years_since_first

N_DATES = 82
DATES = [date(2018, 1, 6) + timedelta(days=12 * i) for i in range(N_DATES)]
T_YEARS = np.array([(d - DATES[0]).days for d in DATES]) / 365.25


def _model(a, b, c, d, t):
    w = 2 * np.pi * t[:, None, None]
    return a + b * t[:, None, None] + c * np.cos(w) + d * np.sin(w)


def _params(rng, shape):
    return (
        rng.uniform(-20, 20, shape),
        rng.uniform(-60, 60, shape),
        rng.uniform(-15, 15, shape),
        rng.uniform(-15, 15, shape),
    )


def _gappy_cube(rng, params, fraction_rows_gappy=(0.0, 0.1, 1.0)):
    """Three 4096-pixel blocks: complete, a minority of pixels with gaps, all pixels with gaps."""
    cube = _model(*params, T_YEARS)
    ny = cube.shape[1] // 3
    for k, frac in enumerate(fraction_rows_gappy):
        rows = slice(k * ny, (k + 1) * ny)
        has_gaps = rng.random((ny, cube.shape[2])) < frac
        drop = (rng.random((N_DATES, ny, cube.shape[2])) < 0.2) & has_gaps
        cube[:, rows][drop] = np.nan
    # A few pixels with too few dates (6 kept, evenly spread) and one with none.
    cube[np.setdiff1d(np.arange(N_DATES), np.linspace(0, N_DATES - 1, 6).astype(int)), -20, :5] = (
        np.nan
    )
    cube[:, -1, -1] = np.nan
    return cube


@pytest.mark.parametrize("unit, scale", [("mm", 1.0), ("m", 1e-3)])
def test_recovers_known_parameters_with_gaps(unit, scale):
    rng = np.random.default_rng(1)
    params = _params(rng, (96, 128))
    cube_mm = _gappy_cube(rng, params)
    fit = fit_seasonal((cube_mm * scale).astype(np.float32), DATES, unit=unit)
    a, b, c, d = params
    n_valid = np.isfinite(cube_mm).sum(axis=0)
    assert np.array_equal(fit.n_valid, n_valid)
    assert fit.n_valid.dtype == np.int16
    fitted = n_valid >= 8
    assert (~fitted).sum() == 6 and fitted.mean() > 0.99
    # float32 input (~1e-7 relative) bounds the recovery precision.
    np.testing.assert_allclose(fit.velocity_mm_a[fitted], b[fitted], atol=2e-3)
    np.testing.assert_allclose(fit.intercept_mm[fitted], a[fitted], atol=2e-3)
    np.testing.assert_allclose(
        fit.seasonal_amplitude_mm[fitted], 2 * np.hypot(c, d)[fitted], atol=2e-3
    )
    assert np.nanmax(fit.rmse_mm) < 1e-3 and np.nanmax(fit.velocity_std_mm_a) < 1e-3
    for name in FIT_FIELDS:
        values = fit.as_dict()[name]
        assert values.shape == (96, 128)
        if name != "n_valid":
            assert values.dtype == np.float32
            assert np.isnan(values[~fitted]).all()
            assert np.isfinite(values[fitted]).all()


def test_min_valid_threshold():
    rng = np.random.default_rng(2)
    cube = _model(*_params(rng, (1, 3)), T_YEARS).astype(np.float32)
    # Keep 7, 8 and 9 dates spread over the whole series (so the span rule is not what bites).
    for col, keep in enumerate((7, 8, 9)):
        kept = np.linspace(0, N_DATES - 1, keep).round().astype(int)
        drop = np.setdiff1d(np.arange(N_DATES), kept)
        cube[drop, 0, col] = np.nan
    fit = fit_seasonal(cube, DATES, unit="mm", min_valid=8)
    assert fit.n_valid.tolist() == [[7, 8, 9]]
    assert np.isnan(fit.velocity_mm_a[0, 0])
    assert np.isfinite(fit.velocity_mm_a[0, 1:]).all()
    fit5 = fit_seasonal(cube, DATES, unit="mm", min_valid=5)
    assert np.isfinite(fit5.velocity_mm_a).all()


def test_short_span_is_not_fitted():
    rng = np.random.default_rng(3)
    cube = _model(*_params(rng, (1, 2)), T_YEARS).astype(np.float32)
    cube[T_YEARS > 0.5, 0, 0] = np.nan  # 16 valid dates over half a year
    fit = fit_seasonal(cube, DATES, unit="mm")
    assert fit.n_valid[0, 0] == 16
    assert np.isnan(fit.velocity_mm_a[0, 0]) and np.isfinite(fit.velocity_mm_a[0, 1])
    # A whole series shorter than the period: nothing is fitted, counts still reported.
    short = fit_seasonal(cube[:20], DATES[:20], unit="mm")
    assert np.isnan(short.velocity_mm_a).all() and short.n_valid.tolist() == [[16, 20]]


@pytest.mark.parametrize("peak_doy", [1.0, 45.5, 201.0, 300.25, 365.0])
def test_peak_day_of_year(peak_doy):
    # First acquisition on 1 January 2018 00:00, so t (years) maps to day of year 1 + 365.25·t.
    dates = [datetime(2018, 1, 1) + timedelta(days=12 * i) for i in range(N_DATES)]
    t = years_since_first(dates)
    t_peak = (peak_doy - 1) / 365.25
    series = 5.0 + 3.0 * t + 7.0 * np.cos(2 * np.pi * (t - t_peak))
    fit = fit_seasonal(series[:, None, None], dates, unit="mm")
    assert fit.seasonal_peak_doy[0, 0] == pytest.approx(peak_doy, abs=1e-3)
    assert fit.seasonal_amplitude_mm[0, 0] == pytest.approx(14.0, abs=1e-4)


def test_peak_doy_follows_calendar_of_first_date():
    # Same seasonal shape, series starting mid-year: the peak stays on the same calendar day.
    dates = [datetime(2019, 7, 1) + timedelta(days=12 * i) for i in range(N_DATES)]
    t = years_since_first(dates)
    days = np.array([(d - datetime(2019, 1, 1)).days for d in dates], float)
    series = 4.0 * np.cos(2 * np.pi * (days - 99.0) / 365.25) + 0.0 * t
    fit = fit_seasonal(series[:, None, None], dates, unit="mm")
    assert fit.seasonal_peak_doy[0, 0] == pytest.approx(100.0, abs=0.5)


def test_velocity_std_and_rmse_match_per_pixel_lstsq():
    rng = np.random.default_rng(4)
    params = _params(rng, (96, 128))
    cube = _gappy_cube(rng, params) + rng.normal(0, 3.0, (N_DATES, 96, 128))
    cube = cube.astype(np.float32)
    fit = fit_seasonal(cube, DATES, unit="mm")
    for y, x in [(3, 5), (40, 100), (70, 7), (95, 126), (50, 64)]:
        series = cube[:, y, x].astype(np.float64)
        ok = np.isfinite(series)
        t = T_YEARS[ok]
        g = np.column_stack([np.ones_like(t), t, np.cos(2 * np.pi * t), np.sin(2 * np.pi * t)])
        coef, ssr, _, _ = np.linalg.lstsq(g, series[ok], rcond=None)
        n = ok.sum()
        sigma2 = ssr[0] / (n - 4)
        std_b = np.sqrt(sigma2 * np.linalg.inv(g.T @ g)[1, 1])
        assert fit.velocity_mm_a[y, x] == pytest.approx(coef[1], rel=1e-4, abs=1e-4)
        assert fit.velocity_std_mm_a[y, x] == pytest.approx(std_b, rel=1e-4)
        assert fit.rmse_mm[y, x] == pytest.approx(np.sqrt(ssr[0] / n), rel=1e-4)
        assert fit.intercept_mm[y, x] == pytest.approx(coef[0], rel=1e-4, abs=1e-3)


def test_agrees_with_mintpy_time_func_estimator():
    time_func = pytest.importorskip("mintpy.utils.time_func")
    rng = np.random.default_rng(5)
    params = [p * 1e-3 for p in _params(rng, (40, 50))]
    cube_m = _model(*params, T_YEARS) + rng.normal(0, 0.004, (N_DATES, 40, 50))
    cube_m = cube_m.astype(np.float32)
    date_list = [d.strftime("%Y%m%d") for d in DATES]
    model = {"polynomial": 1, "periodic": [1.0]}
    _, m, _ = time_func.estimate_time_func(model, date_list, cube_m.reshape(N_DATES, -1))
    fit = fit_seasonal(cube_m, DATES, unit="m")
    mintpy_velocity_mm_a = (m[1] * 1000).reshape(40, 50)
    mintpy_amplitude_mm = (2 * np.hypot(m[2], m[3]) * 1000).reshape(40, 50)
    # MintPy counts years as year + (doy − 1)/365.25, which jumps by up to ~0.75 day against
    # days/365.25 at each new year; that time-axis jitter (≲ 0.75/365 ≈ 2e-3 of a year) is the
    # only modelling difference, so the two agree to ~1e-3 relative, not to float precision.
    np.testing.assert_allclose(fit.velocity_mm_a, mintpy_velocity_mm_a, rtol=2e-3, atol=0.05)
    np.testing.assert_allclose(fit.seasonal_amplitude_mm, mintpy_amplitude_mm, rtol=2e-3, atol=0.05)
    # And both are far closer to each other than to the truth the noise hides.
    assert np.abs(fit.velocity_mm_a - mintpy_velocity_mm_a).max() < 0.2


def test_years_since_first_accepts_mixed_inputs():
    dates = ["2018-01-01", "20180113", date(2018, 1, 25), np.datetime64("2019-01-01")]
    np.testing.assert_allclose(years_since_first(dates), np.array([0, 12, 24, 365]) / 365.25)
    arr = np.array(["2020-01-01", "2020-07-01"], dtype="datetime64[D]")
    assert years_since_first(arr)[1] == pytest.approx(182 / 365.25)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"dates": DATES[:-1]}, InputError, "82"),
        ({"dates": [DATES[0], *DATES[:-1]]}, InputError, "duplicate"),
        ({"dates": [DATES[1], DATES[0], *DATES[2:]]}, InputError, "unsorted"),
        ({"dates": ["not-a-date", *DATES[1:]]}, InputError, "dates\\[0\\]"),
        ({"unit": "cm"}, ConfigError, "unit"),
        ({"min_valid": 4}, ConfigError, "min_valid"),
        ({"period_years": 0.0}, ConfigError, "period_years"),
        ({"cube": np.zeros((N_DATES, 4))}, InputError, "3-D"),
        ({"cube": np.zeros((N_DATES, 2, 2), dtype=np.int32)}, InputError, "float"),
    ],
)
def test_input_validation(kwargs, error, match):
    args = {"cube": np.zeros((N_DATES, 2, 2), np.float32), "dates": DATES, "unit": "mm"}
    args.update(kwargs)
    cube, dates = args.pop("cube"), args.pop("dates")
    with pytest.raises(error, match=match):
        fit_seasonal(cube, dates, **args)


def test_as_dict_keys_follow_fit_fields():
    fit = fit_seasonal(np.zeros((N_DATES, 1, 1), np.float32), DATES, unit="mm")
    assert isinstance(fit, SeasonalFit)
    assert tuple(fit.as_dict()) == FIT_FIELDS
    # A flat series has no seasonal maximum: the peak day is undefined.
    assert np.isnan(fit.seasonal_peak_doy[0, 0]) and fit.velocity_mm_a[0, 0] == 0
