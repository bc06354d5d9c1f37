"""The STAC API: ``ftlcloud serve`` (stac-fastapi-pgstac over a pgstac index) on a real S3 store.

The integration tests run the loop on a real SeaweedFS store, start the real ``ftlcloud serve``
(an embedded PostgreSQL with PostGIS, pgstac, uvicorn) as a subprocess, and query it with
pystac-client's real ``search``. The expected results come from the static catalog in the store,
filtered here in Python: an independent path to the same answer.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import psycopg
import pystac
import pytest
import rasterio
import rioxarray
import shapely
import stackstac
from pystac_client import Client

from ftlcloud.demo.scene import Scene
from ftlcloud.errors import CatalogError, ConfigError, StoreError
from ftlcloud.io import ingest
from ftlcloud.io.catalog import Catalog
from ftlcloud.io.s3server import LocalS3Server, free_ports
from ftlcloud.io.settings import StoreSettings
from ftlcloud.io.store import Store
from ftlcloud.pipeline.cluster import ClusterSpec
from ftlcloud.pipeline.loop import ReferenceReviewer, iterate
from ftlcloud.pipeline.run import FactorSettings
from ftlcloud.science.rules import parse_rules
from ftlcloud.stacapi.index import PgstacIndex, asset_href, index_item
from ftlcloud.stacapi.postgres import LocalPostgres
from ftlcloud.stacapi.server import postgres_settings
from tests.conftest import ingest_scene, use_credentials

RUN = "stac"


# --- pure parts -----------------------------------------------------------------------------


def test_asset_hrefs_for_each_mode(tmp_path: Path) -> None:
    local = Store(str(tmp_path))
    assert asset_href(local, "runs/a/x.tif") == str(tmp_path / "runs/a/x.tif")
    with pytest.raises(ConfigError, match="needs an s3:// store"):
        asset_href(local, "runs/a/x.tif", "http")
    s3 = Store(
        "s3://bkt/proj",
        StoreSettings(endpoint_url="http://127.0.0.1:9000", path_style=True, use_tls=False),
    )
    assert asset_href(s3, "runs/a/x.tif") == "s3://bkt/proj/runs/a/x.tif"
    assert (
        asset_href(s3, "runs/a/x y.tif", "http")
        == "http://127.0.0.1:9000/bkt/proj/runs/a/x%20y.tif"
    )
    aws = Store("s3://bkt", StoreSettings(region="eu-west-1"))
    assert asset_href(aws, "k.tif", "http") == "https://bkt.s3.eu-west-1.amazonaws.com/k.tif"
    with pytest.raises(ConfigError, match="needs a local store"):
        asset_href(s3, "k.tif", "local")


def test_index_item_makes_hrefs_absolute_and_drops_tree_links(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    doc = {
        "id": "r-it01",
        "assets": {"mask": {"href": "../../runs/r/it01/mask.tif"}},
        "links": [
            {"rel": "root", "href": "../../catalog.json"},
            {"rel": "parent", "href": "../collection.json"},
            {"rel": "derived_from", "href": "../../ftl-factors/r-factors/r-factors.json"},
            {"rel": "license", "href": "https://example.org/licence"},
        ],
    }
    out = index_item(store, "ftl-iterations/r-it01/r-it01.json", doc, "auto")
    assert out["assets"]["mask"]["href"] == str(tmp_path / "runs/r/it01/mask.tif")
    assert [lk["rel"] for lk in out["links"]] == ["derived_from", "license"]
    assert out["links"][0]["href"] == str(tmp_path / "ftl-factors/r-factors/r-factors.json")
    assert out["links"][1]["href"] == "https://example.org/licence"
    assert doc["assets"]["mask"]["href"].startswith("../")  # the input is not modified


def test_postgres_settings_from_url() -> None:
    pg = postgres_settings("postgresql://u%40x:p%2Fw@db.example:6543/stac")
    assert (pg.pguser, pg.pgpassword, pg.pghost, pg.pgport, pg.pgdatabase) == (
        "u@x",
        "p/w",
        "db.example",
        6543,
        "stac",
    )
    with pytest.raises(ConfigError, match="postgresql://"):
        postgres_settings("mysql://db/x")


def test_serve_refuses_a_store_without_catalog_and_an_unreachable_database(
    tmp_path: Path,
) -> None:
    from click.testing import CliRunner

    from ftlcloud.cli import cli

    empty = tmp_path / "nothing-here"
    index = PgstacIndex("postgresql://u:sekrit@127.0.0.1:1/db")
    with pytest.raises(CatalogError, match=r"no STAC catalog at .*nothing-here/catalog.json"):
        index.sync(Store(str(empty)))
    assert not empty.exists()  # looking did not create a catalog
    port = free_ports(1)[0]
    res = CliRunner().invoke(
        cli, ["serve", "--store", str(tmp_path), "--port", str(port), "--pgstac",
              f"postgresql://u:sekrit@127.0.0.1:{port}/db"],
    )  # fmt: skip
    assert isinstance(res.exception, StoreError)
    message = str(res.exception)
    assert f"127.0.0.1:{port}/db" in message and "check --pgstac" in message
    assert "sekrit" not in message


# --- the index against a real PostgreSQL ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.integration
def test_index_sync_upserts_changes_and_deletes_vanished_items(
    tmp_path: Path, input_files: dict[str, Any]
) -> None:
    store = Store(str(tmp_path / "store"))
    ingest.ingest_inventory(store, input_files["inventory_path"], name="a")
    ingest.ingest_inventory(store, input_files["inventory_path"], name="b")
    with LocalPostgres() as pg:
        index = PgstacIndex(pg.dsn)
        assert index.migrate()
        first = index.sync(store)
        assert sorted(first.upserted) == ["inventory/inventory-a", "inventory/inventory-b"]
        assert not index.sync(store).changed  # nothing new: nothing written
        store.delete(Catalog.item_key("inventory", "inventory-b"))
        third = index.sync(store)
        assert third.deleted == ["inventory/inventory-b"] and not third.upserted
        with psycopg.connect(pg.dsn) as conn:
            rows = conn.execute("SELECT id, content->'assets' FROM pgstac.items").fetchall()
        assert [r[0] for r in rows] == ["inventory-a"]
        # the index holds absolute hrefs into the store
        href = next(iter(rows[0][1].values()))["href"]
        assert Path(href).is_file() and Path(href).is_relative_to(tmp_path / "store")


# --- ftlcloud serve on a real S3 store ----------------------------------------------------------


@pytest.fixture(scope="module")
def served(
    s3_server: LocalS3Server,
    scene: Scene,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Store, str]]:
    """A store on the S3 server with two iterations of a run, and ``ftlcloud serve`` over it."""
    with pytest.MonkeyPatch.context() as mp:
        use_credentials(mp, s3_server)
        store = Store(s3_server.store_url(f"api-{uuid.uuid4().hex[:8]}"), s3_server.settings())
        ingest_scene(store, scene, tmp_path_factory.mktemp("api-scene"))
        iterate(
            store,
            RUN,
            rules=parse_rules("derived"),
            reviewer=ReferenceReviewer(scene.truth),
            settings=FactorSettings(tile_size=64),
            # a LocalCluster started now, so its workers inherit the credentials set above
            cluster=ClusterSpec(n_workers=2),
            max_iterations=2,
            progress=False,
        )
        port = free_ports(1)[0]
        log = tmp_path_factory.mktemp("serve") / "serve.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "ftlcloud"), "-v", "serve", "--store", store.url,
                 "--port", str(port), "--sync-interval", "1"],
                env={**os.environ, **s3_server.env()},
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            url = f"http://127.0.0.1:{port}"
            try:
                _wait_ready(url, proc, log)
                yield store, url
            finally:
                proc.terminate()
                proc.wait(timeout=30)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ftlcloud serve exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/_mgmt/ping", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"ftlcloud serve not ready:\n{log.read_text()}")


def _ids(items: Any) -> set[str]:
    return {it.id for it in items}


def _overlaps(item: pystac.Item, bbox: list[float]) -> bool:
    return bool(item.bbox) and shapely.box(*item.bbox).intersects(shapely.box(*bbox))


def _when(item: pystac.Item) -> tuple[dt.datetime, dt.datetime]:
    p = item.properties
    if item.datetime is not None:
        return item.datetime, item.datetime
    start = pystac.utils.str_to_datetime(p["start_datetime"])
    return start, pystac.utils.str_to_datetime(p["end_datetime"])


@pytest.mark.slow
@pytest.mark.integration
def test_search_by_bbox_datetime_and_property(served: tuple[Store, str]) -> None:
    store, url = served
    catalog = Catalog(store)
    client = Client.open(url)
    assert client.conforms_to("ITEM_SEARCH") and client.conforms_to("FILTER")
    everything = {c: catalog.items(c) for c in catalog.collection_ids()}
    assert {c.id for c in client.get_collections()} == set(everything)

    # bbox + datetime + a property filter, across every collection
    defo = everything["deformation"]
    aoi = list(defo[0].bbox)  # type: ignore[arg-type]
    half = [aoi[0], aoi[1], (aoi[0] + aoi[2]) / 2, aoi[3]]
    start = pystac.utils.str_to_datetime("2000-01-01T00:00:00Z")
    end = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    found = client.search(
        bbox=half,
        datetime=[start, end],
        filter={"op": "=", "args": [{"property": "ftl:run_id"}, RUN]},
        filter_lang="cql2-json",
    )
    expected = {
        it.id
        for items in everything.values()
        for it in items
        if it.properties.get("ftl:run_id") == RUN
        and _overlaps(it, half)
        and _when(it)[1] >= start
        and _when(it)[0] <= end
    }
    assert {f"{RUN}-factors", f"{RUN}-it01", f"{RUN}-it02"} <= expected
    assert _ids(found.items()) == expected

    # the iteration number as a property, CQL2 text
    second = client.search(
        collections=["ftl-iterations"], filter=f'"ftl:iteration" = 2 AND "ftl:run_id" = \'{RUN}\''
    )
    assert _ids(second.items()) == {f"{RUN}-it02"}

    # a datetime window over the deformation time series: exactly the dates inside it
    dates = sorted(it.datetime for it in defo if it.datetime is not None)
    lo, hi = dates[10], dates[20]
    window = client.search(collections=["deformation"], datetime=[lo, hi], limit=7)
    want = {it.id for it in defo if it.datetime is not None and lo <= it.datetime <= hi}
    assert len(want) == 11 and _ids(window.items()) == want  # paged 7 at a time

    # a bbox that misses the study area finds nothing
    assert _ids(client.search(bbox=[0.0, 0.0, 1.0, 1.0]).items()) == set()


@pytest.mark.slow
@pytest.mark.integration
def test_assets_from_search_results_load(
    served: tuple[Store, str], s3_server: LocalS3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, url = served
    # A user's shell: the credentials in the standard AWS variables (docs/stac-api.md).
    use_credentials(monkeypatch, s3_server)
    client = Client.open(url)
    factors = next(client.search(collections=["ftl-factors"], ids=[f"{RUN}-factors"]).items())
    iteration = next(client.search(collections=["ftl-iterations"], ids=[f"{RUN}-it01"]).items())
    velocity = factors.assets["velocity_mm_a"].href
    assert velocity.startswith("s3://")
    key = store.key_of(velocity)
    assert key is not None

    # The client settings docs/stac-api.md documents: GDAL's AWS_* variables for s3:// hrefs.
    with store.rasterio_env():
        with rasterio.open(store.gdal_path(key)) as src:
            truth = src.read(1)
        da = rioxarray.open_rasterio(velocity, masked=True).squeeze("band", drop=True)
        np.testing.assert_array_equal(da.values, truth)

    # stackstac 0.5 reads neither proj:code nor asset-level proj fields: give the COG's grid.
    grid = factors.assets["velocity_mm_a"].extra_fields
    cube = stackstac.stack(
        [factors],
        assets=["velocity_mm_a", "slope_deg"],
        epsg=int(grid["proj:code"].split(":")[1]),
        resolution=grid["proj:transform"][0],
        bounds=grid["proj:bbox"],
        snap_bounds=False,
        gdal_env=stackstac.DEFAULT_GDAL_ENV.updated(store.gdal_env()),
        chunksize=256,
    )
    vel = cube.sel(band="velocity_mm_a").squeeze("time").values
    np.testing.assert_array_equal(vel, truth)

    opts = store.settings.storage_options()
    cands = gpd.read_parquet(iteration.assets["candidates"].href, storage_options=opts)
    assert len(cands) == iteration.properties["ftl:n_candidates"] > 0
    assert (cands["iteration"] == 1).all()


@pytest.mark.slow
@pytest.mark.integration
def test_index_follows_new_publications(
    served: tuple[Store, str], scene: Scene, s3_server: LocalS3Server, tmp_path: Path
) -> None:
    store, url = served
    later = tmp_path / "later.gpkg"
    scene.truth[["geometry"]].to_file(later)
    client = Client.open(url)
    assert _ids(client.search(ids=["inventory-later"]).items()) == set()
    with pytest.MonkeyPatch.context() as mp:
        use_credentials(mp, s3_server)
        ingest.ingest_inventory(store, later, name="later")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _ids(client.search(ids=["inventory-later"]).items()) == {"inventory-later"}:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the published item did not reach the STAC API within 30 s")


@pytest.mark.slow
@pytest.mark.integration
def test_the_documented_client_example_runs(
    served: tuple[Store, str], s3_server: LocalS3Server, tmp_path: Path
) -> None:
    store, url = served
    doc = (Path(__file__).parents[1] / "docs" / "stac-api.md").read_text()
    [code] = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    constants = {"API": url, "STORE": store.url, "RUN": RUN}
    for name, value in constants.items():
        code, n = re.subn(rf"^{name} = \"[^\"]*\"", f"{name} = {value!r}", code, flags=re.M)
        assert n == 1, f"docs/stac-api.md example: no `{name} = ...` line"
    script = tmp_path / "example.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, **s3_server.env()},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{RUN}-it02 ")
    n_cands = int(lines[1].split()[0])
    assert (
        n_cands
        == Catalog(store)
        .get_item("ftl-iterations", f"{RUN}-it02")
        .properties[  # type: ignore[union-attr]
            "ftl:n_candidates"
        ]
    )
    [n_dates] = re.findall(r"^(\d+) dates in 2018", done.stdout, flags=re.M)
    in_2018 = [it for it in Catalog(store).items("deformation") if it.datetime.year == 2018]  # type: ignore[union-attr]
    assert int(n_dates) == len(in_2018) > 0


@pytest.mark.slow
@pytest.mark.integration
def test_sync_thread_survives_a_broken_catalog_and_catches_up(
    tmp_path: Path, input_files: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    from ftlcloud.stacapi.server import IndexSync

    store = Store(str(tmp_path / "store"))
    ingest.ingest_inventory(store, input_files["inventory_path"], name="a")
    good = store.read_text("catalog.json")
    with LocalPostgres() as pg:
        index = PgstacIndex(pg.dsn)
        index.migrate()
        index.sync(store)
        syncer = IndexSync(index, store, hrefs="auto", interval_s=0.2)
        syncer.start()
        try:
            store.write_text("catalog.json", "{ not json")  # as if caught mid-write or corrupted
            _wait_for(lambda: syncer.last_error is not None)
            assert "catalog.json" in syncer.last_error  # type: ignore[operator]
            assert syncer.is_alive()
            store.write_text("catalog.json", good)
            ingest.ingest_inventory(store, input_files["inventory_path"], name="b")
            _wait_for(
                lambda: syncer.last_error is None and ("inventory", "inventory-b") in index._items
            )
        finally:
            syncer.stop()
            syncer.join()
        with psycopg.connect(pg.dsn) as conn:
            ids = sorted(r[0] for r in conn.execute("SELECT id FROM pgstac.items"))
        assert ids == ["inventory-a", "inventory-b"]


def _wait_for(condition: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)
