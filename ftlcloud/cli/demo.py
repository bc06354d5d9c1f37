"""``ftlcloud demo``: the main job on its embedded default."""

from __future__ import annotations

import click

from ftlcloud.errors import RunError


@click.command()
@click.option("--store", default="ftlcloud-demo", show_default=True, help="Store URL or directory.")
def demo(store: str) -> None:
    """Generate a synthetic study area and run the whole method on it."""
    raise RunError(
        "the demo is not implemented yet: it needs the tiled pipeline and the review loop "
        "(issues 4-6); nothing was run"
    )
