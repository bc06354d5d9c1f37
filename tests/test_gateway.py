"""ftlcloud.pipeline.cluster.connect() against a real dask-gateway-server (local backend).

The server runs the production cluster options (deploy/helm/dask-gateway-values.yaml); see
tests/gateway_server.py.
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import urllib.request
from collections.abc import Iterator

import dask
import dask_gateway  # noqa: F401  (see _client_auth)
import numpy as np
import pytest
from distributed import get_worker
from gateway_server import GatewayServer

from ftlcloud.errors import RunError
from ftlcloud.pipeline.cluster import ClusterSpec, connect

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Fake credentials given to the server process only; the workers must see them (as they would
#: from the Kubernetes Secret), and they must never be written to the server's config.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "gw-test-key-id", "AWS_SECRET_ACCESS_KEY": "gw-test-secret"}
ENDPOINT = "http://s3.gateway-test.invalid:9000"


@pytest.fixture(scope="module")
def gateway_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """A real dask-gateway-server on free ports, AWS_ENV in its environment."""
    with GatewayServer(tmp_path_factory.mktemp("dask-gateway"), env=AWS_ENV) as server:
        yield server


def _clusters(server: GatewayServer) -> list[str]:
    """Names of the server's running/pending clusters, from its HTTP API."""
    auth = base64.b64encode(f"{getpass.getuser()}:".encode()).decode()
    request = urllib.request.Request(
        f"{server.address}/api/v1/clusters/", headers={"Authorization": f"Basic {auth}"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return sorted(json.load(resp))


def test_connect_runs_work_on_a_gateway_worker_with_the_forwarded_environment(
    gateway_server: GatewayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTLCLOUD_S3_ENDPOINT_URL", ENDPOINT)
    spec = ClusterSpec(
        gateway=gateway_server.address,
        gateway_auth="basic",
        n_workers=1,
        gateway_options={"worker_cores": 1, "worker_memory": 1},
    )
    assert _clusters(gateway_server) == []
    with connect(spec) as client:
        # The scheduler is reached through the gateway's proxy, not a LocalCluster.
        assert client.scheduler is not None
        assert str(client.scheduler.address).startswith(gateway_server.proxy_address + "/")
        assert len(_clusters(gateway_server)) == 1

        def sum_of_squares(n: int) -> tuple[float, int, str]:
            # Defined here so it is pickled by value: workers cannot import test modules.
            k = np.arange(n, dtype=np.float64)
            return float(np.sum(k * k)), os.getpid(), get_worker().address

        n = 1000
        total, pid, worker = client.submit(sum_of_squares, n, pure=False).result(timeout=60)
        assert total == (n - 1) * n * (2 * n - 1) / 6
        assert pid != os.getpid()

        workers = client.scheduler_info()["workers"]
        assert len(workers) == 1 and worker in workers
        # worker_cores/worker_memory went through the production options handler.
        assert workers[worker]["nthreads"] == 1
        assert workers[worker]["memory_limit"] == 2**30

        # os.getenv, not os.environ.get: a bound method would pickle the client's os.environ.
        assert client.run(os.getenv, "FTLCLOUD_S3_ENDPOINT_URL") == {worker: ENDPOINT}
        for name, value in AWS_ENV.items():
            assert client.run(os.getenv, name) == {worker: value}
            assert client.run_on_scheduler(os.getenv, name) == value
    # connect() shut down the cluster it asked for.
    assert _clusters(gateway_server) == []
    config = gateway_server.config_path.read_text()
    assert not any(value in config for value in AWS_ENV.values())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"image": "docker.io/evil/miner:1"}, "not a tag or digest of ftlcloud"),
        ({"environment": {"AWS_SECRET_ACCESS_KEY": "x"}}, "may not be sent as a cluster option"),
        ({"worker_memory": 4096}, "worker_memory"),
    ],
)
def test_connect_reports_a_cluster_the_gateway_refuses(
    gateway_server: GatewayServer, options: dict[str, object], message: str
) -> None:
    spec = ClusterSpec(
        gateway=gateway_server.address, gateway_auth="basic", gateway_options=options
    )
    with pytest.raises(RunError, match="refused a new cluster") as info, connect(spec):
        pass
    assert message in str(info.value)
    assert _clusters(gateway_server) == []


# ------------------------------------------------------------------- shared-password gateway

GATEWAY_PASSWORD = "gw-test-password"


@pytest.fixture(scope="module")
def password_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """A gateway requiring a shared password, as the Helm release does."""
    tmp = tmp_path_factory.mktemp("dask-gateway-password")
    with GatewayServer(tmp, password=GATEWAY_PASSWORD) as server:
        yield server


def _client_auth(password: str) -> dict[str, object]:
    # Like deploy/k8s/configmap.yaml: DASK_GATEWAY__AUTH__KWARGS__*, password as a template.
    # dask_gateway must be imported before dask.config.set, else its defaults are not loaded yet,
    # set() records "gateway" as new and deletes the whole tree on exit.
    return {
        "gateway.auth.type": "basic",
        "gateway.auth.kwargs": {"username": "ftlcloud-batch", "password": password},
    }


def test_connect_authenticates_with_the_password_template_of_the_configmap(
    password_gateway: GatewayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_PASSWORD", GATEWAY_PASSWORD)
    # A foreign image: the options handler (which only runs for an authenticated user) refuses
    # it, so no cluster is started but both authenticated requests were accepted.
    spec = ClusterSpec(
        gateway=password_gateway.address,
        gateway_auth="basic",
        gateway_options={"image": "docker.io/evil/miner:1"},
    )
    with (
        dask.config.set(_client_auth("{GATEWAY_PASSWORD}")),
        pytest.raises(RunError, match="not a tag or digest of ftlcloud"),
        connect(spec),
    ):
        pass
