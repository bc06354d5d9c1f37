"""End to end on the local S3 server: factors vs the I/O floor, one iteration, memory, scaling.

The inputs (:mod:`benchmarks._scene`, a mosaic of the demo scene, 82 dates, 30 m) are ingested
into a real SeaweedFS S3 server (:class:`ftlcloud.io.s3server.LocalS3Server`). Every Dask job
runs on a fresh ``LocalCluster`` (processes, one thread each, started before the timer) so that
each worker's peak resident memory belongs to that job alone:

1. 2 workers: the I/O floor (read and decode every input COG of the store once, one task per
   COG, on the same workers), then the factor stage (``compute_factors``: tiles, COG assembly,
   STAC publish), then one iteration (``run_iteration``: thresholds, masks, candidates, publish).
2. 2 workers: the factor stage on the top-left quarter of the area (half the width and height):
   peak RSS per worker at two areas 4x apart, default tile size.
3. 1 worker: the factor stage on the whole area again (new run id): scaling 1 vs 2 workers.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import rasterio

from benchmarks._scene import write_mosaic_scene
from benchmarks._timing import Row, check
from ftlcloud.io import ingest
from ftlcloud.io.catalog import Catalog
from ftlcloud.io.s3server import LocalS3Server
from ftlcloud.io.store import Store
from ftlcloud.pipeline.api import compute_factors, initial_inventory_ref, run_iteration
from ftlcloud.pipeline.cluster import ClusterSpec
from ftlcloud.pipeline.grid import DEFAULT_TILE_SIZE, GridSpec
from ftlcloud.pipeline.run import RunManifest, RunPaths
from ftlcloud.science.rules import parse_rules

logger = logging.getLogger(__name__)

_SAMPLE_S = 0.05
_GB = 1024**3


@dataclass
class _PeakRss:
    """Peak resident set size (bytes) per process, sampled in a background thread."""

    pids: list[int]
    peaks: dict[int, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        procs = [psutil.Process(p) for p in self.pids]
        while not self._stop.is_set():
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                except psutil.Error:
                    continue
                self.peaks[proc.pid] = max(self.peaks.get(proc.pid, 0), rss)
            self._stop.wait(_SAMPLE_S)

    @contextmanager
    def sampling(self) -> Iterator[_PeakRss]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()

    @property
    def max_gb(self) -> float:
        return max(self.peaks.values(), default=0) / _GB


@contextmanager
def _cluster(n_workers: int) -> Iterator[tuple[ClusterSpec, list[int]]]:
    """A fresh LocalCluster (processes, 1 thread each) and its worker pids."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        pids = list(client.run(os.getpid).values())
        yield ClusterSpec(client=client), pids


def _read_whole(store: Store, key: str) -> int:
    """Read and decode band 1 of one raster of the store; returns its pixel count."""
    with store.rasterio_env(), rasterio.open(store.gdal_path(key)) as src:
        return int(src.read(1).size)


def _input_keys(store: Store, catalog: Catalog) -> list[str]:
    keys = []
    for collection in ("deformation", "dem", "ndvi"):
        for item in catalog.items(collection):
            for asset in item.assets.values():
                key = store.key_of(asset.get_absolute_href() or asset.href)
                if key is not None and key.endswith(".tif"):
                    keys.append(key)
    return keys


def _io_floor(spec: ClusterSpec, store: Store, keys: list[str]) -> tuple[float, int]:
    """Seconds to read and decode every input COG once on the cluster's workers."""
    assert spec.client is not None
    start = time.perf_counter()
    futures = spec.client.map(_read_whole, [store] * len(keys), keys, pure=False)
    pixels = sum(spec.client.gather(futures))
    return time.perf_counter() - start, pixels


def _timed_factors(
    store: Store, run_id: str, spec: ClusterSpec, pids: list[int], grid: GridSpec | None = None
) -> tuple[float, float]:
    """(seconds, peak RSS GB of the busiest worker) of one factor stage."""
    peak = _PeakRss(pids)
    with peak.sampling():
        start = time.perf_counter()
        compute_factors(store, run_id, cluster=spec, grid=grid, progress=False)
        seconds = time.perf_counter() - start
    return seconds, peak.max_gb


def run(width_px: int, height_px: int) -> list[Row]:
    """Every end-to-end figure for a ``width_px`` x ``height_px`` x 82-date area."""
    with tempfile.TemporaryDirectory(prefix="ftl-bench-e2e-") as tmp:
        tmpdir = Path(tmp)
        start = time.perf_counter()
        scene = write_mosaic_scene(tmpdir / "scene", width_px, height_px)
        logger.info("e2e: scene files written in %.0f s", time.perf_counter() - start)
        with LocalS3Server(tmpdir / "s3", bucket="bench") as server:
            # Workers inherit the environment: the credentials reach them this way.
            os.environ.update(server.env())
            store = Store(server.store_url("e2e"), server.settings())
            start = time.perf_counter()
            ingest.ingest_deformation_geotiffs(store, scene.deformation_dir, unit="m")
            ingest.ingest_dem(store, [scene.dem])
            ingest.ingest_ndvi(store, dict(scene.ndvi))
            ingest.ingest_inventory(store, scene.inventory, name="initial")
            logger.info("e2e: ingest into S3 took %.0f s", time.perf_counter() - start)
            catalog = Catalog(store)
            keys = _input_keys(store, catalog)
            return _measure(store, catalog, keys, scene.width_px, scene.height_px, scene.n_dates)


def _measure(
    store: Store, catalog: Catalog, keys: list[str], width: int, height: int, n_dates: int
) -> list[Row]:
    with _cluster(2) as (spec, pids):
        t_floor, n_pix = _io_floor(spec, store, keys)
        logger.info("e2e: I/O floor %.1f s", t_floor)
        t_factors, peak_full_gb = _timed_factors(store, "full", spec, pids)
        logger.info("e2e: factors %.1f s, peak %.2f GB/worker", t_factors, peak_full_gb)
        start = time.perf_counter()
        run_iteration(
            store,
            "full",
            1,
            rules=parse_rules("derived"),
            inventory=initial_inventory_ref(catalog, None),
            cluster=spec,
            progress=False,
        )
        t_iter = time.perf_counter() - start
        logger.info("e2e: one iteration %.1f s", t_iter)
    full = RunManifest.from_json(store.read_text(RunPaths("full").manifest)).grid
    quarter = GridSpec(full.crs, full.transform, (full.height // 2, full.width // 2))
    with _cluster(2) as (spec, pids):
        t_quarter, peak_quarter_gb = _timed_factors(store, "quarter", spec, pids, quarter)
        logger.info("e2e: quarter %.1f s, peak %.2f GB/worker", t_quarter, peak_quarter_gb)
    with _cluster(1) as (spec, pids):
        t_one, _ = _timed_factors(store, "one-worker", spec, pids)
        logger.info("e2e: factors on 1 worker %.1f s", t_one)

    shape = f"{width}x{height}x{n_dates}"
    qshape = f"{quarter.width}x{quarter.height}"
    tile = f"tile {DEFAULT_TILE_SIZE}"
    return [
        Row(f"factors {shape}, 2 workers, S3", t_factors, "s", note="tiles + COGs + STAC"),
        Row(
            "I/O floor: read+decode every input COG, 2 workers",
            t_floor,
            "s",
            note=f"{len(keys)} COGs, {n_pix:.3g} px",
        ),
        Row("one iteration (derived rules)", t_iter, "s", note="thresholds-masks-cands-publish"),
        check("factors / I/O floor", t_factors / t_floor, at_most=2.0),
        check("iteration / factors", t_iter / t_factors, at_most=0.1),
        Row(f"peak RSS per worker, {shape}", peak_full_gb, "GB", note=tile),
        Row(f"peak RSS per worker, {qshape} (1/4 area)", peak_quarter_gb, "GB", note=tile),
        check("peak RSS per worker (larger area)", peak_full_gb, at_most=2.5, unit="GB"),
        check(
            "peak RSS: 4x area / 1x area",
            peak_full_gb / peak_quarter_gb if peak_quarter_gb else float("nan"),
            within=(0.85, 1.15),
        ),
        Row(f"factors {shape}, 1 worker", t_one, "s"),
        check("speed-up 2 workers vs 1", t_one / t_factors, at_least=1.6),
    ]
