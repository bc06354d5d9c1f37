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
    return dem.astype(np.float64)


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


def _gradients(
    dem_m: np.ndarray, transform: affine.Affine, geographic: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Horn gradients dz/d(east) and dz/d(north) (m/m), NaN on the edge ring and near NaN."""
    dem = _check(dem_m, transform)
    ny, nx = dem.shape
    dz_east = np.full((ny, nx), np.nan)
    dz_north = np.full((ny, nx), np.nan)
    if ny < 3 or nx < 3:
        return dz_east, dz_north
    ew, ns = _pixel_size_m(transform, ny, geographic)

    def win(dy: int, dx: int) -> np.ndarray:
        return dem[1 + dy : ny - 1 + dy, 1 + dx : nx - 1 + dx]

    # Column/row index grows east/south for a north-up transform; the signs below assume so and
    # are flipped for grids stored the other way round.
    east_sign = 1.0 if transform.a > 0 else -1.0
    north_sign = 1.0 if transform.e < 0 else -1.0
    right = win(-1, 1) + 2 * win(0, 1) + win(1, 1)
    left = win(-1, -1) + 2 * win(0, -1) + win(1, -1)
    top = win(-1, -1) + 2 * win(-1, 0) + win(-1, 1)
    bottom = win(1, -1) + 2 * win(1, 0) + win(1, 1)
    # NaN anywhere in the window propagates through these sums, as required.
    dz_east[1:-1, 1:-1] = east_sign * (right - left) / (8.0 * ew[1:-1])
    dz_north[1:-1, 1:-1] = north_sign * (top - bottom) / (8.0 * ns[1:-1])
    # Horn's stencil skips the centre cell; a missing centre still means no value there.
    centre_nan = np.isnan(dem)
    dz_east[centre_nan] = np.nan
    dz_north[centre_nan] = np.nan
    return dz_east, dz_north


def slope_aspect(
    dem_m: np.ndarray, transform: affine.Affine, *, geographic: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Slope (degrees) and aspect (degrees from north, clockwise, downslope) by Horn's method.

    Matches ``gdaldem slope`` and ``gdaldem aspect`` on projected square-pixel grids. Flat cells
    get :data:`FLAT_ASPECT`. For non-square pixels the aspect uses the metric gradient (gdaldem
    ignores the pixel size for aspect). Returns two float32 arrays shaped like ``dem_m``.
    """
    dz_east, dz_north = _gradients(dem_m, transform, geographic)
    slope_deg = np.degrees(np.arctan(np.hypot(dz_east, dz_north)))
    # Downslope direction (−∇z) as an azimuth: atan2(east component, north component).
    aspect_deg = np.mod(np.degrees(np.arctan2(-dz_east, -dz_north)), 360.0)
    aspect_deg = np.where(aspect_deg >= 360.0, 0.0, aspect_deg)
    flat = (dz_east == 0) & (dz_north == 0)
    aspect_deg = np.where(flat, FLAT_ASPECT, aspect_deg)
    return slope_deg.astype(np.float32), aspect_deg.astype(np.float32)


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
