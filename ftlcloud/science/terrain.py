"""Slope, aspect and hillshade by Horn's method, as ``gdaldem slope|aspect|hillshade``.

The outermost ring of cells (no full 3×3 window) and any cell whose window holds a NaN are NaN,
so tiles processed with a one-pixel halo and trimmed equal whole-raster processing.
A geographic DEM (degrees per pixel, e.g. EPSG:4326) is converted to metres per row, from the
row's latitude on the WGS84 ellipsoid, before the gradients are taken.
"""

from __future__ import annotations

import logging

import affine
import numpy as np

from ftlcloud.errors import InputError

logger = logging.getLogger(__name__)

FLAT_ASPECT: float = -1.0
"""Aspect given to flat cells (both Horn gradients exactly zero). gdaldem writes its nodata value
(-9999) there; -1 keeps flat cells distinguishable from NaN (no data) and outside 0–360."""

_WGS84_A_M = 6378137.0
_WGS84_F = 1.0 / 298.257223563
_WGS84_E2 = _WGS84_F * (2.0 - _WGS84_F)


# Cells per row block: float32 temporaries of 512 KB stay in L2 cache, where the full-raster
# float64 temporaries made the kernel memory-bound (4096² DEM: 16–32 rows measured fastest).
_BLOCK_CELLS = 1 << 17


def _check(dem_m: np.ndarray, transform: affine.Affine) -> np.ndarray:
    dem = np.asarray(dem_m)
    if dem.ndim != 2:
        raise InputError(f"dem_m must be a 2-D (y, x) array; got shape {dem.shape}")
    if not np.issubdtype(dem.dtype, np.number):
        raise InputError(f"dem_m dtype {dem.dtype} is not numeric")
    if not isinstance(transform, affine.Affine):
        raise InputError(f"transform must be an affine.Affine; got {type(transform).__name__}")
    if transform.b != 0 or transform.d != 0:
        raise InputError(
            f"transform {tuple(transform)[:6]} is rotated or sheared; warp the DEM to a "
            "north-up grid first"
        )
    if transform.a == 0 or transform.e == 0:
        raise InputError(f"transform {tuple(transform)[:6]} has a zero pixel size")
    return dem


def _pixel_size_m(
    transform: affine.Affine, n_rows: int, geographic: bool
) -> tuple[np.ndarray, np.ndarray]:
    """East-west and north-south pixel sizes in metres, per row (column vectors)."""
    if not geographic:
        ew = np.full((n_rows, 1), abs(transform.a))
        ns = np.full((n_rows, 1), abs(transform.e))
        return ew, ns
    lat_deg = transform.f + transform.e * (np.arange(n_rows) + 0.5)
    if np.abs(lat_deg).max() > 90:
        raise InputError(
            f"geographic=True but row latitudes reach {np.abs(lat_deg).max():.3f}°; "
            "is the DEM really in degrees (EPSG:4326)?"
        )
    phi = np.deg2rad(lat_deg)
    w = 1.0 - _WGS84_E2 * np.sin(phi) ** 2
    meridional_m = _WGS84_A_M * (1.0 - _WGS84_E2) / w**1.5
    prime_vertical_m = _WGS84_A_M / np.sqrt(w)
    ew = prime_vertical_m * np.cos(phi) * np.deg2rad(abs(transform.a))
    ns = meridional_m * np.deg2rad(abs(transform.e))
    return ew[:, None], ns[:, None]


