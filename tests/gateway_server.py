"""A real ``dask-gateway-server`` (local-process backend) for tests: ``GatewayServer(tmp_dir)``.

The cluster options are not redefined here: the server runs the production options block of
deploy/helm/dask-gateway-values.yaml (``gateway.extraConfig["30-options"]``, the fields *and* the
handler that vets images and environment variables), and a small adapter maps its Kubernetes
overrides onto the local backend's ``ClusterConfig``. So a test against this server also proves
that what ftlcloud sends is accepted by the options the cluster will run with.

Environment reaching schedulers and workers: the local backend passes only a whitelist of the
server's own variables. Here that whitelist is extended with every ``AWS_*`` variable present when
the server starts (the test process's, plus ``env=``), which stands in for the Kubernetes Secret
of production; ``FTLCLOUD_S3_*`` settings travel as the ``environment`` cluster option, as in
production. Credential values are never written to the config file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Self

import yaml

from ftlcloud.io.managed import ManagedServer

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
HELM_VALUES = REPO / "deploy" / "helm" / "dask-gateway-values.yaml"
#: The extraConfig block of the Helm values that defines the cluster options.
OPTIONS_BLOCK = "30-options"
#: The image the production options handler is told is "configured" (it accepts any tag of it).
LOCAL_IMAGE = "ftlcloud:local"

_BIN = Path(sys.prefix) / "bin"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def production_options_block() -> str:
    """The Python block of the Helm values that declares ``c.Backend.cluster_options``."""
    values = yaml.safe_load(HELM_VALUES.read_text())
    try:
        block = values["gateway"]["extraConfig"][OPTIONS_BLOCK]
    except (KeyError, TypeError) as err:
        raise RuntimeError(
            f"{HELM_VALUES} has no gateway.extraConfig[{OPTIONS_BLOCK!r}] block; the test gateway "
            "runs the production cluster options from there (update OPTIONS_BLOCK if renamed)"
        ) from err
    return str(block)


def _config_text(
    *,
    api_port: int,
    proxy_port: int,
    clusters_dir: Path,
    idle_timeout_s: float,
    start_timeout_s: float,
    max_workers: int,
    password: str | None,
) -> str:
    dask = str(_BIN / "dask")
    auth = (
        "# No password: any user name is accepted (the client's BasicAuth sends the login name)."
        if password is None
        else f"c.SimpleAuthenticator.password = {password!r}  # shared, as in the Helm release"
    )
    return f"""\
# Written by tests/gateway_server.py; `c` is the traitlets config of dask-gateway-server.
import math
import os

c.DaskGateway.address = "127.0.0.1:{api_port}"
c.Proxy.address = "127.0.0.1:{proxy_port}"
# Scheduler connections are TLS with SNI routing, multiplexed on the proxy's HTTP port.
c.Proxy.tcp_address = "127.0.0.1:{proxy_port}"
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
{auth}

c.UnsafeLocalBackend.clusters_directory = {str(clusters_dir)!r}
# Short timeouts and status periods so a broken start fails the test quickly.
c.UnsafeLocalBackend.cluster_start_timeout = {start_timeout_s!r}
c.UnsafeLocalBackend.worker_start_timeout = {start_timeout_s!r}
c.UnsafeLocalBackend.cluster_status_period = 5.0
c.UnsafeLocalBackend.worker_status_period = 5.0
c.UnsafeLocalBackend.sigint_timeout = 5
c.UnsafeLocalBackend.sigterm_timeout = 3
# The local backend hands schedulers/workers only whitelisted server variables; add AWS_*
# (names only: the values stay in the process environment, never in this file).
c.UnsafeLocalBackend.inherited_environment = [
    "PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "HOME", "TMPDIR",
] + sorted(k for k in os.environ if k.startswith("AWS_"))

# distributed >= 2024 has no dask-scheduler/dask-worker scripts.
c.ClusterConfig.scheduler_cmd = [{dask!r}, "scheduler"]
c.ClusterConfig.worker_cmd = [{dask!r}, "worker"]
c.ClusterConfig.idle_timeout = {idle_timeout_s!r}
c.ClusterConfig.cluster_max_workers = {max_workers!r}
c.ClusterConfig.scheduler_memory = "1 G"

# ---- production cluster options: {HELM_VALUES.relative_to(REPO)} extraConfig[{OPTIONS_BLOCK!r}]
c.KubeClusterConfig.image = {LOCAL_IMAGE!r}
c.KubeClusterConfig.environment = {{}}
{production_options_block()}
# ---- end of the production block

_ftl_kube_handler = c.Backend.cluster_options.handler


