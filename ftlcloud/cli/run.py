"""``ftlcloud factors``, ``ftlcloud run`` (one iteration) and ``ftlcloud iterate`` (the loop)."""

from __future__ import annotations

import logging
from typing import Any

import click

from ftlcloud.cli.options import cluster_options, cluster_spec, store_option
from ftlcloud.errors import InputError

log = logging.getLogger(__name__)


def _store(url: str) -> Any:
    from ftlcloud.io.settings import StoreSettings
    from ftlcloud.io.store import Store

    store = Store(url, StoreSettings.from_env())
    store.check()
    return store


def _settings(tile_size: int, min_valid_dates: int, ndvi_years: str | None) -> Any:
    from ftlcloud.pipeline.run import FactorSettings

    years = None
    if ndvi_years:
        try:
            early, late = (int(v) for v in ndvi_years.split(","))
        except ValueError as err:
            raise InputError(f"--ndvi-years {ndvi_years!r}: give two years like 2017,2019") from err
        years = (early, late)
    return FactorSettings(tile_size=tile_size, min_valid_dates=min_valid_dates, ndvi_years=years)


force_unlock_option = click.option(
    "--force-unlock",
    is_flag=True,
    help="Remove the run's lock first (only when the run that holds it is dead).",
)


def _unlock(store: Any, run_id: str, force: bool) -> None:
    """Clear a lock left by a dead run, as the user asked with --force-unlock."""
    if not force:
        return
    from ftlcloud.pipeline.run import check_run_id, force_unlock

    owner = force_unlock(store, check_run_id(run_id))
    if owner is not None:
        click.echo(f"removed the lock of run {run_id} held by {owner.describe()}", err=True)


rules_option = click.option(
    "--rules",
    default="derived",
    show_default=True,
    help="derived, table2, or a JSON schedule file.",
)


def factor_options(f: Any) -> Any:
    f = click.option(
        "--ndvi-years", help="Earlier,later NDVI years for ΔNDVI (default: first,last)."
    )(f)
    f = click.option(
        "--min-valid-dates", default=10, show_default=True, help="Dates a pixel's fit needs."
    )(f)
    f = click.option("--tile-size", default=512, show_default=True, help="Tile edge in pixels.")(f)
    return f


def _reviewer(spec: str | None, store: Any) -> Any:
    """``reference:PATH`` (a reference inventory file) → the simulated reviewer; None → wait."""
    if spec is None:
        return None
    if not spec.startswith("reference:"):
        raise InputError(
            f"--reviewer {spec!r}: use reference:PATH (a GeoPackage/GeoJSON/GeoParquet of reference "
            "FTLs) or leave it out to stop after each iteration for human review"
        )
    import geopandas as gpd

    from ftlcloud.pipeline.loop import ReferenceReviewer

    path = spec.split(":", 1)[1]
    try:
        ref = gpd.read_parquet(path) if path.endswith(".parquet") else gpd.read_file(path)
    except Exception as err:
        raise InputError(f"cannot read the reference inventory {path!r}: {err}") from err
    return ReferenceReviewer(ref)


@click.command()
@store_option()
@click.option("--run-id", required=True, help="Run identifier (letters, digits, . _ -).")
@factor_options
@force_unlock_option
@cluster_options
def factors(
    store: str,
    run_id: str,
    tile_size: int,
    min_valid_dates: int,
    ndvi_years: str | None,
    force_unlock: bool,
    **kw: Any,
) -> None:
    """Compute the factors of a run once (seasonal fit, terrain, ΔNDVI) as COGs."""
    from ftlcloud.pipeline.api import compute_factors

    s = _store(store)
    _unlock(s, run_id, force_unlock)
    res = compute_factors(
        s,
        run_id,
        settings=_settings(tile_size, min_valid_dates, ndvi_years),
        cluster=cluster_spec(kw),
    )
    if res.skipped:
        click.echo(f"factors of run {run_id} already complete: {res.item_href}")
    else:
        click.echo(
            f"factors: {res.tiles_computed}/{res.tiles_total} tiles computed, {res.pixels} pixels "
            f"({res.fitted_pixels} fitted) in {res.seconds:.1f} s → {res.item_href}"
        )


