"""Options shared by several commands."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from ftlcloud.pipeline.cluster import ClusterSpec

F = Callable[..., Any]

DEFAULT_STORE = "ftlcloud-store"


def store_option(default: str | None = None) -> Callable[[F], F]:
    return click.option(
        "--store",
        default=lambda: os.environ.get("FTLCLOUD_STORE", default or DEFAULT_STORE),
        show_default=f"$FTLCLOUD_STORE or {default or DEFAULT_STORE}",
        help="Store URL: a local directory or s3://bucket/prefix (S3 settings from FTLCLOUD_S3_* / AWS_*).",
    )


def cluster_options(f: F) -> F:
    """--scheduler / --gateway / --gateway-auth / --workers, turned into ``cluster=ClusterSpec``."""
    options = [
        click.option("--scheduler", help="Join an existing Dask scheduler (tcp://host:8786)."),
        click.option("--gateway", help="Ask this Dask-Gateway (http://host) for a cluster."),
        click.option(
            "--gateway-proxy", help="Dask-Gateway scheduler proxy address, if not the default."
        ),
        click.option(
            "--gateway-auth",
            type=click.Choice(["basic", "kerberos", "jupyterhub"]),
            help="Dask-Gateway auth (default: dask-gateway's own config, DASK_GATEWAY__AUTH__TYPE).",
        ),
        click.option(
            "--workers", type=int, help="Workers (default: one per core, or 2 on a Gateway)."
        ),
        click.option("--worker-cores", type=float, help="Gateway option worker_cores."),
        click.option("--worker-memory", type=float, help="Gateway option worker_memory (GiB)."),
        click.option("--image", help="Gateway option image (the ftlcloud image for workers)."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def cluster_spec(kwargs: dict[str, Any]) -> ClusterSpec:
    """Pop the cluster options from a command's kwargs."""
    gateway_options = {
        name: kwargs.pop(opt)
        for opt, name in (
            ("worker_cores", "worker_cores"),
            ("worker_memory", "worker_memory"),
            ("image", "image"),
        )
        if kwargs.get(opt) is not None
    }
    for opt in ("worker_cores", "worker_memory", "image"):
        kwargs.pop(opt, None)
    return ClusterSpec(
        scheduler=kwargs.pop("scheduler"),
        gateway=kwargs.pop("gateway"),
        gateway_proxy=kwargs.pop("gateway_proxy"),
        gateway_auth=kwargs.pop("gateway_auth"),
        n_workers=kwargs.pop("workers"),
        gateway_options=gateway_options,
    )
