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
from scipy import ndimage

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
    (_a, b, c, d), *_ = np.linalg.lstsq(g, y_mm[ok], rcond=None)
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


def test_dates_are_the_papers_82_acquisitions_every_12_days(scene: Scene) -> None:
    dates = scene.dates
    assert len(dates) == 82
    assert dates[0] == dt.date(2017, 3, 25)
    assert dates[-1] == dt.date(2019, 12, 28)
    steps = np.diff([d.toordinal() for d in dates])
    assert set(steps.tolist()) == {12, 24}  # 12-day revisit, three single missing slots
    assert int((steps == 24).sum()) == 85 - 82
    assert scene.displacement_m.shape == (82, *scene.dem_m.shape)
    assert scene.displacement_m.dtype == np.float32


def test_terrain_is_qilian_like(scene: Scene) -> None:
    dem = scene.dem_m
    assert dem.min() >= 3300.0 and dem.max() <= 4800.0
    assert dem.max() - dem.min() > 1300.0
    slope, _ = _slope_aspect(dem, scene.spec.resolution_m)
    assert 0.55 < np.mean((slope >= 5) & (slope <= 35)) < 0.95
    assert np.mean(slope < 1.0) > 0.03  # flat valley floors exist
    assert np.mean(slope > 60.0) < 0.01


def test_landslide_fit_recovers_velocity_and_amplitude(scene: Scene) -> None:
    """An independent Eq. 1 fit on core pixels returns each landslide's attributes."""
    t = scene.times_years
    for row in scene.truth.itertuples():
        assert 10.0 <= abs(row.velocity_mm_a) <= 90.0
        assert 9.0 <= row.seasonal_amplitude_mm <= 21.0
        rows, cols = _pixel_rows_cols(scene, row.geometry)
        mask = np.zeros(scene.dem_m.shape, bool)
        mask[rows, cols] = True
        core = ndimage.binary_erosion(mask, np.ones((3, 3), bool))
        # Tolerances ~3 sigma of the injected noise (atmosphere of a few mm per date, doubled by
        # referencing); the rim moves at 85 % of the core, and tiny landslides may be all rim.
        v_tol, a_tol = 3.0, 4.5
        if core.any():
            rows, cols = np.nonzero(core)
        else:
            v_tol += 0.15 * abs(row.velocity_mm_a)
            a_tol += 0.15 * row.seasonal_amplitude_mm
        fits = [
            _fit_eq1(t, scene.displacement_m[:, r, c].astype(float) * 1000.0)
            for r, c in list(zip(rows, cols, strict=True))[:3]
        ]
        v_fit = np.median([f[0] for f in fits])
        a_fit = np.median([f[1] for f in fits])
        assert v_fit == pytest.approx(row.velocity_mm_a, abs=v_tol), row.id
        assert a_fit == pytest.approx(row.seasonal_amplitude_mm, abs=a_tol), row.id


def test_velocity_bands_give_every_iteration_new_landslides(scene: Scene) -> None:
    truth = scene.truth
    thresholds = [np.inf, 50.0, 40.0, 30.0, 20.0, 10.0]
    for k in range(1, 6):
        speed = truth.loc[truth["expected_iteration"] == k, "velocity_mm_a"].abs()
        assert speed.between(thresholds[k], thresholds[k - 1]).all()
        new = truth[(truth["expected_iteration"] == k) & ~truth["in_inventory"]]
        assert len(new) >= 1, f"iteration {k} would find nothing new"


def test_landslides_face_mostly_north_and_northwest(scene: Scene) -> None:
    _, aspect = _slope_aspect(scene.dem_m, scene.spec.resolution_m)
    northish = 0
    for row in scene.truth.itertuples():
        rows, cols = _pixel_rows_cols(scene, row.geometry)
        rad = np.radians(aspect[rows, cols])
        mean = np.degrees(np.arctan2(np.sin(rad).mean(), np.cos(rad).mean())) % 360
        northish += bool(mean >= 270 or mean < 60)
        assert 3500 < scene.dem_m[rows, cols].mean() < 4450
    assert northish / len(scene.truth) >= 0.7
    truth = scene.truth
    assert (truth["velocity_mm_a"] < 0).mean() >= 0.6  # mostly away from the satellite
    assert truth["area_ha"].between(1.9, 60.0).all()
    assert truth["small"].mean() >= 0.5
    assert 1 <= truth["hidden"].sum() < len(truth)


def test_ndvi_loss_matches_hidden_flag_on_the_ndvi_grid(scene: Scene) -> None:
    ntr = scene.ndvi_transform
    assert ntr.a == 25.0 and ntr.e == -25.0
    assert (ntr.c, ntr.f) == (scene.transform.c - 12.5, scene.transform.f + 12.5)
    delta = scene.ndvi_2019.astype(float) - scene.ndvi_2017.astype(float)
    for row in scene.truth.itertuples():
        mask = rasterio.features.rasterize(
            [(row.geometry, 1)], out_shape=delta.shape, transform=ntr, dtype="uint8"
        ).astype(bool)
        mean = delta[mask].mean()
        if row.hidden:
            assert mean > -0.1, row.id
        else:
            assert mean < -0.08, row.id


