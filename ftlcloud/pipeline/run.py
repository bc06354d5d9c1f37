"""A run: its id, its settings, its keys in the store, and its manifest."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from ftlcloud.errors import ConfigError, FtlError, InputError, RunError, StoreError
from ftlcloud.io.settings import redact
from ftlcloud.io.store import Store
from ftlcloud.pipeline.grid import DEFAULT_TILE_SIZE, GridSpec, Tile

log = logging.getLogger(__name__)

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_run_id(run_id: str) -> str:
    """A run id becomes part of store keys: letters, digits, ``.``, ``_``, ``-`` only."""
    if not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise InputError(
            f"run id {run_id!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return run_id


@dataclass(frozen=True)
class FactorSettings:
    """Settings that change the factors; a run id is bound to one set of them."""

    tile_size: int = DEFAULT_TILE_SIZE
    """Tile edge in pixels: the unit of work and of memory per worker."""
    min_valid_dates: int = 10
    """Pixels with fewer valid dates are left NaN by the seasonal fit."""
    period_years: float = 1.0
    """Seasonal period T of Eq. 1 (the freeze-thaw cycle)."""
    ndvi_years: tuple[int, int] | None = None
    """(earlier, later) NDVI years for ΔNDVI; default: the first and last in the catalog."""

    def __post_init__(self) -> None:
        if not 16 <= self.tile_size <= 8192:
            raise InputError(f"tile_size {self.tile_size} is outside 16..8192 pixels")
        if self.min_valid_dates < 5:
            raise InputError(
                f"min_valid_dates {self.min_valid_dates} is too small: Eq. 1 has 4 unknowns"
                " and needs at least 5 dates to estimate its uncertainty"
            )
        if self.period_years <= 0:
            raise InputError(f"period_years must be positive, got {self.period_years}")


@dataclass(frozen=True)
class RunPaths:
    """Store keys of one run; all under ``runs/<run_id>/`` (immutable run keys)."""

    run_id: str

    @property
    def prefix(self) -> str:
        return f"runs/{self.run_id}"

    @property
    def manifest(self) -> str:
        return f"{self.prefix}/run.json"

    @property
    def lock(self) -> str:
        return f"{self.prefix}/run.lock"

    def factor_tile(self, tile: Tile) -> str:
        return f"{self.prefix}/factors/tiles/{tile.tile_id}.tif"

    def factor_cog(self, name: str) -> str:
        return f"{self.prefix}/factors/{name}.tif"

    def iteration(self, k: int, name: str) -> str:
        return f"{self.prefix}/iterations/{k:02d}/{name}"

    def mask_tile(self, k: int, tile: Tile) -> str:
        return self.iteration(k, f"tiles/{tile.tile_id}.tif")

    def inventory(self, k: int) -> str:
        return f"{self.prefix}/inventories/inventory-{k:02d}.parquet"


@dataclass(frozen=True)
class RunManifest:
    """What a run was started with; a rerun with other settings under the same id is refused."""

    run_id: str
    settings: FactorSettings
    grid: GridSpec
    inputs: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> str:
        d: dict[str, Any] = {
            "run_id": self.run_id,
            "settings": asdict(self.settings),
            "grid": self.grid.to_dict(),
            "inputs": [list(r) for r in self.inputs],
        }
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunManifest:
        d = json.loads(text)
        s = d["settings"]
        if s.get("ndvi_years") is not None:
            s["ndvi_years"] = tuple(s["ndvi_years"])
        return cls(
            run_id=d["run_id"],
            settings=FactorSettings(**s),
            grid=GridSpec.from_dict(d["grid"]),
            inputs=[tuple(r) for r in d["inputs"]],
        )


def ensure_manifest(store: Store, manifest: RunManifest) -> RunManifest:
    """Write the manifest of a new run, or check that an existing run has the same settings."""
    paths = RunPaths(manifest.run_id)
    if store.exists(paths.manifest):
        existing = RunManifest.from_json(store.read_text(paths.manifest))
        if existing.to_json() != manifest.to_json():
            raise RunError(
                f"run {manifest.run_id!r} already exists in {store.url} with other settings or inputs; "
                "resume it with the same settings or start a new run with another --run-id"
            )
        return existing
    store.write_text(paths.manifest, manifest.to_json())
    return manifest


# --- the same-run-id lock --------------------------------------------------------------------

#: Lease of an S3 run lock; the holder renews it every third of it.
DEFAULT_LEASE_S = 120.0
LEASE_ENV = "FTLCLOUD_LOCK_LEASE_S"


def lease_seconds(env: dict[str, str] | None = None) -> float:
    """The S3 lock lease: ``$FTLCLOUD_LOCK_LEASE_S`` or :data:`DEFAULT_LEASE_S`."""
    raw = (os.environ if env is None else env).get(LEASE_ENV, "").strip()
    if not raw:
        return DEFAULT_LEASE_S
    try:
        value = float(raw)
    except ValueError as err:
        raise ConfigError(f"{LEASE_ENV}={raw!r} is not a number of seconds") from err
    if not 1.0 <= value <= 86_400.0:
        raise ConfigError(f"{LEASE_ENV}={raw!r} is outside 1..86400 seconds")
    return value


def _process_start(pid: int) -> float | None:
    """Start time of a process (tells a live owner from a reused pid), None if unknown."""
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:
        return None


@dataclass(frozen=True)
class LockOwner:
    """Who holds a run lock; the lock object's JSON body (no secrets: host, pid, times)."""

    token: str
    host: str
    pid: int
    pid_start: float | None
    acquired_at: float
    """Epoch seconds."""
    expires_at: float
    """Epoch seconds; an S3 lease not renewed by then is stale. Locally the kernel's lock rules."""
    command: str = ""

    @classmethod
    def new(cls, lease_s: float) -> LockOwner:
        now = time.time()
        command = redact(
            " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
        )
        return cls(
            token=secrets.token_hex(12),
            host=socket.gethostname(),
            pid=os.getpid(),
            pid_start=_process_start(os.getpid()),
            acquired_at=now,
            expires_at=now + lease_s,
            command=command[:300],
        )

    def renewed(self, lease_s: float) -> LockOwner:
        return LockOwner(**{**asdict(self), "expires_at": time.time() + lease_s})

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LockOwner | None:
        """The owner in a lock object, or None if the body is not one (treated as stale)."""
        try:
            d = json.loads(data.decode())
            return cls(
                token=str(d["token"]),
                host=str(d["host"]),
                pid=int(d["pid"]),
                pid_start=None if d.get("pid_start") is None else float(d["pid_start"]),
                acquired_at=float(d["acquired_at"]),
                expires_at=float(d["expires_at"]),
                command=str(d.get("command", "")),
            )
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return None

    def describe(self) -> str:
        since = dt.datetime.fromtimestamp(self.acquired_at, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        what = f" ({self.command})" if self.command else ""
        return f"pid {self.pid} on host {self.host!r} since {since}{what}"

    def stale_reason(self, now: float | None = None) -> str | None:
        """Why this owner can no longer hold the lock, or None if it may still be running."""
        now = time.time() if now is None else now
        if now > self.expires_at:
            return f"its lease expired {now - self.expires_at:.0f} s ago"
        if self.host != socket.gethostname():
            return None
        if self.pid == os.getpid():
            # Our own pid: stale unless a lock object of this process holds that token.
            return None if self.token in _LIVE_TOKENS else "it was left by this process"
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return f"process {self.pid} on this host is gone"
        except PermissionError:
            pass  # alive, owned by another user
        start = _process_start(self.pid)
        if self.pid_start is not None and start is not None and abs(start - self.pid_start) > 1.0:
            return f"process {self.pid} on this host is another process now"
        return None


#: Tokens of the locks this process holds (a lock object with our pid but another token is stale).
_LIVE_TOKENS: set[str] = set()


def _unlock_hint(store: Store, run_id: str, key: str) -> str:
    return (
        f"if that run is dead, clear the lock with `--force-unlock` (e.g. `ftlcloud iterate "
        f"--store {store.url} --run-id {run_id} --force-unlock`) or delete {store.href(key)}"
    )


class RunLock:
    """Exclusive hold on one run id in one store, so two runs never interleave their writes.

    Local directory: ``flock`` on ``runs/<id>/run.lock``; the kernel drops it when the holder
    dies (even by SIGKILL), so a crashed run never blocks a rerun. S3: a lease object created
    with ``If-None-Match: *``, renewed with ``If-Match`` by a background thread every third of
    the lease; a rerun takes over a lease that expired or whose holder (same host) is gone, again
    with ``If-Match`` so only one taker wins. The holder re-reads the object after every write.
    """

    def __init__(self, store: Store, run_id: str, *, lease_s: float | None = None) -> None:
        self.store = store
        self.run_id = check_run_id(run_id)
        self.key = RunPaths(run_id).lock
        self.lease_s = lease_seconds() if lease_s is None else float(lease_s)
        self.owner: LockOwner | None = None
        self._fd: int | None = None
        self._inode: int | None = None
        self._tag: str | None = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"RunLock({self.store.href(self.key)!r}, held={self.owner is not None})"

    # -- acquire ------------------------------------------------------------------------------
    def acquire(self) -> RunLock:
        """Take the lock or raise RunError naming the run id, the holder and how to clear it."""
        if self.owner is not None:
            return self
        owner = LockOwner.new(self.lease_s)
        if self.store.is_s3:
            self._acquire_s3(owner)
        else:
            self._acquire_local(owner)
        self.owner = owner
        _LIVE_TOKENS.add(owner.token)
        log.info("locked run %s (%s)", self.run_id, self.store.href(self.key))
        return self

    def _refuse(self, holder: LockOwner | None) -> RunError:
        who = holder.describe() if holder else "another run (unreadable lock body)"
        return RunError(
            f"run {self.run_id!r} is in use by {who}: it holds the lock {self.store.href(self.key)}. "
            f"Wait for it to finish or use another --run-id; {_unlock_hint(self.store, self.run_id, self.key)}"
        )

    def _acquire_local(self, owner: LockOwner) -> None:
        import fcntl

        path = self.store.href(self.key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        for _ in range(20):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                body = os.pread(fd, 65536, 0)
                os.close(fd)
                raise self._refuse(LockOwner.from_bytes(body)) from None
            except OSError as err:
                os.close(fd)
                raise StoreError(f"cannot lock {path}: {err}") from err
            # The file may have been unlinked by its previous holder between open and flock:
            # then our lock is on an orphan inode, and we must lock the file now at the path.
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, owner.to_bytes(), 0)
            self._fd, self._inode = fd, os.fstat(fd).st_ino
            return
        raise RunError(f"could not lock {path}: it keeps being replaced; is something deleting it?")

    def _acquire_s3(self, owner: LockOwner) -> None:
        body = owner.to_bytes()
        for _ in range(5):
            tag = self.store.create_exclusive(self.key, body)
            if tag is None:
                # Tag first, then body: if the holder renews in between, our If-Match fails.
                old_tag = self.store.etag(self.key)
                if old_tag is None:
                    continue  # released meanwhile; try to create again
                try:
                    holder = LockOwner.from_bytes(self.store.read_bytes(self.key))
                except StoreError:
                    continue
                reason = "its body is unreadable" if holder is None else holder.stale_reason()
                if reason is None:
                    raise self._refuse(holder)
                tag = self.store.replace_if_match(self.key, body, old_tag)
                if tag is None:
                    continue  # someone renewed or took it over first: look again
                log.warning(
                    "run %s: took over a stale lock %s (%s; held by %s)",
                    self.run_id,
                    self.store.href(self.key),
                    reason,
                    holder.describe() if holder else "unknown",
                )
            # Re-read: a server that ignored the condition would show another holder here.
            current = LockOwner.from_bytes(self.store.read_bytes(self.key))
            if current is None or current.token != owner.token:
                raise self._refuse(current)
            self._tag, self.owner = tag, owner
            self._thread = threading.Thread(
                target=self._heartbeat, name=f"ftlcloud-lock-{self.run_id}", daemon=True
            )
            self._thread.start()
            return
        raise self._refuse(None)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease_s / 3.0):
            owner = self.owner
            if owner is None or self._tag is None:
                return
            renewed = owner.renewed(self.lease_s)
            try:
                tag = self.store.replace_if_match(self.key, renewed.to_bytes(), self._tag)
            except FtlError as err:
                # The store may be back before the lease runs out; verify() fails after expiry.
                log.warning("run %s: cannot renew the lock lease: %s", self.run_id, err)
                continue
            if tag is None:
                self._lost = (
                    "another run took over the lock (this run's lease was not renewed in time)"
                )
                log.error("run %s: %s", self.run_id, self._lost)
                return
            self._tag, self.owner = tag, renewed

    # -- use ----------------------------------------------------------------------------------
    def verify(self) -> None:
        """Raise RunError if this process no longer holds the lock (call before publishing)."""
        where = self.store.href(self.key)
        if self.owner is None:
            raise RunError(
                f"run {self.run_id!r}: the lock {where} is not held; nothing was published"
            )
        problem = self._lost
        if problem is None and self.store.is_s3 and time.time() > self.owner.expires_at:
            problem = "its lease expired before it could be renewed (store unreachable?)"
        if problem is None and not self.store.is_s3:
            try:
                if os.stat(where).st_ino != self._inode:
                    problem = "the lock file was replaced (--force-unlock by another run?)"
            except FileNotFoundError:
                problem = "the lock file was deleted (--force-unlock by another run?)"
        if problem:
            raise RunError(
                f"run {self.run_id!r} lost its lock {where}: {problem}; nothing more was "
                "published; rerun when no other run uses this run id"
            )

    def release(self) -> None:
        """Drop the lock and delete its object (a failure is logged: the lease then expires)."""
        owner, self.owner = self.owner, None
        if owner is None:
            return
        _LIVE_TOKENS.discard(owner.token)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._fd is not None:
            fd, self._fd = self._fd, None
            path = self.store.href(self.key)
            try:
                # Unlink while still holding the flock, so no one locks a file about to vanish.
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(path).st_ino == self._inode:
                        os.unlink(path)
            finally:
                os.close(fd)
            return
        try:
            current = LockOwner.from_bytes(self.store.read_bytes(self.key))
            if current is not None and current.token == owner.token:
                self.store.delete(self.key)
        except FtlError as err:
            log.warning(
                "run %s: could not remove the lock %s (%s); it goes stale when its lease ends",
                self.run_id,
                self.store.href(self.key),
                err,
            )

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


