"""The per-pixel least squares of Eq. 1 as one compiled pass over blocks of pixels (numba).

For a block of 256 pixels (all dates) the kernel accumulates GᵀY and the valid-date count
(float32, vectorised), and for blocks with gaps the normal-matrix products of each pixel's
missing dates and its first and last valid date, while the block is in cache; then per pixel
it solves the 4×4 system (the shared float64 inverse for complete pixels, a float64 Cholesky
of the full normal matrix minus the missing dates' products otherwise), sums the squared
residuals explicitly (no Y·Y − xᵀGᵀY cancellation) and writes the published fields. The cube
is read from memory once; the numpy version this replaced made ~40 passes over temporaries
per block and was 2x (complete) to 3x (5 % gaps) slower (benchmarks/README.md).

Semantics are documented on :func:`ftlcloud.science.fit.fit_seasonal`; its tests check them
against analytic answers, per-pixel ``numpy.linalg.lstsq`` and MintPy.
"""

from __future__ import annotations

import math

import numba
import numpy as np

#: Pixels per block: 82 dates x 256 float32 pixels is 84 KB, and the accumulators 10 KB.
BLOCK_PIXELS = 256


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def fit_pixels(
    flat: np.ndarray,
    g: np.ndarray,
    inv_full: np.ndarray,
    col_products: np.ndarray,
    col_totals: np.ndarray,
    t_years: np.ndarray,
    min_valid: int,
    min_span: float,
    full_ok: bool,
    pivot_rtol: float,
    to_mm: float,
    first_days: float,
    period_years: float,
    year_starts: np.ndarray,
    out: np.ndarray,
    n_valid: np.ndarray,
) -> None:
    """Fit every column of ``flat`` (dates, pixels); write ``out`` (6, pixels) float32 in the
    order velocity, velocity std, amplitude, peak day, intercept, RMSE, and ``n_valid``."""
    n_dates, n_pix = flat.shape
    nan = np.float32(np.nan)
    inf = np.float32(np.inf)
    zero = np.float32(0.0)
    two_pi = 2.0 * math.pi
    # float32 accumulators in separate 1-D arrays: the loop over pixels vectorises (float64
    # or 2-D accumulators measured 1.7x and 2.5x slower); GᵀY in float32 as numpy did before.
    a0 = np.empty(BLOCK_PIXELS, dtype=np.float32)
    a1 = np.empty(BLOCK_PIXELS, dtype=np.float32)
    a2 = np.empty(BLOCK_PIXELS, dtype=np.float32)
    a3 = np.empty(BLOCK_PIXELS, dtype=np.float32)
    count = np.empty(BLOCK_PIXELS, dtype=np.int32)
    c0 = np.empty(BLOCK_PIXELS, dtype=np.float32)
    c1 = np.empty(BLOCK_PIXELS, dtype=np.float32)
    c2 = np.empty(BLOCK_PIXELS, dtype=np.float32)
    c3 = np.empty(BLOCK_PIXELS, dtype=np.float32)
    ssr32 = np.empty(BLOCK_PIXELS, dtype=np.float32)
    coef = np.empty((4, BLOCK_PIXELS))
    inv11 = np.empty(BLOCK_PIXELS)
    fitted = np.empty(BLOCK_PIXELS, dtype=np.bool_)
    gty = np.empty(4)
    n_ent = np.empty(10)
    lower = np.empty((4, 4))
    z = np.empty(4)
    g32 = g.astype(np.float32)
    cp32 = col_products.astype(np.float32)
    miss = np.empty((10, BLOCK_PIXELS), dtype=np.float32)
    first = np.empty(BLOCK_PIXELS, dtype=np.int32)
    last = np.empty(BLOCK_PIXELS, dtype=np.int32)
    for start in range(0, n_pix, BLOCK_PIXELS):
        nb = min(BLOCK_PIXELS, n_pix - start)
        a0[:] = 0.0
        a1[:] = 0.0
        a2[:] = 0.0
        a3[:] = 0.0
        count[:] = 0
        # Pass 1 (the one read from memory): GᵀY over the valid dates and their count.
        for t in range(n_dates):
            g0 = g32[t, 0]
            g1 = g32[t, 1]
            g2 = g32[t, 2]
            g3 = g32[t, 3]
            row = flat[t, start : start + nb]
            for p in range(nb):
                y = np.float32(row[p])
                ok = abs(y) < inf
                yv = y if ok else zero
                a0[p] += g0 * yv
                a1[p] += g1 * yv
                a2[p] += g2 * yv
                a3[p] += g3 * yv
                count[p] += np.int32(ok)
        # Blocks with gaps (from cache, vectorised): each pixel's missing dates' normal-matrix
        # products (float32, as few dates are missing) and its first and last valid date.
        has_gaps = False
        for p in range(nb):
            if count[p] < n_dates:
                has_gaps = True
        if has_gaps:
            miss[:, :] = 0.0
            first[:] = -1
            last[:] = -1
            for t in range(n_dates):
                row = flat[t, start : start + nb]
                for k in range(10):
                    cp = cp32[t, k]
                    mk = miss[k]
                    for p in range(nb):
                        mk[p] += zero if abs(np.float32(row[p])) < inf else cp
                tt = np.int32(t)
                for p in range(nb):
                    ok = abs(np.float32(row[p])) < inf
                    last[p] = tt if ok else last[p]
                    first[p] = tt if (ok and first[p] < 0) else first[p]
        # Solve per pixel.
        for p in range(nb):
            n = count[p]
            n_valid[start + p] = n
            fitted[p] = False
            gty[0] = a0[p]
            gty[1] = a1[p]
            gty[2] = a2[p]
            gty[3] = a3[p]
            if not full_ok or n < min_valid:
                continue
            if n == n_dates:
                for i in range(4):
                    coef[i, p] = (
                        inv_full[i, 0] * gty[0]
                        + inv_full[i, 1] * gty[1]
                        + inv_full[i, 2] * gty[2]
                        + inv_full[i, 3] * gty[3]
                    )
                inv11[p] = inv_full[1, 1]
                fitted[p] = True
                continue
            # Gaps: the normal matrix is the full one minus the missing dates' products.
            for k in range(10):
                n_ent[k] = col_totals[k] - np.float64(miss[k, p])
            if t_years[last[p]] - t_years[first[p]] < min_span:
                continue
            # Cholesky N = L Lᵀ on the 10 unique entries (row-major upper triangle).
            singular = False
            for j in range(4):
                njj = n_ent[_pair(j, j)]
                acc = njj
                for k in range(j):
                    acc -= lower[j, k] * lower[j, k]
                if not acc > pivot_rtol * abs(njj):
                    singular = True
                    break
                ljj = math.sqrt(acc)
                lower[j, j] = ljj
                for i in range(j + 1, 4):
                    acc = n_ent[_pair(j, i)]
                    for k in range(j):
                        acc -= lower[i, k] * lower[j, k]
                    lower[i, j] = acc / ljj
            if singular:
                continue
            for i in range(4):
                acc = gty[i]
                for k in range(i):
                    acc -= lower[i, k] * z[k]
                z[i] = acc / lower[i, i]
            for i in range(3, -1, -1):
                acc = z[i]
                for k in range(i + 1, 4):
                    acc -= lower[k, i] * coef[k, p]
                coef[i, p] = acc / lower[i, i]
            # [N⁻¹]₁₁ = ‖L⁻¹ e₁‖²; L⁻¹ e₁ has a zero first entry.
            w1 = 1.0 / lower[1, 1]
            w2 = -lower[2, 1] * w1 / lower[2, 2]
            w3 = -(lower[3, 1] * w1 + lower[3, 2] * w2) / lower[3, 3]
            inv11[p] = w1 * w1 + w2 * w2 + w3 * w3
            fitted[p] = True
        # Pass 2 (from cache): explicit float32 residuals over the valid dates.
        for p in range(nb):
            c0[p] = coef[0, p] if fitted[p] else zero
            c1[p] = coef[1, p] if fitted[p] else zero
            c2[p] = coef[2, p] if fitted[p] else zero
            c3[p] = coef[3, p] if fitted[p] else zero
        ssr32[:] = 0.0
        for t in range(n_dates):
            g1 = g32[t, 1]
            g2 = g32[t, 2]
            g3 = g32[t, 3]
            row = flat[t, start : start + nb]
            for p in range(nb):
                y = np.float32(row[p])
                r = y - (c0[p] + g1 * c1[p] + g2 * c2[p] + g3 * c3[p])
                ssr32[p] += r * r if abs(y) < inf else zero
        # The published fields.
        for p in range(nb):
            q = start + p
            if not fitted[p]:
                for f in range(6):
                    out[f, q] = nan
                continue
            n = np.float64(count[p])
            a = coef[0, p] * to_mm
            b = coef[1, p] * to_mm
            c = coef[2, p] * to_mm
            d = coef[3, p] * to_mm
            ssr_mm2 = np.float64(ssr32[p]) * to_mm * to_mm
            half_amp = math.sqrt(c * c + d * d)
            out[0, q] = b
            out[1, q] = math.sqrt(ssr_mm2 / (n - 4.0) * inv11[p])
            out[2, q] = 2.0 * half_amp
            if half_amp > 0.0:
                # c·cos(ωt) + d·sin(ωt) = R·cos(ωt − φ), φ = atan2(d, c): maxima at φ/ω + kT.
                # float32 atan2 (as numpy's vectorised one before): ~1e-7 rad is ~1e-5 day.
                phase = np.float64(math.atan2(np.float32(d), np.float32(c)))
                t_peak = (phase / two_pi * period_years) % period_years
                peak_days = first_days + t_peak * 365.25
                day = math.floor(peak_days)
                k = 0
                while k + 1 < year_starts.size and year_starts[k + 1] <= day:
                    k += 1
                out[3, q] = peak_days - year_starts[k] + 1.0
            else:
                out[3, q] = nan
            out[4, q] = a
            out[5, q] = math.sqrt(ssr_mm2 / n)


@numba.njit(cache=True, inline="always")
def _pair(i: int, j: int) -> int:
    """Index of the normal-matrix entry (i, j), i ≤ j, in row-major upper-triangle order."""
    return i * 4 - i * (i - 1) // 2 + (j - i)
