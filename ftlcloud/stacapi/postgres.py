"""A real local PostgreSQL (with PostGIS) for the pgstac index: Debian's ``postgresql`` binaries.

The STAC API's index is derived data: the static catalog in the store is the source of truth and
the index is rebuilt from it on start. So on a laptop ``ftlcloud serve`` runs a throw-away
PostgreSQL in a temporary directory, bound to 127.0.0.1 on a free port with ``trust``
authentication for the local user only; in production point ``--pgstac`` at a managed database.

PostgreSQL refuses to run as root: when ftlcloud runs as root (containers, CI) the server runs as
the ``postgres`` system user that Debian's package creates, through ``runuser``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Self

from ftlcloud.errors import StoreError
from ftlcloud.io.managed import ManagedServer
from ftlcloud.io.s3server import free_ports

log = logging.getLogger(__name__)

#: The Debian packages ``ftlcloud serve`` needs for its embedded index database.
DEBIAN_PACKAGES = ("postgresql", "postgresql-postgis")
_INSTALL_HINT = (
    "install PostgreSQL with PostGIS (Debian: apt-get install "
    + " ".join(DEBIAN_PACKAGES)
    + "), or give --pgstac a PostgreSQL URL of a database with pgstac"
)


def find_pg_bindir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl`` (PATH first, then the newest Debian one)."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.parent.name)] or [0],
    )
    if not candidates:
        raise StoreError(f"PostgreSQL's initdb was not found: {_INSTALL_HINT}")
    return candidates[-1].parent


class LocalPostgres(ManagedServer):
    """A throw-away PostgreSQL server on 127.0.0.1; a context manager."""

    def __init__(
        self,
        *,
        user: str = "ftlcloud",
        port: int | None = None,
        startup_timeout_s: float = 60.0,
    ) -> None:
        self.user = user
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self.data_dir: Path | None = None
        self._bindir: Path | None = None
        self._run_as: list[str] = []

    def __repr__(self) -> str:
        return f"LocalPostgres(port={self.port}, data_dir={self.data_dir})"

    @property
    def dsn(self) -> str:
        """``postgresql://user@127.0.0.1:port/postgres`` (only once started)."""
        if self.data_dir is None or self.port is None:
            raise StoreError("the local PostgreSQL is not started: call start() or use `with`")
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self._bindir is not None
        cmd = [*self._run_as, str(self._bindir / args[0]), *args[1:]]
        return subprocess.run(cmd, capture_output=True, text=True, check=False)

    def start(self) -> Self:
        """initdb a temporary cluster and start it; returns once it accepts connections."""
        if self.data_dir is not None:
            return self
        self._bindir = find_pg_bindir()
        base = Path(tempfile.mkdtemp(prefix="ftlcloud-pg-"))
        if os.geteuid() == 0:
            # initdb and postgres refuse root; Debian's package creates the `postgres` user.
            runuser = shutil.which("runuser")
            if runuser is None or not _user_exists("postgres"):
                shutil.rmtree(base, ignore_errors=True)
                raise StoreError(
                    "running as root, but PostgreSQL must run as an ordinary user and the "
                    f"`postgres` user or `runuser` is missing: {_INSTALL_HINT}"
                )
            shutil.chown(base, user="postgres")
            self._run_as = [runuser, "-u", "postgres", "--"]
        os.chmod(base, 0o700)
        self.data_dir = base / "data"
        self.port = self.port or free_ports(1)[0]
        init = self._run(
            "initdb", "-D", str(self.data_dir), "-U", self.user, "--auth=trust", "-E", "UTF8"
        )
        if init.returncode != 0:
            self.stop()
            raise StoreError(f"initdb failed: {init.stderr.strip()[-800:]}; {_INSTALL_HINT}")
        options = f"-p {self.port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        started = self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-o",
            options,
            "-l",
            str(base / "postgres.log"),
            "-w",
            "-t",
            str(int(self.startup_timeout_s)),
            "start",
        )
        if started.returncode != 0:
            tail = _tail(base / "postgres.log")
            self.stop()
            raise StoreError(
                f"PostgreSQL did not start on 127.0.0.1:{self.port}: "
                f"{started.stderr.strip()[-400:]}\n{tail}"
            )
        log.info("local PostgreSQL for the STAC index on 127.0.0.1:%s", self.port)
        return self

    def stop(self) -> None:
        """Stop the server and delete its data (the index is rebuilt from the store on start)."""
        data_dir, self.data_dir = self.data_dir, None
        if data_dir is None:
            return
        if (data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(data_dir), "-m", "fast", "-w", "stop")
        with contextlib.suppress(OSError):
            shutil.rmtree(data_dir.parent)


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no server log)"