_HELD: dict[tuple[str, str], tuple[RunLock, int, int]] = {}
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def run_lock(store: Store, run_id: str, *, lease_s: float | None = None) -> Iterator[RunLock]:
    """Hold the run's lock for the block; re-entrant in one thread (the loop calls the stages)."""
    key = (store.url, run_id)
    me = threading.get_ident()
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None:
            lock, depth, thread = held
            if thread != me:
                raise RunError(
                    f"run {run_id!r} is already running in another thread of this process; "
                    "use another --run-id or wait for it"
                )
            _HELD[key] = (lock, depth + 1, thread)
    if held is not None:
        try:
            yield lock
        finally:
            with _HELD_GUARD:
                lk, depth, thread = _HELD[key]
                _HELD[key] = (lk, depth - 1, thread)
        return
    lock = RunLock(store, run_id, lease_s=lease_s).acquire()
    with _HELD_GUARD:
        _HELD[key] = (lock, 1, me)
    try:
        yield lock
    finally:
        with _HELD_GUARD:
            _HELD.pop(key, None)
        lock.release()


def read_lock_owner(store: Store, run_id: str) -> LockOwner | None:
    """Who holds (or last held, for a stale object) the run's lock; None if there is no lock."""
    key = RunPaths(check_run_id(run_id)).lock
    if not store.exists(key):
        return None
    return LockOwner.from_bytes(store.read_bytes(key))


def force_unlock(store: Store, run_id: str) -> LockOwner | None:
    """Delete the run's lock object whoever holds it; returns the owner it named.

    Only for a lock left by a dead run: a live holder notices (``verify`` fails before its next
    publish) but may already have written data objects.
    """
    owner = read_lock_owner(store, run_id)
    key = RunPaths(run_id).lock
    if store.exists(key):
        log.warning(
            "run %s: removing the lock %s held by %s",
            run_id,
            store.href(key),
            owner.describe() if owner else "unknown",
        )
        store.delete(key)
    return owner
