"""GeoParquet 1.1: validator conformance, round trip, covering bbox, CRS."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import geoparquet_validator as gpv
import pyarrow.parquet as pq
import pytest
import shapely

from ftlcloud.errors import InputError
from ftlcloud.io.geoparquet import read_geoparquet, write_geoparquet
from ftlcloud.io.store import Store


def _inventory() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"id": [1, 2], "kind": ["point", "polygon"], "area_ha": [0.0, 1.5]},
        geometry=[
            shapely.Point(500_100, 4_199_000),
            shapely.box(500_000, 4_198_000, 500_300, 4_198_500),
        ],
        crs="EPSG:32647",
    )


def test_geoparquet_is_valid_1_1_and_round_trips(tmp_path: Path) -> None:
    store = Store(tmp_path)
    gdf = _inventory()
    info = write_geoparquet(store, "inv.parquet", gdf)
    path = store.href("inv.parquet")
    report = gpv.check(path)
    assert gpv.failed(report) == [], report["outcomes"]
    meta = json.loads(pq.read_schema(path).metadata[b"geo"])
    assert meta["version"] == "1.1.0"
    col = meta["columns"]["geometry"]
    assert col["encoding"] == "WKB"
    assert col["crs"]["id"] == {"authority": "EPSG", "code": 32647}  # PROJJSON
    assert col["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"
    back = read_geoparquet(store, "inv.parquet")
    assert list(back.columns) == list(gdf.columns)
    assert back.crs == gdf.crs
    assert back.geom_equals(gdf.geometry).all()
    assert info.table["table:row_count"] == 2
    assert info.proj["proj:bbox"] == [500000.0, 4198000.0, 500300.0, 4199000.0]


def test_geoparquet_needs_crs(tmp_path: Path) -> None:
    gdf = _inventory().set_crs(None, allow_override=True)
    with pytest.raises(InputError, match="has no CRS"):
        write_geoparquet(Store(tmp_path), "x.parquet", gdf)
