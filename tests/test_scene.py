"""Tests of the synthetic study area (ftlcloud.demo.scene), on the 'small' preset.

Every check is computed independently of the package: velocities and amplitudes by a plain
np.linalg.lstsq fit of Eq. 1 (and MintPy's own time-function fit), slope/aspect by np.gradient,
the HDF5 layout read back by MintPy's readers, rasters by rasterio, vectors by geopandas.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import geopandas as gpd
import h5py
import numpy as np
import pytest
import rasterio
import rasterio.features

from ftlcloud.demo.scene import (
    Scene,
    ScenePaths,
    SceneSpec,
    generate_scene,
    scene_summary,
    write_scene,
)
from ftlcloud.errors import ConfigError


@pytest.fixture(scope="module")
def scene() -> Scene:
    return generate_scene(SceneSpec.preset("small"))


@pytest.fixture(scope="module")
def written(scene: Scene, tmp_path_factory: pytest.TempPathFactory) -> ScenePaths:
    out = tmp_path_factory.mktemp("scene")
    return write_scene(scene, out, per_date_geotiffs=True, dem_tiles=True)


def _fit_eq1(t_years: np.ndarray, y_mm: np.ndarray) -> tuple[float, float]:
    """Velocity (mm/a) and peak-to-peak amplitude (mm) of Eq. 1 by least squares, NaNs dropped."""
    ok = np.isfinite(y_mm)
    t = t_years[ok]
    g = np.column_stack([np.ones_like(t), t, np.cos(2 * np.pi * t), np.sin(2 * np.pi * t)])
    (a, b, c, d), *_ = np.linalg.lstsq(g, y_mm[ok], rcond=None)
    return float(b), float(2 * np.hypot(c, d))


def _pixel_rows_cols(scene: Scene, geom) -> tuple[np.ndarray, np.ndarray]:
    mask = rasterio.features.rasterize(
        [(geom, 1)], out_shape=scene.dem_m.shape, transform=scene.transform, dtype="uint8"
    ).astype(bool)
    return np.nonzero(mask)


def _slope_aspect(dem: np.ndarray, res: float) -> tuple[np.ndarray, np.ndarray]:
    dz_drow, dz_dcol = np.gradient(dem.astype(float), res)
    east, north = dz_dcol, -dz_drow
    slope = np.degrees(np.arctan(np.hypot(east, north)))
    aspect = np.degrees(np.arctan2(-east, -north)) % 360
    return slope, aspect


def test_same_seed_same_scene_and_other_seed_differs(scene: Scene) -> None:
    again = generate_scene(SceneSpec.preset("small"))
    np.testing.assert_array_equal(again.dem_m, scene.dem_m)
    np.testing.assert_array_equal(again.displacement_m, scene.displacement_m)
    np.testing.assert_array_equal(again.ndvi_2019, scene.ndvi_2019)
    assert again.truth.geometry.equals(scene.truth.geometry)
    other = generate_scene(SceneSpec.preset("small", seed=8))
    assert not np.array_equal(other.dem_m, scene.dem_m)
    assert not other.truth.geometry.equals(scene.truth.geometry)
