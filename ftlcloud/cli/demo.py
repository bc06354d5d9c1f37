"""``ftlcloud demo``: the main job on its embedded default."""

from __future__ import annotations

from typing import Any

import click

from ftlcloud.cli.options import cluster_options, cluster_spec


def _size(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


@click.command()
@click.option(
    "--store",
    default="ftlcloud-demo",
    show_default=True,
    help="Store URL: a local directory or s3://bucket/prefix.",
)
@click.option(
    "--size",
    default="default",
    show_default=True,
    help="Scene preset (small, default, large) or a side-length multiplier such as 1.5.",
)
@click.option("--seed", default=7, show_default=True, help="Seed of the synthetic scene.")
@click.option("--tile-size", default=256, show_default=True, help="Tile edge in pixels.")
@cluster_options
def demo(store: str, size: str, seed: int, tile_size: int, **kwargs: Any) -> None:
    """Generate a synthetic study area and run the whole method on it.

    Synthetic Qilian-like terrain with freeze-thaw landslides and decoys → ingest into the store →
    factors → five iterations with a reference reviewer → validation → report.
    """
    from ftlcloud.demo.run import print_demo, run_demo

    spec = cluster_spec(kwargs)
    result = run_demo(
        store, size=_size(size), seed=seed, cluster=spec, tile_size=tile_size, say=click.echo
    )
    print_demo(result, say=click.echo)
