"""``ftlcloud serve`` (a STAC API over the store) and ``ftlcloud index`` (sync a pgstac once)."""

from __future__ import annotations

import signal

import click

from ftlcloud.cli.options import store_option
from ftlcloud.io.store import Store
from ftlcloud.stacapi.index import HREF_MODES, HrefMode, PgstacIndex, SyncReport
from ftlcloud.stacapi.server import ServeConfig
from ftlcloud.stacapi.server import serve as serve_api

_hrefs_option = click.option(
    "--asset-hrefs",
    "hrefs",
    type=click.Choice(HREF_MODES),
    default="auto",
    show_default=True,
    help="Asset hrefs in results: s3:// (auto for S3 stores), http(s) from the S3 endpoint "
    "(public-read buckets), or local paths (auto for local stores).",
)


@click.command()
@store_option()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=int, default=8080, show_default=True, help="Port to bind.")
@click.option(
    "--pgstac",
    "pgstac_dsn",
    envvar="FTLCLOUD_PGSTAC_DSN",
    default=None,
    help="postgresql:// URL of the index database ($FTLCLOUD_PGSTAC_DSN); default: an embedded "
    "throw-away PostgreSQL rebuilt from the store on start.",
)
@_hrefs_option
@click.option(
    "--sync-interval",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds between syncs of the index with the store's catalog.",
)
def serve(
    store: str, host: str, port: int, pgstac_dsn: str | None, hrefs: str, sync_interval: float
) -> None:
    """Serve a STAC API (item search, CQL2 filter) over the store's catalog until Ctrl+C."""
    config = ServeConfig(
        host=host,
        port=port,
        pgstac_dsn=pgstac_dsn,
        hrefs=_mode(hrefs),
        sync_interval_s=sync_interval,
    )

    def ready(url: str, report: SyncReport) -> None:
        click.echo(f"indexed {report.summary()} from {Store(store).url}")
        click.echo(f"STAC API on {url}  (pystac_client.Client.open({url!r}); Ctrl+C stops)")

    # SIGTERM (docker stop, Kubernetes) unwinds like Ctrl+C so the embedded database is removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        serve_api(Store(store), config, on_ready=ready)
    except KeyboardInterrupt:
        click.echo("stopping")


@click.command()
@store_option()
@click.option(
    "--pgstac",
    "pgstac_dsn",
    envvar="FTLCLOUD_PGSTAC_DSN",
    required=True,
    help="postgresql:// URL of a pgstac database ($FTLCLOUD_PGSTAC_DSN).",
)
@_hrefs_option
def index(store: str, pgstac_dsn: str, hrefs: str) -> None:
    """Sync the store's catalog into a pgstac database once (e.g. after a batch run)."""
    idx = PgstacIndex(pgstac_dsn)
    version = idx.migrate()
    report = idx.sync(Store(store), hrefs=_mode(hrefs))
    click.echo(f"pgstac {version}: {report.summary()}")


def _mode(value: str) -> HrefMode:
    assert value in HREF_MODES
    return value  # type: ignore[return-value]