@click.command(name="run")
@store_option()
@click.option("--run-id", required=True, help="Run identifier.")
@click.option("--iteration", "k", type=int, required=True, help="Iteration number (1-based).")
@rules_option
@click.option(
    "--inventory",
    "inventory_name",
    help="Ingested inventory name for iteration 1 (default: newest).",
)
@click.option(
    "--min-area-ha", default=0.0, show_default=True, help="Drop candidates smaller than this."
)
@force_unlock_option
@cluster_options
def run_cmd(
    store: str,
    run_id: str,
    k: int,
    rules: str,
    inventory_name: str | None,
    min_area_ha: float,
    force_unlock: bool,
    **kw: Any,
) -> None:
    """Run one iteration: thresholds → masks → candidates, published as a STAC item."""
    from ftlcloud.io.catalog import Catalog
    from ftlcloud.pipeline.api import initial_inventory_ref, inventory_for_iteration, run_iteration
    from ftlcloud.pipeline.run import check_run_id
    from ftlcloud.science.rules import parse_rules

    check_run_id(run_id)
    s = _store(store)
    _unlock(s, run_id, force_unlock)
    initial = initial_inventory_ref(Catalog(s), inventory_name)
    res = run_iteration(
        s,
        run_id,
        k,
        rules=parse_rules(rules),
        inventory=inventory_for_iteration(s, run_id, k, initial),
        cluster=cluster_spec(kw),
        min_area_ha=min_area_ha,
    )
    click.echo(f"iteration {k}: {res.thresholds.describe()}")
    click.echo(f"{res.n_candidates} candidates → {res.item_href}")


@click.command()
@store_option()
@click.option("--run-id", required=True, help="Run identifier.")
@rules_option
@click.option(
    "--reviewer",
    help="reference:PATH to decide by overlap with a reference inventory; omit to stop after each "
    "iteration and wait for `ftlcloud review apply`.",
)
@click.option(
    "--inventory", "inventory_name", help="Ingested inventory name to start from (default: newest)."
)
@click.option("--max-iterations", default=5, show_default=True)
@click.option(
    "--stable-band",
    default=10.0,
    show_default=True,
    help="Stop at this |velocity| threshold (mm/a).",
)
@click.option("--min-area-ha", default=0.0, show_default=True)
@click.option(
    "--report/--no-report",
    default=True,
    show_default=True,
    help="Publish the run report at the end.",
)
@factor_options
@force_unlock_option
@cluster_options
def iterate(
    store: str,
    run_id: str,
    rules: str,
    reviewer: str | None,
    inventory_name: str | None,
    max_iterations: int,
    stable_band: float,
    min_area_ha: float,
    report: bool,
    tile_size: int,
    min_valid_dates: int,
    ndvi_years: str | None,
    force_unlock: bool,
    **kw: Any,
) -> None:
    """Run (or resume) the iterative loop until the stop rule holds."""
    from ftlcloud.pipeline.loop import iterate as run_loop
    from ftlcloud.pipeline.reporting import publish_report
    from ftlcloud.pipeline.run import check_run_id, run_lock
    from ftlcloud.science.rules import parse_rules

    s = _store(store)
    _unlock(s, run_id, force_unlock)
    check_run_id(run_id)
    # The report is written under the run's keys too: hold the lock until it is published.
    with run_lock(s, run_id):
        result = run_loop(
            s,
            run_id,
            rules=parse_rules(rules),
            reviewer=_reviewer(reviewer, s),
            initial_inventory=inventory_name,
            settings=_settings(tile_size, min_valid_dates, ndvi_years),
            cluster=cluster_spec(kw),
            max_iterations=max_iterations,
            stable_band_mm_a=stable_band,
            min_area_ha=min_area_ha,
        )
        click.echo(result.table().to_string(index=False))
        click.echo(f"stop: {result.stop_reason}")
        if report and result.waiting_for_review is None and result.iterations:
            click.echo(f"report: {publish_report(s, result, title=f'ftlcloud run {run_id}')}")