def test_background_is_stable_and_has_gaps_and_incoherent_areas(scene: Scene) -> None:
    disp = scene.displacement_m
    all_nan = np.isnan(disp).all(axis=0)
    assert 0.005 < all_nan.mean() < 0.3  # incoherent areas
    coherent_gaps = np.isnan(disp[1:, ~all_nan]).mean()
    assert 0.02 <= coherent_gaps <= 0.05
    assert not np.isnan(disp[0, ~all_nan]).any()  # the reference date is complete, all zero
    assert np.all(disp[0, ~all_nan] == 0.0)
    ry, rx = scene.reference_yx
    assert np.all(disp[:, ry, rx] == 0.0)
    movers = np.zeros(scene.dem_m.shape, bool)
    for geom in [*scene.truth.geometry, *scene.decoys.geometry]:
        r, c = _pixel_rows_cols(scene, geom.buffer(60.0))
        movers[r, c] = True
    rng = np.random.default_rng(0)
    rows, cols = np.nonzero(~movers & ~all_nan)
    pick = rng.choice(rows.size, 40, replace=False)
    fits = [
        _fit_eq1(scene.times_years, disp[:, rows[i], cols[i]].astype(float) * 1000.0) for i in pick
    ]
    speeds = np.abs([f[0] for f in fits])
    amps = np.array([f[1] for f in fits])
    assert np.mean(speeds < 5.0) >= 0.8
    assert np.all(speeds < 10.0)
    assert np.median(amps) < 6.5  # small seasonal signal, mostly 2-6 mm
    assert np.mean(amps < 9.0) >= 0.85  # below the FTLs' 9-21 mm


def test_decoys_lie_where_intended(scene: Scene) -> None:
    slope, aspect = _slope_aspect(scene.dem_m, scene.spec.resolution_m)
    kinds = set(scene.decoys["kind"])
    assert kinds == {"subsidence", "rock_glacier", "south_slope"}
    for row in scene.decoys.itertuples():
        rows, cols = _pixel_rows_cols(scene, row.geometry)
        assert abs(row.velocity_mm_a) >= 30.0
        if row.kind == "subsidence":
            assert np.percentile(slope[rows, cols], 90) < 1.0, row.id
        elif row.kind == "rock_glacier":
            assert scene.dem_m[rows, cols].mean() > 4500.0, row.id
        else:
            rad = np.radians(aspect[rows, cols])
            mean = np.degrees(np.arctan2(np.sin(rad).mean(), np.cos(rad).mean())) % 360
            assert 135.0 <= mean <= 225.0, row.id
            assert row.seasonal_amplitude_mm < 9.0
    overlaps = gpd.sjoin(scene.decoys, scene.truth, predicate="intersects")
    assert overlaps.empty


def test_inventory_covers_part_of_the_landslides(scene: Scene) -> None:
    inv = scene.inventory
    truth = scene.truth.set_index("id")
    assert 0.25 <= len(inv) / len(truth) <= 0.45
    assert set(inv["kind"]) == {"point", "polygon"}
    assert set(inv["id"]) == set(truth.index[truth["in_inventory"]])
    for row in inv.itertuples():
        poly = truth.loc[row.id, "geometry"]
        if row.kind == "point":
            assert row.geometry.geom_type == "Point" and poly.contains(row.geometry)
        else:
            assert row.geometry.geom_type == "Polygon"
            assert row.geometry.intersection(poly).area / poly.area > 0.8


def test_written_hdf5_has_the_mintpy_layout(scene: Scene, written: ScenePaths) -> None:
    from mintpy.objects import timeseries
    from mintpy.utils import readfile

    with h5py.File(written.timeseries_h5, "r") as f:
        assert f["timeseries"].dtype == np.float32
        assert f["timeseries"].shape == scene.displacement_m.shape
        assert f["date"][0] == b"20170325" and f["date"][-1] == b"20191228"
        np.testing.assert_array_equal(f["timeseries"][7], scene.displacement_m[7])
    atr = readfile.read_attribute(str(written.timeseries_h5))
    assert atr["FILE_TYPE"] == "timeseries" and atr["UNIT"] == "m"
    assert float(atr["X_FIRST"]) == scene.transform.c
    assert float(atr["Y_FIRST"]) == scene.transform.f
    assert float(atr["X_STEP"]) == 30.0 and float(atr["Y_STEP"]) == -30.0
    assert atr["EPSG"] == "32647" and atr["REF_DATE"] == "20170325"
    assert (int(atr["LENGTH"]), int(atr["WIDTH"])) == scene.dem_m.shape
    ts = timeseries(str(written.timeseries_h5))
    ts.open(print_msg=False)
    assert ts.numDate == 82
    data, _ = readfile.read(str(written.timeseries_h5), datasetName="20180107")
    i = scene.dates.index(dt.date(2018, 1, 7))
    np.testing.assert_array_equal(data, scene.displacement_m[i])


