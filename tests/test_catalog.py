"""The STAC catalog: layout, relative hrefs, publish checks, extents, validation, relocation."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from ftlcloud.errors import CatalogError
from ftlcloud.io.catalog import Catalog, build_item, collection_ids, collection_template
from ftlcloud.io.cog import write_cog
from ftlcloud.io.store import Store

T = Affine(30, 0, 500_000, 0, -30, 4_200_000)
UTC = dt.UTC


def _publish(store: Store, day: str) -> str:
    info = write_cog(
        store, f"inputs/deformation/{day}.tif", np.ones((8, 8), "float32"), transform=T, crs=32647
    )
    item = build_item(
        f"deformation-{day}",
        {"displacement": info},
        datetime=dt.datetime.strptime(day, "%Y%m%d").replace(tzinfo=UTC),
    )
    return Catalog(store).add_item(item, "deformation")


def test_templates_exist_and_validate(stac_validate) -> None:
    ids = collection_ids()
    for cid in [
        "deformation",
        "dem",
        "ndvi",
        "inventory",
        "ftl-factors",
        "ftl-iterations",
        "ftl-inventories",
    ]:
        assert cid in ids
        assert collection_template(cid)["id"] == cid
    stac_validate([Path(__file__).resolve().parents[1] / "catalogs"])
    with pytest.raises(CatalogError, match="no STAC collection template 'nope'"):
        collection_template("nope")


def test_layout_links_extent_and_validation(tmp_path: Path, stac_validate) -> None:
    store = Store(tmp_path / "st")
    _publish(store, "20200113")
    href = _publish(store, "20200101")
    assert href == store.href("deformation/deformation-20200101/deformation-20200101.json")
    cat = Catalog(store)
    assert [i.id for i in cat.items("deformation")] == [
        "deformation-20200101",
        "deformation-20200113",
    ]
    doc = json.loads(store.read_text("deformation/deformation-20200101/deformation-20200101.json"))
    assert doc["assets"]["displacement"]["href"] == "../../inputs/deformation/20200101.tif"
    assert {lk["rel"]: lk["href"] for lk in doc["links"]}["root"] == "../../catalog.json"
    coll = json.loads(store.read_text("deformation/collection.json"))
    assert coll["extent"]["temporal"]["interval"] == [
        ["2020-01-01T00:00:00Z", "2020-01-13T00:00:00Z"]
    ]
    assert coll["extent"]["spatial"]["bbox"][0] == doc["bbox"]
    assert len([lk for lk in coll["links"] if lk["rel"] == "item"]) == 2
    assert cat.collection_ids() == ["deformation"]
    assert cat.is_complete("deformation", "deformation-20200101")
    stac_validate([tmp_path / "st"])
    # pystac, through the store's StacIO, walks the same tree.
    root = cat.pystac_catalog()
    assert sorted(i.id for i in root.get_items(recursive=True)) == [
        "deformation-20200101",
        "deformation-20200113",
    ]


def test_relocated_catalog_still_resolves(tmp_path: Path) -> None:
    _publish(Store(tmp_path / "a"), "20200101")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    item = Catalog(Store(tmp_path / "b")).get_item("deformation", "deformation-20200101")
    assert item is not None
    assert item.assets["displacement"].get_absolute_href() == str(
        tmp_path / "b/inputs/deformation/20200101.tif"
    )


def test_add_item_refuses_missing_or_changed_assets(tmp_path: Path) -> None:
    store = Store(tmp_path)
    info = write_cog(store, "x.tif", np.ones((4, 4), "float32"), transform=T, crs=32647)
    item = build_item("x", {"data": info}, datetime=dt.datetime(2020, 1, 1, tzinfo=UTC))
    store.write_bytes("x.tif", b"truncated")
    with pytest.raises(CatalogError, match=r"asset 'data' of item 'x'.*9 bytes but file:size says"):
        Catalog(store).add_item(item, "deformation")
    store.delete("x.tif")
    with pytest.raises(CatalogError, match="does not exist; write the data before the item"):
        Catalog(store).add_item(item, "deformation")
    assert not Catalog(store).has_item("deformation", "x")
    item.assets["data"].href = str(tmp_path.parent / "outside.tif")
    with pytest.raises(CatalogError, match="is not inside store"):
        Catalog(store).add_item(item, "deformation")
