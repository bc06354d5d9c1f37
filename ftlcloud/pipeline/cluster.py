"""Where the Dask work runs: a LocalCluster by default, an existing scheduler, or a Dask-Gateway."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from distributed import Client, LocalCluster

from ftlcloud.errors import ConfigError, RunError

log = logging.getLogger(__name__)

#: The cluster options ftlcloud sends to a Dask-Gateway (``gateway.new_cluster(**options)``); the
#: Helm values in deploy/ define exactly these (the deploy tests check it).
GATEWAY_OPTION_NAMES = ("image", "worker_cores", "worker_memory", "environment")

#: Non-secret settings forwarded to gateway workers as ``environment``; credentials are never sent as
#: cluster options (they would be stored by the gateway) but come from a Kubernetes Secret.
FORWARDED_ENV = (
    "FTLCLOUD_S3_ENDPOINT_URL",
    "FTLCLOUD_S3_REGION",
    "FTLCLOUD_S3_PATH_STYLE",
    "FTLCLOUD_S3_USE_TLS",
)


@dataclass(frozen=True)
class ClusterSpec:
    """How to get a Dask cluster."""

    scheduler: str | None = None
    """Address of an existing scheduler (``tcp://host:8786``); joins it."""
    gateway: str | None = None
    """Dask-Gateway address (``http://gateway``); asks it for a new cluster."""
    gateway_proxy: str | None = None
    """Dask-Gateway scheduler proxy address, when it differs from the default."""
    gateway_auth: str | None = None
    """Dask-Gateway auth type: ``basic``, ``kerberos``, ``jupyterhub`` (default: its config)."""
    n_workers: int | None = None
    """Workers: LocalCluster size (default: one per core) or the Gateway's scale."""
    threads_per_worker: int = 1
    """Threads per LocalCluster worker; GDAL and the fit are already vectorised."""
    memory_limit: str | None = None
    """Memory limit per LocalCluster worker (default: the machine split evenly)."""
    gateway_options: Mapping[str, Any] = field(default_factory=dict)
    """Extra cluster options for the Gateway (names in :data:`GATEWAY_OPTION_NAMES`)."""
    client: Client | None = field(default=None, compare=False, repr=False)
    """An already connected client to reuse (its cluster is not closed here)."""

    def __post_init__(self) -> None:
        if self.scheduler and self.gateway:
            raise ConfigError("give either --scheduler or --gateway, not both")
        unknown = set(self.gateway_options) - set(GATEWAY_OPTION_NAMES)
        if unknown:
            raise ConfigError(
                f"unknown Dask-Gateway cluster option(s) {sorted(unknown)}; "
                f"known: {', '.join(GATEWAY_OPTION_NAMES)}"
            )


def gateway_cluster_options(spec: ClusterSpec) -> dict[str, Any]:
    """The options sent to the Gateway: the user's, plus the forwarded non-secret store settings."""
    options = dict(spec.gateway_options)
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    env.update(options.get("environment") or {})
    if env:
        options["environment"] = env
    return options


@contextmanager
def connect(spec: ClusterSpec | None = None) -> Iterator[Client]:
    """Yield a connected :class:`distributed.Client` for ``spec``, closing what it started."""
    spec = spec or ClusterSpec()
    if spec.client is not None:
        yield spec.client
        return
    if spec.scheduler:
        log.info("joining the Dask scheduler at %s", spec.scheduler)
        try:
            client = Client(spec.scheduler, timeout="30s")
        except OSError as err:
            raise RunError(
                f"cannot reach the Dask scheduler at {spec.scheduler}: {err}; "
                "check the address or omit --scheduler to use a local cluster"
            ) from err
        try:
            yield client
        finally:
            client.close()
        return
    if spec.gateway:
        with _gateway_client(spec) as client:
            yield client
        return
    n_workers = spec.n_workers or max(1, os.cpu_count() or 1)
    log.info("starting a LocalCluster with %d worker(s)", n_workers)
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=spec.threads_per_worker,
            memory_limit=spec.memory_limit or "auto",
            processes=True,
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@contextmanager
def _gateway_client(spec: ClusterSpec) -> Iterator[Client]:
    from dask_gateway import Gateway
    from dask_gateway.auth import get_auth

    auth = get_auth(spec.gateway_auth) if spec.gateway_auth else None
    gateway = Gateway(spec.gateway, proxy_address=spec.gateway_proxy, auth=auth)
    try:
        options = gateway_cluster_options(spec)
        try:
            available = gateway.cluster_options()
        except Exception as err:
            raise RunError(
                f"cannot reach the Dask-Gateway at {spec.gateway}: {err}; check the address and "
                "the gateway.auth settings (--gateway-auth, DASK_GATEWAY__AUTH__*)"
            ) from err
        missing = [k for k in options if k not in available]
        if missing:
            log.warning(
                "the Dask-Gateway at %s does not offer cluster option(s) %s; they are not sent",
                spec.gateway,
                missing,
            )
            options = {k: v for k, v in options.items() if k in available}
        log.info("asking the Dask-Gateway at %s for a cluster", spec.gateway)
        try:
            cluster = gateway.new_cluster(**options)
        except Exception as err:
            raise RunError(
                f"the Dask-Gateway at {spec.gateway} refused a new cluster: {err}"
            ) from err
        try:
            cluster.scale(spec.n_workers or 2)
            client = cluster.get_client()
            try:
                try:
                    client.wait_for_workers(1, timeout=300)
                except TimeoutError as err:
                    raise RunError(
                        f"the Dask-Gateway cluster at {spec.gateway} started no worker within 300 s; "
                        "check the gateway's worker image and resource limits"
                    ) from err
                yield client
            finally:
                client.close()
        finally:
            cluster.shutdown()
    finally:
        gateway.close()