def _ftl_local_handler(options, user):
    # The production handler validates and builds Kubernetes overrides; keep the ones the local
    # ClusterConfig has (integer cores, no image or *_limit fields).
    kube = _ftl_kube_handler(options, user)
    return {{
        "worker_cores": max(1, math.ceil(kube["worker_cores"])),
        "worker_memory": kube["worker_memory"],
        "worker_threads": kube["worker_threads"],
        "environment": kube["environment"],
    }}


c.Backend.cluster_options.handler = _ftl_local_handler
"""


class GatewayServer(ManagedServer):
    """A ``dask-gateway-server`` subprocess with the local backend, on free 127.0.0.1 ports.

    ``address`` is the public proxy address clients use (HTTP API + scheduler proxy on one port);
    ``proxy_address`` the scheduler proxy as ``gateway://host:port``; ``api_address`` the private
    API. ``env`` adds/overrides variables of the server process (its ``AWS_*`` reach workers).
    ``password`` makes the simple authenticator require it (any user name); None accepts anyone.
    """

    def __init__(
        self,
        tmp_dir: str | Path,
        *,
        env: Mapping[str, str] | None = None,
        idle_timeout_s: float = 60.0,
        start_timeout_s: float = 30.0,
        max_workers: int = 4,
        ready_timeout_s: float = 30.0,
        password: str | None = None,
    ) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.env = dict(env or {})
        self.idle_timeout_s = idle_timeout_s
        self.start_timeout_s = start_timeout_s
        self.max_workers = max_workers
        self.ready_timeout_s = ready_timeout_s
        self.password = password
        self.config_path = self.tmp_dir / "dask_gateway_config.py"
        self.log_path = self.tmp_dir / "dask-gateway-server.log"
        self.clusters_dir = self.tmp_dir / "clusters"
        self._proc: subprocess.Popen[bytes] | None = None
        self._api_port = 0
        self._proxy_port = 0

    @property
    def address(self) -> str:
        """Public HTTP address (the proxy) for ``Gateway(address)`` / ``ClusterSpec.gateway``."""
        return f"http://127.0.0.1:{self._proxy_port}"

    @property
    def proxy_address(self) -> str:
        """Scheduler proxy address for ``Gateway(proxy_address=...)``."""
        return f"gateway://127.0.0.1:{self._proxy_port}"

    @property
    def api_address(self) -> str:
        """The private API (what schedulers heartbeat to); clients do not use it."""
        return f"http://127.0.0.1:{self._api_port}"

    def log_text(self, tail_chars: int = 4000) -> str:
        """The end of the server's log (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-tail_chars:]
        except OSError:
            return ""

    def start(self) -> Self:
        """Write the config, start the server in its own process group, wait for its API."""
        if self._proc is not None:
            return self
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.clusters_dir.mkdir(exist_ok=True)
        self._api_port, self._proxy_port = _free_port(), _free_port()
        while self._proxy_port == self._api_port:
            self._proxy_port = _free_port()
        self.config_path.write_text(
            _config_text(
                api_port=self._api_port,
                proxy_port=self._proxy_port,
                clusters_dir=self.clusters_dir,
                idle_timeout_s=self.idle_timeout_s,
                start_timeout_s=self.start_timeout_s,
                max_workers=self.max_workers,
                password=self.password,
            )
        )
        env = {**os.environ, **self.env}
        with self.log_path.open("wb") as log_file:
            self._proc = subprocess.Popen(
                [str(_BIN / "dask-gateway-server"), "-f", str(self.config_path)],
                cwd=self.tmp_dir,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("dask-gateway-server up at %s (api %s)", self.address, self.api_address)
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.ready_timeout_s
        url = f"{self.address}/api/health"
        last = ""
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"dask-gateway-server exited with {self._proc.returncode} "
                    f"(config {self.config_path}):\n{self.log_text()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200 and json.load(resp).get("status") == "pass":
                        return
            except (OSError, ValueError) as err:
                last = str(err)
            time.sleep(0.2)
        raise RuntimeError(
            f"dask-gateway-server did not answer {url} within {self.ready_timeout_s} s "
            f"(last error: {last}):\n{self.log_text()}"
        )

    def _cluster_pids(self) -> list[int]:
        """Schedulers/workers the backend started: processes whose cwd is a cluster workdir."""
        root = str(self.clusters_dir.resolve())
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if cwd == root or cwd.startswith(root + os.sep):
                pids.append(int(entry.name))
        return pids

    def stop(self) -> None:
        """Stop the server (it stops its clusters first), then kill what is left of its group."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            # SIGTERM lets the gateway stop its clusters (their processes run in new sessions).
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log.warning("dask-gateway-server ignored SIGTERM; killing its process group")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the Go proxy, if it outlived its parent
        proc.wait(timeout=10)
        for pid in self._cluster_pids():
            log.warning("killing leftover gateway cluster process %d", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