def test_mintpy_time_function_agrees_with_truth(scene: Scene, written: ScenePaths) -> None:
    """MintPy's own Eq. 1 fit; its annual amplitude is sqrt(c^2+d^2) in metres, half of A."""
    from mintpy.utils import time_func

    row = scene.truth.loc[scene.truth["area_ha"].idxmax()]
    rows, cols = _pixel_rows_cols(scene, row.geometry.buffer(-60.0))
    r, c = rows[0], cols[0]
    series = scene.displacement_m[:, r, c]
    ok = np.isfinite(series)
    date_list = [d.strftime("%Y%m%d") for d, v in zip(scene.dates, ok, strict=True) if v]
    model = {"polynomial": 1, "periodic": [1.0]}
    m = time_func.estimate_time_func(model, date_list, series[ok].astype(float)[:, None])[1]
    velocity_mm_a = float(m[1, 0]) * 1000.0
    amplitude_mm = 2.0 * float(np.hypot(m[2, 0], m[3, 0])) * 1000.0
    assert velocity_mm_a == pytest.approx(row["velocity_mm_a"], abs=3.0)
    assert amplitude_mm == pytest.approx(row["seasonal_amplitude_mm"], abs=3.0)


def test_written_rasters_read_back_with_crs_and_grid(scene: Scene, written: ScenePaths) -> None:
    assert len(written.dem) == 4
    mosaic = np.full(scene.dem_m.shape, np.nan, np.float32)
    for path in written.dem:
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 32647
            col, row = ~scene.transform @ (src.transform.c, src.transform.f)
            r0, c0 = round(row), round(col)
            mosaic[r0 : r0 + src.height, c0 : c0 + src.width] = src.read(1)
    np.testing.assert_array_equal(mosaic, scene.dem_m)
    for year, path in written.ndvi.items():
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 32647
            assert src.transform == scene.ndvi_transform
            np.testing.assert_array_equal(src.read(1), scene.ndvi[year])
    assert len(written.deformation_tifs) == 82
    with rasterio.open(written.deformation_tifs[10]) as src:
        assert src.crs.to_epsg() == 32647 and src.transform == scene.transform
        assert src.tags()["UNIT"] == "m"
        assert src.tags()["DATE"] == scene.dates[10].strftime("%Y%m%d")
        np.testing.assert_array_equal(src.read(1), scene.displacement_m[10])
        assert Path(src.name).stem == scene.dates[10].strftime("%Y%m%d")


def test_written_vectors_and_json_read_back(scene: Scene, written: ScenePaths) -> None:
    import json

    import pyarrow.parquet as pq

    inv = gpd.read_file(written.inventory)
    assert inv.crs.to_epsg() == 32647
    assert list(inv["kind"]) == list(scene.inventory["kind"])
    assert set(inv.geom_type) == {"Point", "Polygon"}
    truth = gpd.read_parquet(written.truth)
    assert truth.crs.to_epsg() == 32647
    assert len(truth) == len(scene.truth) + len(scene.decoys)
    assert set(truth["kind"]) == {"ftl", "subsidence", "rock_glacier", "south_slope"}
    geo = json.loads(pq.read_metadata(written.truth).metadata[b"geo"])
    assert geo["version"] == "1.1.0"
    assert "covering" in geo["columns"]["geometry"]
    doc = json.loads(written.scene_json.read_text())
    assert doc["spec"]["seed"] == scene.spec.seed
    assert len(doc["spec"]["dates"]) == 82


def test_summary_and_presets() -> None:
    small = SceneSpec.preset("small")
    assert (small.width, small.height) == (200, 160)
    assert SceneSpec.sized(2.0).width == 1200
    with pytest.raises(ConfigError, match="unknown scene preset"):
        SceneSpec.preset("huge")
    with pytest.raises(ConfigError, match="missing_slots"):
        SceneSpec(missing_slots=(0,))


def test_scene_summary_counts(scene: Scene) -> None:
    summary = scene_summary(scene)
    assert summary["n_dates"] == 82
    assert summary["n_landslides"] == len(scene.truth)
    assert summary["n_hidden"] == int(scene.truth["hidden"].sum())
    assert summary["n_small"] == int((scene.truth["area_ha"] < 10).sum())
    assert summary["n_in_inventory"] + summary["n_missing_from_inventory"] == len(scene.truth)
    assert sum(summary["decoys"].values()) == len(scene.decoys)
