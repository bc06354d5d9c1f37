"""Reliability and security (issue #9): faults survived, bad inputs refused, nothing lost or leaked.

Every fault is real: a Dask worker process is SIGKILLed, a whole `ftlcloud` process group is
SIGKILLed, the SeaweedFS server is stopped and restarted, and concurrent runs are separate
processes. Outputs after a fault are compared byte for byte (sha256) with a clean run.
The results are summarised in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import shapely
from conftest import ingest_scene, write_geotiff
from distributed import Client, LocalCluster, Worker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ftlcloud.demo.scene import Scene
from ftlcloud.errors import CatalogError, ConfigError, InputError, RunError, StoreError
from ftlcloud.io.catalog import Catalog
from ftlcloud.io.ingest import (
    ingest_deformation_geotiffs,
    ingest_dem,
    ingest_inventory,
    ingest_ndvi,
)
from ftlcloud.io.s3server import LocalS3Server
from ftlcloud.io.settings import StoreSettings
from ftlcloud.io.store import Store, check_key
from ftlcloud.pipeline.api import (
    FACTORS_COLLECTION,
    INVENTORIES_COLLECTION,
    ITERATIONS_COLLECTION,
    compute_factors,
    factors_item_id,
    initial_inventory_ref,
    publish_review,
    run_iteration,
)
from ftlcloud.pipeline.cluster import ClusterSpec
from ftlcloud.pipeline.grid import Tile
from ftlcloud.pipeline.run import (
    FactorSettings,
    LockOwner,
    RunLock,
    RunPaths,
    check_run_id,
    force_unlock,
    read_lock_owner,
    run_lock,
)
from ftlcloud.review.decisions import validate_decisions
from ftlcloud.science.fit import fit_seasonal
from ftlcloud.science.masks import MaskBit, compute_masks
from ftlcloud.science.rules import Range, Thresholds, parse_rules

REPO = Path(__file__).resolve().parents[1]
FTLCLOUD = str(Path(sys.executable).parent / "ftlcloud")
#: Small tiles: the 200x160 scene gives 35 of them, so a fault lands in the middle of a stage.
TILE = 32
SETTINGS = FactorSettings(tile_size=TILE)


# --- helpers -------------------------------------------------------------------------------------


def factor_digests(store: Store, run_id: str) -> dict[str, str]:
    """sha256 of every factor COG (its bytes) and factor tile (its band names and pixel bits,
    NaN payloads included) of a run, keyed by the path inside the run.

    Tiles are hashed by content: their GeoTIFF bytes depend on the GDAL block-cache state of
    the worker process that encoded them (see docs/reliability.md), their pixels do not.
    """
    from ftlcloud.pipeline.tiles import read_tile

    prefix = f"{RunPaths(run_id).prefix}/factors/"
    out = {}
    for key in store.list(prefix):
        if key.startswith(prefix + "tiles/"):
            h = hashlib.sha256()
            for name, band in read_tile(store, key).items():
                h.update(name.encode() + np.ascontiguousarray(band).tobytes())
            out[key[len(prefix) :]] = h.hexdigest()
        else:
            out[key[len(prefix) :]] = hashlib.sha256(store.read_bytes(key)).hexdigest()
    return out


def tile_keys(store: Store, run_id: str) -> list[str]:
    return store.list(f"{RunPaths(run_id).prefix}/factors/tiles/")


def snapshot(store: Store) -> dict[str, str]:
    """Every object of the store with its sha256 (to prove that nothing was written)."""
    return {k: hashlib.sha256(store.read_bytes(k)).hexdigest() for k in store.list()}


def wait_until(cond: Callable[[], bool], timeout_s: float, what: str, step_s: float = 0.02) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FTLCLOUD_"))}
    env.update(extra or {})
    return env


@pytest.fixture(scope="module")
def clean(store: Store, cluster: ClusterSpec) -> dict[str, str]:
    """The reference: a clean factor run on the module's local store."""
    res = compute_factors(store, "clean", settings=SETTINGS, cluster=cluster, progress=False)
    assert res.tiles_computed == res.tiles_total == 35
    return factor_digests(store, "clean")


# --- 8. the same-run-id lock ------------------------------------------------------------------------

_HOLD = textwrap.dedent(
    """
    import sys, time
    from ftlcloud.io.settings import StoreSettings
    from ftlcloud.io.store import Store
    from ftlcloud.pipeline.run import RunLock
    store = Store(sys.argv[1], StoreSettings.from_env())
    lock = RunLock(store, sys.argv[2]).acquire()
    print("held", flush=True)
    time.sleep(600)
    """
)


