"""Tests of ftlcloud.science.terrain against the real gdaldem and an analytic geographic plane."""

from __future__ import annotations

import subprocess
from pathlib import Path

import affine
import numpy as np
import pytest
import rasterio
from pyproj import Transformer

from ftlcloud.errors import InputError
from ftlcloud.science.terrain import FLAT_ASPECT, hillshade, slope_aspect

INNER = (slice(1, -1), slice(1, -1))  # gdaldem leaves the outer ring as nodata


def _rough_dem(ny: int = 180, nx: int = 220, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:ny, 0:nx]
    dem = (
        3500.0
        + 300.0 * np.sin(x / 30.0) * np.cos(y / 25.0)
        + 80.0 * np.sin((x + 2 * y) / 9.0)
        + rng.normal(0.0, 4.0, (ny, nx))
    )
    dem[40:70, 50:95] = 3600.0  # flat plateau
    dem[120:150, 10:30] = 3210.5  # flat lake
    return dem.astype(np.float32)


@pytest.fixture(scope="module")
def gdaldem_outputs(tmp_path_factory: pytest.TempPathFactory):
    """A projected DEM GeoTIFF and gdaldem's slope, aspect and hillshade of it."""
    folder: Path = tmp_path_factory.mktemp("gdaldem")
    dem = _rough_dem()
    transform = affine.Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 4200000.0)
    src = folder / "dem.tif"
    profile = {
        "driver": "GTiff",
        "height": dem.shape[0],
        "width": dem.shape[1],
        "count": 1,
        "dtype": "float32",
        "crs": "EPSG:32647",
        "transform": transform,
    }
    with rasterio.open(src, "w", **profile) as dst:
        dst.write(dem, 1)
    out = {}
    for product in ("slope", "aspect", "hillshade"):
        path = folder / f"{product}.tif"
        subprocess.run(["gdaldem", product, str(src), str(path), "-q"], check=True)
        with rasterio.open(path) as ds:
            out[product] = ds.read(1).astype(np.float64)
    return dem, transform, out


def test_slope_and_aspect_match_gdaldem(gdaldem_outputs):
    dem, transform, ref = gdaldem_outputs
    slope_deg, aspect_deg = slope_aspect(dem, transform)
    assert slope_deg.dtype == aspect_deg.dtype == np.float32
    assert slope_deg.shape == aspect_deg.shape == dem.shape
    np.testing.assert_allclose(slope_deg[INNER], ref["slope"][INNER], atol=0.01)
    steep = ref["slope"][INNER] > 1.0
    assert steep.mean() > 0.5
    diff = (aspect_deg[INNER] - ref["aspect"][INNER] + 180.0) % 360.0 - 180.0
    assert np.abs(diff[steep]).max() < 0.05
    gdal_flat = ref["aspect"][INNER] == -9999
    assert gdal_flat.sum() > 500
    assert np.array_equal(gdal_flat, aspect_deg[INNER] == FLAT_ASPECT)
    assert ((aspect_deg[INNER][~gdal_flat] >= 0) & (aspect_deg[INNER][~gdal_flat] < 360)).all()
    # The edge ring has no full 3x3 window.
    for edge in (slope_deg[0], slope_deg[-1], slope_deg[:, 0], aspect_deg[:, -1]):
        assert np.isnan(edge).all()


def test_hillshade_matches_gdaldem(gdaldem_outputs):
    dem, transform, ref = gdaldem_outputs
    shade = hillshade(dem, transform)
    assert shade.dtype == np.float32
    assert np.abs(shade[INNER] - ref["hillshade"][INNER]).max() <= 1.0
    assert np.isnan(shade[0]).all()


def test_nan_window_and_tiling_with_halo():
    dem = _rough_dem(60, 70, seed=3).astype(np.float64)
    dem[20, 30] = np.nan
    transform = affine.Affine(30.0, 0.0, 0.0, 0.0, -30.0, 0.0)
    slope_deg, aspect_deg = slope_aspect(dem, transform)
    nan = np.isnan(slope_deg)
    expected = np.zeros_like(nan)
    expected[19:22, 29:32] = True
    expected[[0, -1], :] = True
    expected[:, [0, -1]] = True
    assert np.array_equal(nan, expected)
    assert np.array_equal(np.isnan(aspect_deg), expected)
    # A tile with a one-pixel halo, trimmed, equals the whole-raster result.
    r0, r1, c0, c1 = 10, 40, 25, 60
    tile_transform = transform @ affine.Affine.translation(c0 - 1, r0 - 1)
    tile_slope, tile_aspect = slope_aspect(dem[r0 - 1 : r1 + 1, c0 - 1 : c1 + 1], tile_transform)
    np.testing.assert_array_equal(tile_slope[1:-1, 1:-1], slope_deg[r0:r1, c0:c1])
    np.testing.assert_array_equal(tile_aspect[1:-1, 1:-1], aspect_deg[r0:r1, c0:c1])


