"""Factor stage end to end vs the I/O floor, then one iteration, on a synthetic scene in a local store.

The scene is ftlcloud.demo.scene ``SceneSpec.sized(size)`` ingested into a local store directory
(not the local S3 server the issue asks for: not done yet). The I/O floor is reading and decoding
every deformation COG of the store once with rasterio, serially.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import rasterio

from benchmarks._timing import Row, check
from ftlcloud.demo.scene import SceneSpec, generate_scene, write_scene
from ftlcloud.io import ingest
from ftlcloud.io.catalog import Catalog
from ftlcloud.io.store import Store
from ftlcloud.pipeline.api import compute_factors, initial_inventory_ref, run_iteration
from ftlcloud.pipeline.cluster import ClusterSpec
from ftlcloud.science.rules import parse_rules

logger = logging.getLogger(__name__)


def _read_deformation(catalog: Catalog) -> tuple[int, int]:
    """Read and decode every deformation COG once; returns (files, pixels)."""
    files = pixels = 0
    for item in catalog.items("deformation"):
        data = item.assets.get("displacement")
        if data is None:
            continue
        with rasterio.open(data.get_absolute_href() or data.href) as src:
            pixels += src.read(1).size
        files += 1
    return files, pixels


def run(size: float, n_workers: int = 2) -> list[Row]:
    """Factor stage, I/O floor and one iteration for ``SceneSpec.sized(size)``."""
    from distributed import LocalCluster

    spec = SceneSpec.sized(size)
    scene = generate_scene(spec)
    with tempfile.TemporaryDirectory(prefix="ftl-bench-e2e-") as tmp:
        tmpdir = Path(tmp)
        store = Store(str(tmpdir / "store"))
        paths = write_scene(scene, tmpdir / "scene", dem_tiles=True)
        ingest.ingest_mintpy_h5(store, paths.timeseries_h5)
        ingest.ingest_dem(store, list(paths.dem))
        ingest.ingest_ndvi(store, dict(paths.ndvi))
        ingest.ingest_inventory(store, paths.inventory, name="initial")
        catalog = Catalog(store)

        start = time.perf_counter()
        n_files, n_pix = _read_deformation(catalog)
        t_floor = time.perf_counter() - start
        if n_files == 0:
            raise RuntimeError("the store holds no deformation COGs to read for the I/O floor")

        with LocalCluster(
            n_workers=n_workers, threads_per_worker=1, dashboard_address=":0"
        ) as cluster:
            spec_c = ClusterSpec(scheduler=cluster.scheduler_address)
            start = time.perf_counter()
            compute_factors(store, "bench", cluster=spec_c, progress=False)
            t_factors = time.perf_counter() - start
            start = time.perf_counter()
            run_iteration(
                store,
                "bench",
                1,
                rules=parse_rules("derived"),
                inventory=initial_inventory_ref(catalog, None),
                cluster=spec_c,
                progress=False,
            )
            t_iter = time.perf_counter() - start

    shape = f"{scene.dem_m.shape[1]}x{scene.dem_m.shape[0]}x{n_files}"
    return [
        Row(f"factors {shape}, {n_workers} workers", t_factors, "s", note="local store directory"),
        Row("I/O floor: read every deformation COG once", t_floor, "s", note=f"{n_pix:.3g} px"),
        Row("one iteration (derived rules)", t_iter, "s"),
        check("factors / I/O floor", t_factors / t_floor, at_most=2.0),
        check("iteration / factors", t_iter / t_factors, at_most=0.1),
    ]