class _Horn:
    """Horn gradients of a DEM, computed on demand for blocks of interior rows (float32)."""

    def __init__(self, dem_m: np.ndarray, transform: affine.Affine, geographic: bool) -> None:
        self.dem = _check(dem_m, transform)
        ny = self.dem.shape[0]
        ew, ns = _pixel_size_m(transform, ny, geographic)
        # Column/row index grows east/south for a north-up transform; the signs below assume so
        # and are flipped for grids stored the other way round.
        east_sign = 1.0 if transform.a > 0 else -1.0
        north_sign = 1.0 if transform.e < 0 else -1.0
        self.east_scale = (east_sign / (8.0 * ew)).astype(np.float32)
        self.north_scale = (north_sign / (8.0 * ns)).astype(np.float32)

    def block(self, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
        """dz/d(east) and dz/d(north) (m/m) of rows r0..r1-1, all columns; r0 ≥ 1, r1 ≤ ny-1.

        The first and last columns and cells whose 3×3 window holds a NaN are NaN.
        """
        a = np.asarray(self.dem[r0 - 1 : r1 + 1], dtype=np.float32)
        nx = a.shape[1]
        # Horn's stencil is separable: a central difference, then (1, 2, 1) across. Differences
        # first: neighbouring elevations differ little, so float32 subtracts them exactly
        # (Sterbenz) and the sums then carry small numbers; summing first (values ~4·z) lost
        # ~1e-3 m and shifted the aspect of gentle slopes by a few hundredths of a degree.
        d_east = a[:, 2:] - a[:, :-2]
        d_north = a[:-2] - a[2:]
        dz_east = np.empty((r1 - r0, nx), dtype=np.float32)
        dz_north = np.empty((r1 - r0, nx), dtype=np.float32)
        dz_east[:, [0, -1]] = np.nan
        dz_north[:, [0, -1]] = np.nan
        inner_e, inner_n = dz_east[:, 1:-1], dz_north[:, 1:-1]
        np.add(d_east[:-2], d_east[2:], out=inner_e)
        inner_e += d_east[1:-1]
        inner_e += d_east[1:-1]
        np.add(d_north[:, :-2], d_north[:, 2:], out=inner_n)
        inner_n += d_north[:, 1:-1]
        inner_n += d_north[:, 1:-1]
        # Horn's stencil skips the centre cell; a missing centre still means no value there:
        # adding centre × 0 (NaN only where the centre is NaN) is cheaper than a masked write.
        centre_zero = a[1:-1, 1:-1] * np.float32(0.0)
        inner_e += centre_zero
        inner_n += centre_zero
        dz_east *= self.east_scale[r0:r1]
        dz_north *= self.north_scale[r0:r1]
        return dz_east, dz_north

    def blocks(self) -> list[tuple[int, int]]:
        ny, nx = self.dem.shape
        rows = max(8, _BLOCK_CELLS // max(nx, 1))
        return [(r, min(r + rows, ny - 1)) for r in range(1, ny - 1, rows)]


def _gradients(
    dem_m: np.ndarray, transform: affine.Affine, geographic: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Horn gradients dz/d(east) and dz/d(north) (m/m, float32), NaN on the edge ring and near
    NaN."""
    horn = _Horn(dem_m, transform, geographic)
    ny, nx = horn.dem.shape
    dz_east = np.full((ny, nx), np.nan, dtype=np.float32)
    dz_north = np.full((ny, nx), np.nan, dtype=np.float32)
    if ny < 3 or nx < 3:
        return dz_east, dz_north
    for r0, r1 in horn.blocks():
        dz_east[r0:r1], dz_north[r0:r1] = horn.block(r0, r1)
    return dz_east, dz_north


_DEG_PER_RAD = np.float32(180.0 / np.pi)


def slope_aspect(
    dem_m: np.ndarray, transform: affine.Affine, *, geographic: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Slope (degrees) and aspect (degrees from north, clockwise, downslope) by Horn's method.

    Matches ``gdaldem slope`` and ``gdaldem aspect`` on projected square-pixel grids. Flat cells
    get :data:`FLAT_ASPECT`. For non-square pixels the aspect uses the metric gradient (gdaldem
    ignores the pixel size for aspect). Returns two float32 arrays shaped like ``dem_m``.
    """
    horn = _Horn(dem_m, transform, geographic)
    ny, nx = horn.dem.shape
    slope_deg = np.full((ny, nx), np.nan, dtype=np.float32)
    aspect_deg = np.full((ny, nx), np.nan, dtype=np.float32)
    if ny < 3 or nx < 3:
        return slope_deg, aspect_deg
    # float32 in cache-sized row blocks, in place: GDAL computes in float too, and the results
    # stay within 0.01° of gdaldem (tests/test_terrain.py).
    for r0, r1 in horn.blocks():
        dz_east, dz_north = horn.block(r0, r1)
        flat = (dz_east == 0) & (dz_north == 0)
        # sqrt(x² + y²) rather than hypot: 3x faster, and gradients never come near overflow.
        slope = np.multiply(dz_east, dz_east, out=slope_deg[r0:r1])
        slope += dz_north * dz_north
        np.sqrt(slope, out=slope)
        np.arctan(slope, out=slope)
        slope *= _DEG_PER_RAD
        # Downslope azimuth atan2(−e, −n) = 180° + atan2(e, n), in (0°, 360°]; 360° is north, 0.
        aspect = np.arctan2(dz_east, dz_north, out=aspect_deg[r0:r1])
        aspect *= _DEG_PER_RAD
        aspect += np.float32(180.0)
        np.copyto(aspect, np.float32(0.0), where=aspect >= np.float32(360.0))
        np.copyto(aspect, np.float32(FLAT_ASPECT), where=flat)
    return slope_deg, aspect_deg


def hillshade(
    dem_m: np.ndarray,
    transform: affine.Affine,
    *,
    geographic: bool = False,
    azimuth_deg: float = 315.0,
    altitude_deg: float = 45.0,
) -> np.ndarray:
    """Shaded relief 1..255 (float32) as ``gdaldem hillshade`` (Horn, z factor 1); NaN edges."""
    dz_east, dz_north = _gradients(dem_m, transform, geographic)
    az = np.deg2rad(azimuth_deg)
    alt = np.deg2rad(altitude_deg)
    # gdaldem's formula with x = −dz/deast, y = dz/dnorth:
    # cang = (sin(alt) − cos(alt)·(y·cos(az) − x·sin(az))) / sqrt(1 + x² + y²).
    with np.errstate(invalid="ignore"):
        cang = (
            np.sin(alt) - np.cos(alt) * (dz_north * np.cos(az) + dz_east * np.sin(az))
        ) / np.sqrt(1.0 + dz_east**2 + dz_north**2)
        shade = np.where(cang <= 0.0, 1.0, 1.0 + 254.0 * cang)
    shade = np.where(np.isnan(cang), np.nan, shade)
    return shade.astype(np.float32)
