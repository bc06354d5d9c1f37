"""An iteration end to end against the real services: SeaweedFS S3, a Dask-Gateway cluster
(real dask-gateway-server, local backend) and a LocalCluster; outputs read back through GDAL's
/vsis3/ and checked by the validators."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from gateway_server import GatewayServer
from rio_cogeo.cogeo import cog_validate

from ftlcloud.demo.scene import SceneSpec, generate_scene, write_scene
from ftlcloud.io import ingest
from ftlcloud.io.catalog import Catalog
from ftlcloud.io.geoparquet import read_geoparquet
from ftlcloud.io.s3server import LocalS3Server
from ftlcloud.io.store import Store
from ftlcloud.pipeline.api import (
    ITERATIONS_COLLECTION,
    compute_factors,
    initial_inventory_ref,
    run_iteration,
)
from ftlcloud.pipeline.cluster import ClusterSpec
from ftlcloud.pipeline.loop import iterate
from ftlcloud.pipeline.run import FactorSettings, RunPaths
from ftlcloud.science.rules import parse_rules

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture
def s3_scene_store(s3_store: Store, tmp_path: Path) -> Store:
    scene = generate_scene(SceneSpec.preset("small"))
    paths = write_scene(scene, tmp_path / "scene")
    ingest.ingest_mintpy_h5(s3_store, paths.timeseries_h5)
    ingest.ingest_dem(s3_store, list(paths.dem))
    ingest.ingest_ndvi(s3_store, dict(paths.ndvi))
    ingest.ingest_inventory(s3_store, paths.inventory, name="initial")
    return s3_store


@pytest.fixture
def gateway(s3_server: LocalS3Server, tmp_path: Path) -> Iterator[GatewayServer]:
    with GatewayServer(tmp_path / "gateway", env=s3_server.env()) as server:
        yield server


def _download_catalog(store: Store, dest: Path) -> None:
    for key in store.list(""):
        if key.endswith(".json") and not key.startswith("runs/"):
            out = dest / key
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(store.read_bytes(key))


def _check_outputs(store: Store, run_id: str, k: int, tmp: Path, stac_validate: object) -> None:
    paths = RunPaths(run_id)
    with store.rasterio_env():
        for key in (paths.factor_cog("velocity_mm_a"), paths.iteration(k, "mask.tif")):
            ok, errors, _ = cog_validate(store.gdal_path(key), strict=True, quiet=True)
            assert ok, (key, errors)
        with rasterio.open(store.gdal_path(paths.factor_cog("velocity_mm_a"))) as src:
            vel = src.read(1)
    assert np.isfinite(vel).mean() > 0.5
    cands = read_geoparquet(store, paths.iteration(k, "candidates.parquet"))
    assert len(cands) > 0 and {"overlaps_known", "score", "iteration"} <= set(cands.columns)
    thresholds = json.loads(store.read_text(paths.iteration(k, "thresholds.json")))
    assert thresholds["iteration"] == k
    item = Catalog(store).get_item(ITERATIONS_COLLECTION, f"{run_id}-it{k:02d}")
    assert item is not None and item.properties["ftl:n_candidates"] == len(cands)
    _download_catalog(store, tmp / "catalog")
    stac_validate([tmp / "catalog"])  # type: ignore[operator]


def test_iteration_on_s3_with_local_cluster(
    s3_scene_store: Store, tmp_path: Path, stac_validate: object
) -> None:
    store = s3_scene_store
    spec = ClusterSpec(n_workers=2)
    compute_factors(
        store, "s3local", settings=FactorSettings(tile_size=64), cluster=spec, progress=False
    )
    initial = initial_inventory_ref(Catalog(store), None)
    run_iteration(
        store,
        "s3local",
        1,
        rules=parse_rules("derived"),
        inventory=initial,
        cluster=spec,
        progress=False,
    )
    _check_outputs(store, "s3local", 1, tmp_path, stac_validate)


def test_iteration_on_s3_through_dask_gateway(
    s3_scene_store: Store,
    gateway: GatewayServer,
    tmp_path: Path,
    stac_validate: object,
) -> None:
    store = s3_scene_store
    # The store (URL and non-secret settings) travels pickled with every task; the credentials
    # reach the gateway's workers from the server's environment, as from a Secret in Kubernetes.
    spec = ClusterSpec(gateway=gateway.address, gateway_auth="basic", n_workers=2)
    # The loop as `ftlcloud iterate --gateway` runs it: one gateway cluster for every stage; with no
    # reviewer it stops after iteration 1, waiting for decisions.
    loop = iterate(
        store,
        "s3gw",
        rules=parse_rules("derived"),
        reviewer=None,
        settings=FactorSettings(tile_size=64),
        cluster=spec,
        progress=False,
    )
    assert loop.waiting_for_review == 1
    _check_outputs(store, "s3gw", 1, tmp_path, stac_validate)