def _horn_float64(dem: np.ndarray, pixel_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Textbook Horn slope/aspect in float64 with the eight shifted windows (reference)."""
    z = dem.astype(np.float64)

    def w(dy: int, dx: int) -> np.ndarray:
        return z[1 + dy : z.shape[0] - 1 + dy, 1 + dx : z.shape[1] - 1 + dx]

    east = (w(-1, 1) + 2 * w(0, 1) + w(1, 1) - w(-1, -1) - 2 * w(0, -1) - w(1, -1)) / (8 * pixel_m)
    north = (w(-1, -1) + 2 * w(-1, 0) + w(-1, 1) - w(1, -1) - 2 * w(1, 0) - w(1, 1)) / (8 * pixel_m)
    slope = np.degrees(np.arctan(np.hypot(east, north)))
    aspect = np.mod(np.degrees(np.arctan2(-east, -north)), 360.0)
    return slope, aspect


@pytest.mark.parametrize("block_cells", [None, 64 * 8])
def test_float32_row_blocks_match_float64_horn(monkeypatch, block_cells):
    # High, gentle terrain is where float32 loses most: 4500 m with slopes of ~0.3–3°.
    import ftlcloud.science.terrain as terrain

    if block_cells is not None:  # force many row blocks (8 rows each) to test their seams
        monkeypatch.setattr(terrain, "_BLOCK_CELLS", block_cells)
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:150, 0:64]
    dem = 4500.0 + 0.4 * x + 0.25 * y + 3.0 * np.sin(x / 7.0) + rng.normal(0, 0.05, x.shape)
    dem32 = dem.astype(np.float32)
    slope_deg, aspect_deg = slope_aspect(dem32, affine.Affine(30.0, 0, 0, 0, -30.0, 0))
    ref_slope, ref_aspect = _horn_float64(dem32, 30.0)
    np.testing.assert_allclose(slope_deg[INNER], ref_slope, atol=1e-4)
    diff = (aspect_deg[INNER] - ref_aspect + 180.0) % 360.0 - 180.0
    assert np.abs(diff).max() < 1e-3


def test_geographic_dem_of_an_analytic_plane():
    # A plane z = z0 + gx·E + gy·N in a local transverse Mercator frame (scale 1, centred on the
    # DEM, computed by PROJ independently of terrain.py's ellipsoid radii), sampled on a 1"
    # lon/lat grid at 38°N. Over ±1.5 km TM scale error is < 1e-7 and meridian convergence
    # < 0.012°, which bounds the expected error of aspect; slope is exact to ~1e-5°.
    lon0, lat0, step = 100.0, 38.0, 1.0 / 3600.0
    ny = nx = 101
    transform = affine.Affine(step, 0.0, lon0 - step * nx / 2, 0.0, -step, lat0 + step * ny / 2)
    rows, cols = np.mgrid[0:ny, 0:nx]
    lon = transform.c + transform.a * (cols + 0.5)
    lat = transform.f + transform.e * (rows + 0.5)
    to_local = Transformer.from_crs(
        "EPSG:4326", f"+proj=tmerc +lat_0={lat0} +lon_0={lon0} +k=1 +ellps=WGS84", always_xy=True
    )
    east_m, north_m = to_local.transform(lon, lat)
    gx, gy = 0.2, -0.35
    dem = 3000.0 + gx * east_m + gy * north_m
    slope_deg, aspect_deg = slope_aspect(dem, transform, geographic=True)
    true_slope = np.degrees(np.arctan(np.hypot(gx, gy)))
    true_aspect = np.degrees(np.arctan2(-gx, -gy)) % 360.0
    np.testing.assert_allclose(slope_deg[INNER], true_slope, atol=1e-3)
    np.testing.assert_allclose(aspect_deg[INNER], true_aspect, atol=0.02)
    # Treating degrees as metres would be grossly wrong: the conversion is what makes it work.
    naive_slope, _ = slope_aspect(dem, transform, geographic=False)
    assert np.nanmin(naive_slope) > 89.0
    # A plane is evenly lit; the convergence-induced aspect drift moves it by < 0.01 grey.
    shade = hillshade(dem, transform, geographic=True)
    assert np.nanmax(shade) - np.nanmin(shade) < 0.02


def test_input_errors():
    transform = affine.Affine(30.0, 0.0, 0.0, 0.0, -30.0, 0.0)
    with pytest.raises(InputError, match="2-D"):
        slope_aspect(np.zeros((2, 3, 3)), transform)
    with pytest.raises(InputError, match="rotated"):
        slope_aspect(np.zeros((5, 5)), affine.Affine(30.0, 1.0, 0.0, 0.0, -30.0, 0.0))
    with pytest.raises(InputError, match="latitudes"):
        slope_aspect(
            np.zeros((5, 5)), affine.Affine(30, 0, 500000, 0, -30, 4200000), geographic=True
        )
