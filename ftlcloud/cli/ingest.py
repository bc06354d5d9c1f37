"""``ftlcloud ingest``: put the inputs users have into the store as COGs, GeoParquet and STAC."""

from __future__ import annotations

from pathlib import Path

import click

from ftlcloud.io import ingest as api
from ftlcloud.io.store import Store

_store_option = click.option(
    "--store",
    "store_url",
    default="ftlcloud-store",
    show_default=True,
    help="Store URL: a directory or s3://bucket/prefix (S3 settings from FTLCLOUD_S3_* / AWS_*).",
)
_paths = click.argument(
    "paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path)
)


@click.group()
def ingest() -> None:
    """Ingest deformation, DEM, NDVI and inventories into the store."""


@ingest.command()
@_store_option
@click.option(
    "--unit",
    type=click.Choice(["m", "mm"]),
    required=True,
    help="Unit of the GeoTIFF values (MintPy writes m); stored in mm.",
)
@click.option(
    "--date-pattern",
    default=r"(\d{8})",
    show_default=True,
    help="Regex whose first group is the YYYYMMDD date in the file name.",
)
@_paths
def deformation(store_url: str, unit: str, date_pattern: str, paths: tuple[Path, ...]) -> None:
    """One GeoTIFF per acquisition date (a folder or files)."""
    items = api.ingest_deformation_geotiffs(
        Store(store_url),
        paths,
        unit=unit,  # type: ignore[arg-type]
        date_pattern=date_pattern,
    )
    click.echo(f"ingested {len(items)} deformation dates ({items[0].id} … {items[-1].id})")


@ingest.command()
@_store_option
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def mintpy(store_url: str, path: Path) -> None:
    """MintPy geocoded timeseries HDF5 (geo_timeseries*.h5)."""
    items = api.ingest_mintpy_h5(Store(store_url), path)
    click.echo(f"ingested {len(items)} deformation dates from {path.name}")


@ingest.command()
@_store_option
@_paths
def dem(store_url: str, paths: tuple[Path, ...]) -> None:
    """DEM GeoTIFF tiles (metres)."""
    items = api.ingest_dem(Store(store_url), paths)
    click.echo(f"ingested {len(items)} DEM tile(s)")


@ingest.command()
@_store_option
@_paths
def ndvi(store_url: str, paths: tuple[Path, ...]) -> None:
    """Annual NDVI GeoTIFFs, the year in each file name (e.g. ndvi_2019.tif)."""
    items = api.ingest_ndvi(Store(store_url), paths)
    click.echo(f"ingested NDVI for {', '.join(i.id for i in items)}")


@ingest.command()
@_store_option
@click.option(
    "--name", default="initial", show_default=True, help="Inventory name (item inventory-<name>)."
)
@click.argument("path", type=click.Path(exists=True, path_type=Path))
def inventory(store_url: str, name: str, path: Path) -> None:
    """A landslide inventory (GeoPackage, GeoJSON, Shapefile or GeoParquet; points or polygons)."""
    item = api.ingest_inventory(Store(store_url), path, name=name)
    click.echo(f"ingested {item.id}")
