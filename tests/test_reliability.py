"""Reliability and security (issue #9): faults survived, bad inputs refused, nothing lost or leaked.

Every fault is real: a Dask worker process is SIGKILLed, a whole `ftlcloud` process group is
SIGKILLed, the SeaweedFS server is stopped and restarted, and concurrent runs are separate
processes. Outputs after a fault are compared byte for byte (sha256) with a clean run.
The results are summarised in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client

from ftlcloud.errors import RunError
from ftlcloud.io.catalog import Catalog
from ftlcloud.io.s3server import LocalS3Server
from ftlcloud.io.store import Store
from ftlcloud.pipeline.api import (
    FACTORS_COLLECTION,
    compute_factors,
    factors_item_id,
)
from ftlcloud.pipeline.cluster import ClusterSpec
from ftlcloud.pipeline.run import (
    FactorSettings,
    LockOwner,
    RunLock,
    RunPaths,
    force_unlock,
    read_lock_owner,
    run_lock,
)

REPO = Path(__file__).resolve().parents[1]
FTLCLOUD = str(Path(sys.executable).parent / "ftlcloud")
#: Small tiles: the 200x160 scene gives 35 of them, so a fault lands in the middle of a stage.
TILE = 32
SETTINGS = FactorSettings(tile_size=TILE)


# --- helpers -------------------------------------------------------------------------------------


def factor_digests(store: Store, run_id: str) -> dict[str, str]:
    """sha256 of every factor tile and factor COG of a run, keyed by the path inside the run."""
    prefix = f"{RunPaths(run_id).prefix}/factors/"
    return {
        key[len(prefix) :]: hashlib.sha256(store.read_bytes(key)).hexdigest()
        for key in store.list(prefix)
    }


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
    store: Store, cluster: ClusterSpec, clean: dict[str, str]
) -> None:
    # Its own LocalCluster (2 workers): SIGKILL of the process group takes the workers down too.
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
        stderr=subprocess.PIPE,
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
    assert proc.returncode == -signal.SIGKILL
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