@contextlib.contextmanager
def holder(
    url: str, run_id: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the run's lock until it is killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, url, run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(env),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "held", proc.stderr.read() if proc.stderr else line
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_lock_refuses_a_second_process_and_frees_on_sigkill(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    with holder(store.url, "r1") as proc:
        with pytest.raises(RunError) as info:
            RunLock(store, "r1").acquire()
        msg = str(info.value)
        assert "run 'r1' is in use by pid" in msg and f"pid {proc.pid}" in msg
        assert store.href("runs/r1/run.lock") in msg and "--force-unlock" in msg
        # Another run id is independent.
        with run_lock(store, "r2") as other:
            other.verify()
        owner = read_lock_owner(store, "r1")
        assert owner is not None and owner.pid == proc.pid
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    # The kernel dropped the flock with the process: no stale lock blocks the rerun.
    with run_lock(store, "r1") as lock:
        lock.verify()
        # Re-entrant in one thread (the loop holds it while its stages take it again) ...
        with run_lock(store, "r1"):
            pass
        # ... but not across threads.
        errors: list[BaseException] = []

        def other_thread() -> None:
            try:
                with run_lock(store, "r1"):
                    pass
            except RunError as err:
                errors.append(err)

        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        assert errors and "another thread" in str(errors[0])
    assert not store.exists("runs/r1/run.lock"), "a released lock leaves no object behind"


def test_force_unlock_makes_the_old_holder_fail_before_publishing(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    lock = RunLock(store, "r").acquire()
    owner = force_unlock(store, "r")
    assert owner is not None and owner.pid == os.getpid()
    with (
        run_lock(store, "r"),
        pytest.raises(RunError, match=r"run 'r' lost its lock .*run.lock: the lock file was"),
    ):
        lock.verify()
    lock.release()


_COUNT = textwrap.dedent(
    """
    import sys, time
    from ftlcloud.errors import RunError
    from ftlcloud.io.settings import StoreSettings
    from ftlcloud.io.store import Store
    from ftlcloud.pipeline.run import RunLock
    store = Store(sys.argv[1], StoreSettings.from_env())
    done = 0
    while done < int(sys.argv[2]):
        lock = RunLock(store, "shared")
        try:
            lock.acquire()
        except RunError:
            time.sleep(0.003)
            continue
        try:
            key = "runs/shared/counter.txt"
            n = int(store.read_text(key)) if store.exists(key) else 0
            time.sleep(0.002)  # widen the read-modify-write window
            store.write_text(key, str(n + 1))
        finally:
            lock.release()
        done += 1
    """
)


def _count_with_two_processes(store: Store, env: dict[str, str] | None, rounds: int) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _COUNT, store.url, str(rounds)],
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(env),
        )
        for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    # A lost update (two holders at once) would leave the counter short.
    assert store.read_text("runs/shared/counter.txt") == str(2 * rounds)
    assert not store.exists("runs/shared/run.lock")


@pytest.mark.slow
def test_same_run_id_never_interleaves_local(tmp_path: Path) -> None:
    _count_with_two_processes(Store(tmp_path / "store"), None, rounds=40)


@pytest.mark.slow
@pytest.mark.integration
def test_same_run_id_never_interleaves_s3(s3_server: LocalS3Server, s3_store: Store) -> None:
    _count_with_two_processes(s3_store, s3_server.env(), rounds=15)


@pytest.mark.integration
def test_s3_lease_lock(s3_server: LocalS3Server, s3_store: Store) -> None:
    store = s3_store
    lock = RunLock(store, "lease", lease_s=1.5).acquire()
    first = lock.owner
    assert first is not None
    with pytest.raises(RunError, match=r"run 'lease' is in use by pid \d+ on host"):
        RunLock(store, "lease").acquire()
    # The heartbeat renews the lease (with If-Match on the object's ETag).
    wait_until(
        lambda: (
            (o := read_lock_owner(store, "lease")) is not None and o.expires_at > first.expires_at
        ),
        10,
        "the lease to be renewed",
    )
    lock.verify()
    # Someone else breaks it: the holder finds out before it publishes.
    force_unlock(store, "lease")
    thief = RunLock(store, "lease").acquire()
    wait_until(lambda: lock._lost is not None, 10, "the holder to notice")
    with pytest.raises(RunError, match="lost its lock"):
        lock.verify()
    lock.release()
    assert read_lock_owner(store, "lease") is not None, "releasing a lost lock keeps the new one"
    thief.release()
    assert read_lock_owner(store, "lease") is None

    # Stale leases are taken over: expired, or left by a dead process on this host.
    expired = LockOwner("t1", "elsewhere", 1, None, time.time() - 100, time.time() - 10)
    store.write_bytes(RunPaths("lease").lock, expired.to_bytes())
    with run_lock(store, "lease") as again:
        again.verify()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    gone = LockOwner(
        "t2", os.uname().nodename, int(dead.stdout), None, time.time(), time.time() + 999
    )
    store.write_bytes(RunPaths("lease").lock, gone.to_bytes())
    with run_lock(store, "lease"):
        pass
    # A live holder elsewhere with a valid lease is never taken over.
    live = LockOwner("t3", "other-host", 1, None, time.time(), time.time() + 999)
    store.write_bytes(RunPaths("lease").lock, live.to_bytes())
    with pytest.raises(RunError, match="on host 'other-host'"):
        RunLock(store, "lease").acquire()
    store.delete(RunPaths("lease").lock)


@pytest.mark.slow
def test_second_cli_run_with_the_same_id_refuses_and_writes_nothing(
    store: Store, cluster: ClusterSpec, clean: dict[str, str]
) -> None:
    with holder(store.url, "busy"):
        before = snapshot(store)
        proc = subprocess.run(
            [
                FTLCLOUD,
                "factors",
                "--store",
                store.url,
                "--run-id",
                "busy",
                "--tile-size",
                str(TILE),
                "--scheduler",
                cluster.scheduler or "",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=cli_env(),
        )
        assert proc.returncode == 5, proc.stderr
        assert "run 'busy' is in use by pid" in proc.stderr and "--force-unlock" in proc.stderr
        after = snapshot(store)
        assert {k: v for k, v in after.items() if not k.endswith("run.lock")} == {
            k: v for k, v in before.items() if not k.endswith("run.lock")
        }


@pytest.mark.slow
def test_two_run_ids_in_parallel_processes_do_not_interfere(
    store: Store, cluster: ClusterSpec, clean: dict[str, str]
) -> None:
    procs = {
        run_id: subprocess.Popen(
            [
                FTLCLOUD,
                "factors",
                "--store",
                store.url,
                "--run-id",
                run_id,
                "--tile-size",
                str(TILE),
                "--scheduler",
                cluster.scheduler or "",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        for run_id in ("par-a", "par-b")
    }
    for run_id, p in procs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert "35/35 tiles computed" in out
        assert factor_digests(store, run_id) == clean
        assert Catalog(store).is_complete(FACTORS_COLLECTION, factors_item_id(run_id))


# --- 1. worker loss ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_worker_killed_mid_factor_stage(
    store: Store, cluster: ClusterSpec, clean: dict[str, str]
) -> None:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["res"] = compute_factors(
                store, "workerkill", settings=SETTINGS, cluster=cluster, progress=False
            )
        except BaseException as err:  # re-raised in the test thread below
            result["err"] = err

    with Client(cluster.scheduler, timeout=30) as client:
        t = threading.Thread(target=run)
        t.start()
        wait_until(lambda: len(tile_keys(store, "workerkill")) >= 2, 120, "the first tiles")
        busy = [addr for addr, tasks in client.processing().items() if tasks]
        assert busy, "no worker was processing factor tiles: the stage ended before the kill"
        victim = client.run(os.getpid, workers=busy[:1])[busy[0]]
        tiles_at_kill = len(tile_keys(store, "workerkill"))
        os.kill(victim, signal.SIGKILL)
        t.join(timeout=300)
        assert not t.is_alive()
        if "err" in result:
            raise result["err"]
        assert not alive(victim)
        assert victim not in client.run(os.getpid).values()
    assert tiles_at_kill < 35
    assert result["res"].tiles_computed == 35
    assert factor_digests(store, "workerkill") == clean
    assert Catalog(store).is_complete(FACTORS_COLLECTION, factors_item_id("workerkill"))


# --- 3. interruption: SIGKILL of the whole run ----------------------------------------------------


@pytest.mark.slow
def test_sigkill_of_the_whole_run_then_resume(
    store: Store, cluster: ClusterSpec, clean: dict[str, str], tmp_path: Path
) -> None:
    # Its own LocalCluster (2 workers): SIGKILL of the process group takes the workers down too.
    log_fh = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(
        [
            FTLCLOUD,
            "factors",
            "--store",
            store.url,
            "--run-id",
            "sigkill",
            "--tile-size",
            str(TILE),
            "--workers",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log_fh,
        env=cli_env(),
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: len(tile_keys(store, "sigkill")) >= 2 or proc.poll() is not None,
            180,
            "the first tiles of the subprocess",
        )
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log_fh.close()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "run.log").read_text()
    wait_until(lambda: not _group_alive(proc.pid), 30, "the killed process group to exit")
    done = len(tile_keys(store, "sigkill"))
    assert 2 <= done < 35
    assert not Catalog(store).has_item(FACTORS_COLLECTION, factors_item_id("sigkill"))
    # The lock file of the dead run is still there; its flock died with it, so no unlock needed.
    assert store.exists(RunPaths("sigkill").lock)
    res = compute_factors(store, "sigkill", settings=SETTINGS, cluster=cluster, progress=False)
    assert res.tiles_computed == 35 - done
    assert factor_digests(store, "sigkill") == clean
    # 4. a rerun of a finished run writes nothing.
    before = snapshot(store)
    again = compute_factors(store, "sigkill", settings=SETTINGS, cluster=cluster, progress=False)
    assert again.skipped and again.tiles_computed == 0
    assert snapshot(store) == before


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# --- 2. storage outage ------------------------------------------------------------------------------


def _running_tasks(dask_worker: Worker) -> int:
    return len(dask_worker.active_threads)


@pytest.mark.slow
@pytest.mark.integration
def test_s3_outage_mid_run_then_resume_and_no_secret_leaks(
    tmp_path: Path,
    scene: Scene,
    clean: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    access, secret = "FTLOUTAGE" + secrets.token_hex(6).upper(), secrets.token_urlsafe(30)
    data_dir = tmp_path / "weed"
    server = LocalS3Server(data_dir, bucket="outage", access_key=access, secret_key=secret).start()
    restarted: LocalS3Server | None = None
    try:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        caplog.set_level(logging.DEBUG, logger="ftlcloud")
        store = Store(server.store_url("proj"), server.settings())
        ingest_scene(store, scene, tmp_path / "scene")
        # Workers started after the credentials are in the environment, as on a real cluster.
        with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as lc:
            spec = ClusterSpec(scheduler=lc.scheduler_address)
            failure: dict[str, BaseException] = {}

            def run() -> None:
                try:
                    compute_factors(
                        store, "outage", settings=SETTINGS, cluster=spec, progress=False
                    )
                except BaseException as err:
                    failure["err"] = err

            t = threading.Thread(target=run)
            t.start()
            wait_until(lambda: len(tile_keys(store, "outage")) >= 2, 180, "the first S3 tiles")
            port = server.port
            server.stop()
            t.join(timeout=300)
            assert not t.is_alive()
            err = failure.get("err")
            assert isinstance(err, StoreError | RunError), repr(err)
            msg = str(err)
            assert "factor stage of run 'outage' stopped and published nothing" in msg
            assert "rerunning the same command resumes" in msg
            with Client(lc.scheduler_address, timeout=30) as client:
                # Tasks already running when the server went away finish first. The scheduler
                # forgets a released task at once, while its worker thread may still be inside
                # botocore's retries (and would write its tile once the server is back), so
                # wait on the workers' own threads, not on the scheduler's view.
                wait_until(
                    lambda: not any(client.run(_running_tasks).values()), 120, "idle workers"
                )
            restarted = LocalS3Server(
                data_dir, port=port, bucket="outage", access_key=access, secret_key=secret
            ).start()
            catalog = Catalog(store)
            assert not catalog.has_item(FACTORS_COLLECTION, factors_item_id("outage"))
            assert catalog.items(ITERATIONS_COLLECTION) == []
            done = len(tile_keys(store, "outage"))
            assert 2 <= done < 35
            res = compute_factors(store, "outage", settings=SETTINGS, cluster=spec, progress=False)
        assert res.tiles_computed == 35 - done, "finished tiles must not be redone"
        # S3 outputs equal the clean local run, byte for byte.
        assert factor_digests(store, "outage") == clean
        assert catalog.is_complete(FACTORS_COLLECTION, factors_item_id("outage"))
        # 7. Secrets: no object, log line or error carries the credentials.
        keys = store.list()
        assert any(k.startswith("runs/outage/") for k in keys)
        for key in keys:
            blob = store.read_bytes(key)
            assert secret.encode() not in blob and access.encode() not in blob, key
        texts = [caplog.text, msg, repr(err), str(err.__cause__), repr(err.__cause__)]
        for text in texts:
            assert secret not in text and access not in text
    finally:
        server.stop()
        if restarted is not None:
            restarted.stop()


# --- 5. bad inputs ----------------------------------------------------------------------------------


def test_truncated_geotiff_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    a = np.ones((40, 50), "float32")
    files = [write_geotiff(tmp_path / f"d_2020010{i}.tif", a * i) for i in (1, 2, 3)]
    data = files[2].read_bytes()
    files[2].write_bytes(data[: len(data) // 2])  # opens (header intact), pixels cut off
    with pytest.raises(InputError, match=r"d_20200103.tif: cannot read its pixels .* truncated"):
        ingest_deformation_geotiffs(store, files, unit="m")
    # The two COGs already written for this call were removed again: nothing half-ingested
    # (only the empty root catalog, created when the deformation collection was looked up).
    assert store.list() == ["catalog.json"]
    assert Catalog(store).items("deformation") == []


def test_inventory_with_invalid_geometry_is_refused(
    tmp_path: Path, input_files: dict[str, Any]
) -> None:
    store = Store(tmp_path / "store")
    ingest_deformation_geotiffs(store, input_files["deformation_dir"], unit="m")
    before = snapshot(store)
    bowtie = shapely.Polygon(
        [(500_100, 4_199_000), (500_300, 4_199_200), (500_300, 4_199_000), (500_100, 4_199_200)]
    )
    inv = gpd.GeoDataFrame(
        {"name": ["ok", "bowtie"]},
        geometry=[shapely.box(500_300, 4_199_100, 500_600, 4_199_400), bowtie],
        crs="EPSG:32647",
    )
    inv.to_file(tmp_path / "bowtie.gpkg")
    with pytest.raises(
        InputError,
        match=r"bowtie.gpkg: 1 feature\(s\) have invalid geometries \(rows \[1\]; first: Self-intersection.*-makevalid",
    ):
        ingest_inventory(store, tmp_path / "bowtie.gpkg")
    assert snapshot(store) == before


def _small_store(tmp_path: Path, n_dates: int, nan_tile: bool = False) -> Store:
    """A 40x50 px store with ``n_dates`` dates of a trend + seasonal signal (12-day sampling)."""
    store = Store(tmp_path / "store")
    rng = np.random.default_rng(3)
    files = []
    day0 = dt.date(2020, 1, 1)
    for i in range(n_dates):
        day = day0 + dt.timedelta(days=12 * i)
        t = 12 * i / 365.25
        arr = (-0.02 * t + 0.005 * np.sin(2 * np.pi * t) + rng.normal(0, 1e-3, (40, 50))).astype(
            "float32"
        )
        if nan_tile:
            arr[:16, :16] = np.nan  # the whole first 16x16 tile has no data on any date
        files.append(write_geotiff(tmp_path / "defo" / f"{day:%Y%m%d}.tif", arr, nodata=np.nan))
    ingest_deformation_geotiffs(store, files, unit="m")
    ingest_dem(
        store,
        [
            write_geotiff(
                tmp_path / "dem.tif", (3000 + rng.uniform(0, 300, (40, 50))).astype("float32")
            )
        ],
    )
    ingest_ndvi(
        store,
        {
            y: write_geotiff(
                tmp_path / f"ndvi_{y}.tif", rng.uniform(0, 0.8, (40, 50)).astype("float32")
            )
            for y in (2017, 2019)
        },
    )
    return store


def test_run_level_input_checks_name_the_item_and_publish_nothing(
    tmp_path: Path, cluster: ClusterSpec
) -> None:
    store = _small_store(tmp_path, n_dates=6)
    before = snapshot(store)
    s16 = FactorSettings(tile_size=16)
    # Fewer dates than the fit needs.
    with pytest.raises(
        InputError,
        match=r"has 6 acquisition date\(s\) but the seasonal fit needs at least min_valid_dates=10.*--min-valid-dates",
    ):
        compute_factors(store, "few", settings=s16, cluster=cluster, progress=False)
    catalog = Catalog(store)
    item_key = catalog.item_key("deformation", "deformation-20200113")
    original = store.read_text(item_key)
    doc = json.loads(original)
    # Two dates that are the same day.
    tampered = json.loads(json.dumps(doc))
    tampered["properties"]["datetime"] = "2020-01-01T00:00:00Z"
    store.write_text(item_key, json.dumps(tampered))
    with pytest.raises(
        CatalogError,
        match=r"'deformation-20200101' and 'deformation-20200113' have the same date 2020-01-01",
    ):
        compute_factors(
            store,
            "dup",
            settings=FactorSettings(tile_size=16, min_valid_dates=5),
            cluster=cluster,
            progress=False,
        )
    # A date on another grid.
    tampered = json.loads(json.dumps(doc))
    tampered["assets"]["displacement"]["proj:shape"] = [41, 50]
    store.write_text(item_key, json.dumps(tampered))
    with pytest.raises(
        CatalogError,
        match=r"'deformation-20200101' and 'deformation-20200113' are on different grids",
    ):
        compute_factors(store, "grid", settings=s16, cluster=cluster, progress=False)
    store.write_text(item_key, original)
    # A truncated COG in the store.
    cog = "inputs/deformation/20200113.tif"
    good = store.read_bytes(cog)
    store.write_bytes(cog, good[: len(good) // 2])
    with pytest.raises(
        CatalogError,
        match=r"input item 'deformation-20200113' .* is truncated or was overwritten; re-ingest",
    ):
        compute_factors(store, "trunc", settings=s16, cluster=cluster, progress=False)
    store.write_bytes(cog, good)
    assert store.list("runs") == [], "a refused run writes nothing, not even its manifest"
    assert snapshot(store) == before


@pytest.mark.slow
def test_all_nan_tile_is_handled_not_an_error(tmp_path: Path, cluster: ClusterSpec) -> None:
    store = _small_store(tmp_path, n_dates=40, nan_tile=True)
    res = compute_factors(
        store, "nan", settings=FactorSettings(tile_size=16), cluster=cluster, progress=False
    )
    assert res.tiles_computed == res.tiles_total == 12
    assert res.fitted_pixels == 40 * 50 - 16 * 16
    from ftlcloud.pipeline.tiles import read_tile

    empty = read_tile(store, RunPaths("nan").factor_tile(Tile(0, 0, _window(16))))
    assert np.isnan(empty["velocity_mm_a"]).all() and (empty["n_valid"] == 0).all()
    full = read_tile(store, RunPaths("nan").factor_tile(Tile(1, 1, _window(16, 16, 16))))
    assert np.isfinite(full["velocity_mm_a"]).all()
    # The factor item is published; the same tile through the fit in this process warns nothing.
    assert Catalog(store).is_complete(FACTORS_COLLECTION, factors_item_id("nan"))
    with warnings_as_errors():
        fit = fit_seasonal(
            np.full((40, 16, 16), np.nan, "float32"),
            [dt.date(2020, 1, 1) + dt.timedelta(days=12 * i) for i in range(40)],
            unit="mm",
            min_valid=10,
        )
    assert np.isnan(fit.velocity_mm_a).all() and (fit.n_valid == 0).all()


@pytest.mark.slow
def test_bad_decisions_publish_nothing(
    store: Store, cluster: ClusterSpec, clean: dict[str, str]
) -> None:
    initial = initial_inventory_ref(Catalog(store))
    it = run_iteration(
        store,
        "clean",
        1,
        rules=parse_rules("table2"),
        inventory=initial,
        cluster=cluster,
        progress=False,
    )
    assert it.n_candidates > 0
    before = snapshot(store)
    first = str(it.candidates["candidate_id"].iloc[0])
    bad = gpd.GeoDataFrame(
        {
            "candidate_id": ["no-such-id", first],
            "decision": ["accept", "maybe"],
            "note": ["", ""],
            "row": [1, 2],
        },
        geometry=[None, None],
        crs=it.candidates.crs,
    )
    bad.attrs["source"] = "decisions.csv"
    with pytest.raises(InputError) as info:
        publish_review(store, "clean", 1, bad, initial=initial)
    msg = str(info.value)
    assert "no-such-id" in msg and "maybe" in msg
    assert snapshot(store) == before
    assert not Catalog(store).has_item(INVENTORIES_COLLECTION, "clean-inventory-02")
    item = Catalog(store).get_item(ITERATIONS_COLLECTION, "clean-it01")
    assert item is not None and item.properties["ftl:status"] == "awaiting-review"


def test_malformed_config_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_json = tmp_path / "rules.json"
    bad_json.write_text('[{"iteration": 1, "velocity_abs_min_mm_a": ')
    with pytest.raises(ConfigError, match=r"rules file .*rules.json cannot be read as JSON"):
        parse_rules(str(bad_json))
    with pytest.raises(ConfigError):
        parse_rules('{"schedule": "not a list"}')
    with pytest.raises(ConfigError, match=r"FTLCLOUD_S3_PATH_STYLE='maybe' is not a boolean"):
        StoreSettings.from_env({"FTLCLOUD_S3_PATH_STYLE": "maybe"})
    from ftlcloud.cli import main

    monkeypatch.setenv("FTLCLOUD_LOCK_LEASE_S", "soon")
    code = main(["factors", "--store", str(tmp_path / "s"), "--run-id", "x"])
    assert code == 2
    assert "FTLCLOUD_LOCK_LEASE_S='soon' is not a number of seconds" in capsys.readouterr().err


@pytest.mark.integration
def test_wrong_credentials_and_missing_bucket_through_the_cli(
    s3_server: LocalS3Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ftlcloud.cli import main

    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    code = main(["factors", "--store", "s3://no-such-bucket/p", "--run-id", "x"])
    err = capsys.readouterr().err
    assert code == 3 and "bucket 'no-such-bucket' does not exist" in err and "create it" in err
    wrong = "wrong-" + secrets.token_urlsafe(20)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    code = main(["factors", "--store", s3_server.store_url("p"), "--run-id", "x"])
    err = capsys.readouterr().err
    assert code == 3 and "refused the credentials" in err and "AWS_SECRET_ACCESS_KEY" in err
    assert wrong not in err and s3_server.secret_key not in err


# --- 7. keys built from user-supplied ids stay inside the run's prefix ----------------------------


@given(st.text(max_size=80))
@settings(max_examples=300, deadline=None)
def test_run_ids_cannot_escape_their_prefix(run_id: str) -> None:
    try:
        check_run_id(run_id)
    except InputError:
        return
    paths = RunPaths(run_id)
    tile = Tile(3, 4, _window(16, 48, 64))
    keys = [
        paths.manifest,
        paths.lock,
        paths.factor_tile(tile),
        paths.factor_cog("velocity_mm_a"),
        paths.iteration(2, "mask.tif"),
        paths.mask_tile(2, tile),
        paths.inventory(3),
    ]
    root = Path("/store").resolve()
    for key in keys:
        check_key(key)
        assert key.startswith(f"runs/{run_id}/")
        assert (root / key).resolve().is_relative_to(root / "runs" / run_id)


@pytest.mark.parametrize(
    "run_id", ["..", "../x", "a/b", "/abs", ".hidden", "a\\b", "x" * 65, "", "a..b", "s3://b/k"]
)
def test_hostile_run_ids_are_refused(run_id: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is not allowed"):
        check_run_id(run_id)
    with pytest.raises(InputError):
        RunLock(Store(tmp_path), run_id)


# --- 6. fuzzing -------------------------------------------------------------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-1000, 1000)
    | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "iteration",
                    "elevation_m",
                    "slope_deg",
                    "aspect_deg",
                    "velocity_abs_min_mm_a",
                    "min",
                    "max",
                    "schedule",
                    "source",
                    "ranges",
                    "aspect_ranges_deg",
                    "lo",
                    "hi",
                ]
            )
            | st.text(max_size=5),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@given(_json)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_rules_parser_raises_only_config_errors(doc: Any) -> None:
    try:
        rules = parse_rules(json.dumps(doc) if isinstance(doc, list | dict) else [doc])
    except InputError:
        return
    # Whatever parsed must give thresholds whose ranges are ordered and finite.
    if rules.mode == "explicit" and rules.max_iteration:
        t = rules.thresholds_for(1, None)
        for r in (t.elevation_m, t.slope_deg):
            assert np.isfinite([r.low, r.high]).all() and r.low <= r.high


@given(
    ids=st.lists(st.sampled_from(["it1-c1", "it1-c2", "nope", "", " it1-c1 ", None]), max_size=5),
    values=st.lists(
        st.sampled_from(["accept", "Reject", "accepted", "maybe", "", "add", None, "ACCEPT "]),
        max_size=5,
    ),
)
@settings(max_examples=200, deadline=None)
def test_fuzz_decisions_validation_raises_only_input_errors(
    ids: list[Any], values: list[Any]
) -> None:
    n = min(len(ids), len(values))
    candidates = gpd.GeoDataFrame(
        {"candidate_id": ["it1-c1", "it1-c2"], "iteration": [1, 1]},
        geometry=[shapely.box(0, 0, 30, 30), shapely.box(60, 0, 90, 30)],
        crs="EPSG:32647",
    )
    decisions = gpd.GeoDataFrame(
        {
            "candidate_id": ids[:n],
            "decision": values[:n],
            "note": [""] * n,
            "row": list(range(1, n + 1)),
        },
        geometry=[None] * n,
        crs="EPSG:32647",
    )
    try:
        out = validate_decisions(decisions, candidates)
    except InputError as err:
        assert "decisions" in str(err)
        return
    assert set(out["decision"]) <= {"accept", "reject", "add"}
    assert set(out["candidate_id"]) <= {"it1-c1", "it1-c2"}


@given(
    cube=hnp.arrays(
        np.float32, (24, 3, 3), elements=st.floats(-500, 500, width=32) | st.just(np.nan)
    ),
    step=st.integers(5, 40),
)
@settings(max_examples=150, deadline=None)
def test_fuzz_fit_no_crash_no_silent_nan(cube: np.ndarray, step: int) -> None:
    dates = [dt.date(2019, 1, 1) + dt.timedelta(days=step * i) for i in range(cube.shape[0])]
    with warnings_as_errors():
        fit = fit_seasonal(cube, dates, unit="mm", min_valid=10)
    n_valid = np.isfinite(cube).sum(axis=0)
    np.testing.assert_array_equal(fit.n_valid, n_valid)
    t = np.array([(d - dates[0]).days for d in dates]) / 365.25
    for y, x in np.ndindex(3, 3):
        ok = np.isfinite(cube[:, y, x])
        defined = ok.sum() >= 10 and np.ptp(t[ok]) >= 1.0
        if not defined:
            assert np.isnan(fit.velocity_mm_a[y, x])
            continue
        # Where Eq. 1 is determined, every fitted factor is a number (NaN is not allowed to hide a
        # value); the design can still be singular only for degenerate samplings, not here.
        for name in (
            "velocity_mm_a",
            "velocity_std_mm_a",
            "seasonal_amplitude_mm",
            "intercept_mm",
            "rmse_mm",
        ):
            assert np.isfinite(getattr(fit, name)[y, x]), (name, y, x)


@given(
    factors=st.fixed_dictionaries(
        {
            name: hnp.arrays(
                np.float32, (4, 4), elements=st.floats(-1000, 5000, width=32) | st.just(np.nan)
            )
            for name in ("elevation_m", "slope_deg", "aspect_deg", "velocity_mm_a")
        }
    ),
    lo=st.floats(0, 4000),
    span=st.floats(0, 2000),
    vmin=st.floats(0, 100),
)
@settings(max_examples=150, deadline=None)
def test_fuzz_masks_nan_never_passes(
    factors: dict[str, np.ndarray], lo: float, span: float, vmin: float
) -> None:
    t = Thresholds(
        iteration=1,
        elevation_m=Range(lo, lo + span),
        slope_deg=Range(0, 90),
        aspect_deg=(Range(0, 360),),
        velocity_abs_min_mm_a=vmin,
    )
    with warnings_as_errors():
        bits = compute_masks(factors, t)
    assert bits.shape == (4, 4)
    for bit, name in ((MaskBit.ELEVATION, "elevation_m"), (MaskBit.VELOCITY, "velocity_mm_a")):
        nan = np.isnan(factors[name])
        assert not (bits[nan] & bit).any(), name
    elev = factors["elevation_m"].astype(np.float64)  # compare as the masks do, not in float32
    inside = np.isfinite(elev) & (elev >= lo) & (elev <= lo + span)
    np.testing.assert_array_equal((bits & MaskBit.ELEVATION) != 0, inside)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "FTLCLOUD_S3_ENDPOINT_URL",
                "FTLCLOUD_S3_REGION",
                "FTLCLOUD_S3_PATH_STYLE",
                "FTLCLOUD_S3_USE_TLS",
                "AWS_ENDPOINT_URL",
                "FTLCLOUD_S3_ANON",
                "AWS_PROFILE",
            ]
        ),
        st.text(max_size=30),
        max_size=5,
    )
)
@settings(max_examples=200, deadline=None)
def test_fuzz_store_settings_from_env(env: dict[str, str]) -> None:
    try:
        s = StoreSettings.from_env(env)
    except ConfigError as err:
        assert any(name in str(err) for name in env) or "endpoint" in str(err).lower()
        return
    assert isinstance(s.storage_options(), dict) and isinstance(s.gdal_env(), dict)


def _window(size: int, row_off: int = 0, col_off: int = 0) -> Any:
    from rasterio.windows import Window

    return Window(col_off, row_off, size, size)


@contextlib.contextmanager
def warnings_as_errors() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield
