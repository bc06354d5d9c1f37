"""Ingest: deformation (GeoTIFFs and MintPy HDF5), DEM tiles, NDVI, inventories; bad inputs."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

import geopandas as gpd
import geoparquet_validator as gpv
import h5py
import numpy as np
import pytest
import rasterio
import shapely
from conftest import DATES, write_geotiff

from ftlcloud.errors import InputError
from ftlcloud.io.catalog import Catalog
from ftlcloud.io.cog import validate_cog
from ftlcloud.io.geoparquet import read_geoparquet
from ftlcloud.io.ingest import (
    ingest_deformation_geotiffs,
    ingest_dem,
    ingest_inventory,
    ingest_mintpy_h5,
    ingest_ndvi,
)
from ftlcloud.io.store import Store


def _mm(arr_m: np.ndarray) -> np.ndarray:
    out = arr_m.astype("float64") * 1000.0
    out[arr_m == -9999.0] = np.nan
    return out.astype("float32")


def _ingest_all(store: Store, inputs: dict[str, Any]) -> dict[str, Any]:
    return {
        "deformation": ingest_deformation_geotiffs(store, inputs["deformation_dir"], unit="m"),
        "dem": ingest_dem(store, inputs["dem_paths"]),
        "ndvi": ingest_ndvi(store, inputs["ndvi_paths"]),
        "inventory": ingest_inventory(store, inputs["inventory_path"]),
    }


def _check_store(store: Store, inputs: dict[str, Any]) -> None:
    """Every COG read back through GDAL (local path or /vsis3/) equals its source; all valid."""
    for day, arr in inputs["deformation_m"].items():
        key = f"inputs/deformation/{day}.tif"
        with store.rasterio_env(), rasterio.open(store.gdal_path(key)) as src:
            np.testing.assert_array_equal(src.read(1), _mm(arr))
            assert src.units == ("mm",)
        assert validate_cog(store, key) == (True, [], [])
    for name, arr in inputs["dem"].items():
        with store.rasterio_env(), rasterio.open(store.gdal_path(f"inputs/dem/{name}.tif")) as src:
            np.testing.assert_array_equal(src.read(1), arr)
        assert validate_cog(store, f"inputs/dem/{name}.tif")[0]
    for year, arr in inputs["ndvi"].items():
        with store.rasterio_env(), rasterio.open(store.gdal_path(f"inputs/ndvi/{year}.tif")) as src:
            np.testing.assert_array_equal(src.read(1), arr)
            assert src.res == (60.0, 60.0)
        assert validate_cog(store, f"inputs/ndvi/{year}.tif")[0]
    data = store.read_bytes("inputs/inventory/initial.parquet")
    assert gpv.failed(gpv.check_bytes("initial.parquet", data)) == []
    back = gpd.read_parquet(io.BytesIO(data))
    assert back.geom_equals(inputs["inventory"].geometry).all()
    assert list(back["kind"]) == ["polygon", "point"]
    assert list(read_geoparquet(store, "inputs/inventory/initial.parquet")["name"]) == [
        "slump A",
        "slump B",
    ]


def _validate_catalog(store: Store, dest: Path, stac_validate: Any) -> None:
    for key in store.list():
        if key.endswith(".json"):
            (dest / key).parent.mkdir(parents=True, exist_ok=True)
            (dest / key).write_bytes(store.read_bytes(key))
    out = stac_validate([dest])
    assert "13 STAC documents checked" in out  # catalog + 4 collections + 3+2+2+1 items


def test_ingest_everything_locally(
    tmp_path: Path, input_files: dict[str, Any], stac_validate
) -> None:
    store = Store(tmp_path / "store")
    items = _ingest_all(store, input_files)
    assert [i.id for i in items["deformation"]] == [f"deformation-{d}" for d in DATES]
    first = items["deformation"][0]
    assert first.datetime == dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    assert first.properties["ftlcloud:source_file"] == "S1_20200101_disp.tif"
    assert first.properties["ftlcloud:source_unit"] == "m"
    assert [i.id for i in items["ndvi"]] == ["ndvi-2017", "ndvi-2019"]
    assert items["ndvi"][0].properties["start_datetime"] == "2017-01-01T00:00:00Z"
    assert items["inventory"].id == "inventory-initial"
    _check_store(store, input_files)
    _validate_catalog(store, tmp_path / "stac-copy", stac_validate)
    cat = Catalog(store)
    assert sorted(cat.collection_ids()) == ["deformation", "dem", "inventory", "ndvi"]
    assert [i.id for i in cat.items("dem")] == ["dem-dem_e", "dem-dem_w"]


@pytest.mark.integration
def test_ingest_everything_to_seaweedfs(
    s3_store: Store, input_files: dict[str, Any], tmp_path: Path, stac_validate
) -> None:
    _ingest_all(s3_store, input_files)
    assert s3_store.gdal_path("x.tif").startswith("/vsis3/")
    _check_store(s3_store, input_files)
    _validate_catalog(s3_store, tmp_path / "stac-copy", stac_validate)
    item = Catalog(s3_store).get_item("deformation", "deformation-20200113")
    assert item is not None
    assert item.assets["displacement"].get_absolute_href() == s3_store.href(
        "inputs/deformation/20200113.tif"
    )
    root = Catalog(s3_store).pystac_catalog()
    assert len(list(root.get_items(recursive=True))) == 8


def _write_mintpy(path: Path, ts_m: np.ndarray, dates: list[str], **attrs: Any) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("timeseries", data=ts_m)
        f.create_dataset("date", data=np.array([d.encode() for d in dates]))
        base = {
            "FILE_TYPE": "timeseries",
            "UNIT": "m",
            "X_FIRST": "99.5",
            "Y_FIRST": "38.2",
            "X_STEP": "0.0008333",
            "Y_STEP": "-0.0008333",
            "EPSG": "4326",
            "LENGTH": str(ts_m.shape[1]),
            "WIDTH": str(ts_m.shape[2]),
        }
        base.update(attrs)
        for k, v in base.items():
            if v is not None:
                f.attrs[k] = v
    return path


def test_ingest_mintpy_h5(tmp_path: Path, stac_validate) -> None:
    rng = np.random.default_rng(3)
    ts = rng.normal(0, 0.01, (3, 12, 15)).astype("float32")
    ts[0] = 0.0
    h5 = _write_mintpy(
        tmp_path / "geo_timeseries_ERA5_ramp_demErr.h5", ts, ["20190110", "20181229", "20190122"]
    )
    store = Store(tmp_path / "store")
    items = ingest_mintpy_h5(store, h5)
    assert [i.id for i in items] == [
        "deformation-20181229",
        "deformation-20190110",
        "deformation-20190122",
    ]
    with rasterio.open(store.href("inputs/deformation/20181229.tif")) as src:
        np.testing.assert_allclose(src.read(1), ts[1] * 1000, rtol=1e-6)
        assert src.crs.to_epsg() == 4326
        assert src.transform.c == pytest.approx(99.5) and src.transform.f == pytest.approx(38.2)
        assert src.transform.e == pytest.approx(-0.0008333)
    stac_validate([store.url])


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"EPSG": None}, "no EPSG attribute"),
        ({"Y_FIRST": None}, "radar coordinates"),
        ({"LENGTH": "99"}, "disagrees with 'timeseries'"),
    ],
)
def test_mintpy_bad_files(tmp_path: Path, attrs: dict[str, Any], message: str) -> None:
    h5 = _write_mintpy(
        tmp_path / "timeseries.h5",
        np.zeros((2, 4, 5), "float32"),
        ["20200101", "20200113"],
        **attrs,
    )
    store = Store(tmp_path / "store")
    with pytest.raises(InputError, match=message) as info:
        ingest_mintpy_h5(store, h5)
    assert "timeseries.h5" in str(info.value)
    assert store.list() == []


def test_mintpy_duplicate_and_unparseable_dates(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    h5 = _write_mintpy(tmp_path / "a.h5", np.zeros((2, 4, 5), "float32"), ["20200101", "20200101"])
    with pytest.raises(InputError, match="duplicate acquisition date 20200101"):
        ingest_mintpy_h5(store, h5)
    h5 = _write_mintpy(tmp_path / "b.h5", np.zeros((2, 4, 5), "float32"), ["20200101", "2020x113"])
    with pytest.raises(InputError, match="cannot parse the date '2020x113'"):
        ingest_mintpy_h5(store, h5)
    bad = tmp_path / "c.h5"
    bad.write_text("not hdf5")
    with pytest.raises(InputError, match=r"c.h5: not a readable HDF5 file"):
        ingest_mintpy_h5(store, bad)
    assert store.list() == []


def test_deformation_date_from_tag_and_mm_unit(tmp_path: Path) -> None:
    arr = np.full((5, 6), 3.5, "float32")
    write_geotiff(
        tmp_path / "in" / "first.tif", arr, tags={"TIFFTAG_DATETIME": "2021:06:30 00:00:00"}
    )
    write_geotiff(tmp_path / "in" / "second.tif", arr * 2, tags={"ACQUISITION_DATE": "2021-07-12"})
    store = Store(tmp_path / "store")
    items = ingest_deformation_geotiffs(store, tmp_path / "in", unit="mm")
    assert [i.id for i in items] == ["deformation-20210630", "deformation-20210712"]
    with rasterio.open(store.href("inputs/deformation/20210712.tif")) as src:
        np.testing.assert_array_equal(src.read(1), arr * 2)


def _bad(store: Store, files: Any, match: str, unit: str = "m") -> None:
    with pytest.raises(InputError, match=match):
        ingest_deformation_geotiffs(store, files, unit=unit)  # type: ignore[arg-type]
    assert store.list() == [], "nothing may be written when an input is refused"


def test_bad_deformation_inputs(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    a = np.zeros((5, 6), "float32")
    ok = write_geotiff(tmp_path / "d_20200101.tif", a)
    _bad(store, [ok], "unit 'km'", unit="km")
    _bad(
        store,
        [ok, write_geotiff(tmp_path / "nocrs_20200113.tif", a, crs=None)],
        "nocrs_20200113.tif: has no CRS",
    )
    _bad(
        store,
        [ok, write_geotiff(tmp_path / "again_20200101.tif", a)],
        "duplicate acquisition date 20200101: d_20200101.tif and again_20200101.tif",
    )
    _bad(
        store,
        [ok, write_geotiff(tmp_path / "bad_20201345.tif", a)],
        "cannot parse the date '20201345'",
    )
    _bad(
        store, [ok, write_geotiff(tmp_path / "undated.tif", a)], "undated.tif: no acquisition date"
    )
    _bad(
        store,
        [ok, write_geotiff(tmp_path / "shift_20200113.tif", a, origin_xy=(500_015.0, 4_200_000.0))],
        "must share one grid: d_20200101.tif is .* but shift_20200113.tif",
    )
    _bad(
        store,
        [ok, write_geotiff(tmp_path / "big_20200113.tif", np.zeros((6, 6), "float32"))],
        "share one grid",
    )
    garbage = tmp_path / "broken_20200113.tif"
    garbage.write_bytes(b"II*\x00garbage")
    _bad(store, [ok, garbage], "broken_20200113.tif: not a readable raster")
    _bad(store, [tmp_path / "missing_20200101.tif"], "missing_20200101.tif: no such file")


def test_deformation_must_match_existing_grid(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    ingest_deformation_geotiffs(
        store, [write_geotiff(tmp_path / "a_20200101.tif", np.zeros((5, 6), "float32"))], unit="m"
    )
    with pytest.raises(InputError, match="not on the grid of the 'deformation' collection"):
        ingest_deformation_geotiffs(
            store,
            [write_geotiff(tmp_path / "b_20200113.tif", np.zeros((7, 6), "float32"))],
            unit="m",
        )
    assert not store.exists("inputs/deformation/20200113.tif")


def test_bad_dem_and_ndvi(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    a = np.zeros((5, 6), "float32")
    w = write_geotiff(tmp_path / "w.tif", a)
    with pytest.raises(InputError, match=r"e.tif is not aligned to the pixel grid of w.tif"):
        ingest_dem(
            store, [w, write_geotiff(tmp_path / "e.tif", a, origin_xy=(500_195.0, 4_200_000.0))]
        )
    with pytest.raises(InputError, match="must share CRS and pixel size"):
        ingest_dem(store, [w, write_geotiff(tmp_path / "c.tif", a, resolution=10.0)])
    with pytest.raises(InputError, match=r"outside \[-1, 1\]; scaled integers"):
        ingest_ndvi(
            store, {2019: write_geotiff(tmp_path / "n.tif", np.full((4, 4), 8000, "int16"))}
        )
    with pytest.raises(InputError, match="cannot tell the NDVI year"):
        ingest_ndvi(store, [write_geotiff(tmp_path / "ndvi.tif", a)])
    with pytest.raises(InputError, match="two NDVI rasters for 2019"):
        ingest_ndvi(
            store,
            [write_geotiff(tmp_path / "x_2019.tif", a), write_geotiff(tmp_path / "y_2019.tif", a)],
        )
    assert store.list() == []


@pytest.mark.parametrize("suffix", [".geojson", ".shp", ".parquet", ".gpkg"])
def test_inventory_formats(tmp_path: Path, input_files: dict[str, Any], suffix: str) -> None:
    inv = input_files["inventory"].to_crs("EPSG:4326")
    if suffix == ".shp":  # a shapefile holds one geometry type: the points alone
        inv = inv.iloc[1:].reset_index(drop=True)
    path = tmp_path / f"inv{suffix}"
    if suffix == ".parquet":
        inv.to_parquet(path)
    else:
        inv.to_file(path)
    store = Store(tmp_path / "store")
    ingest_deformation_geotiffs(store, input_files["deformation_dir"], unit="m")
    item = ingest_inventory(store, path, name="v1")
    back = read_geoparquet(store, "inputs/inventory/v1.parquet")
    kinds = ["point"] if suffix == ".shp" else ["polygon", "point"]
    assert list(back["kind"]) == kinds
    assert back.to_crs(inv.crs).geom_equals_exact(inv.geometry, tolerance=1e-9).all()
    assert item.properties["ftlcloud:n_polygons"] == kinds.count("polygon")


@pytest.mark.filterwarnings("ignore:.crs. was not provided")
def test_bad_inventories(tmp_path: Path, input_files: dict[str, Any]) -> None:
    store = Store(tmp_path / "store")
    ingest_deformation_geotiffs(store, input_files["deformation_dir"], unit="m")
    before = store.list()
    far = gpd.GeoDataFrame(geometry=[shapely.Point(10.0, 45.0)], crs="EPSG:4326")
    far.to_file(tmp_path / "far.gpkg")
    with pytest.raises(
        InputError,
        match=r"far.gpkg: no landslide of the inventory lies inside the deformation extent",
    ):
        ingest_inventory(store, tmp_path / "far.gpkg")
    empty = gpd.GeoDataFrame({"a": []}, geometry=[], crs="EPSG:4326")
    empty.to_file(tmp_path / "empty.geojson")
    with pytest.raises(InputError, match=r"empty.geojson: the inventory is empty"):
        ingest_inventory(store, tmp_path / "empty.geojson")
    nocrs = gpd.GeoDataFrame(geometry=[shapely.Point(500_100, 4_199_000)])
    nocrs.to_file(tmp_path / "nocrs.shp")
    with pytest.raises(InputError, match=r"nocrs.shp: has no CRS"):
        ingest_inventory(store, tmp_path / "nocrs.shp")
    lines = gpd.GeoDataFrame(
        geometry=[shapely.LineString([(500_100, 4_199_000), (500_200, 4_199_100)])], crs=32647
    )
    lines.to_file(tmp_path / "lines.gpkg")
    with pytest.raises(
        InputError, match=r"geometry types \['LineString'\] are not points or polygons"
    ):
        ingest_inventory(store, tmp_path / "lines.gpkg")
    (tmp_path / "junk.gpkg").write_text("junk")
    with pytest.raises(InputError, match=r"junk.gpkg: cannot read it"):
        ingest_inventory(store, tmp_path / "junk.gpkg")
    with pytest.raises(InputError, match="name 'a/b' is not usable"):
        ingest_inventory(store, input_files["inventory_path"], name="a/b")
    assert store.list() == before
