"""``ftlcloud review export|page|apply`` and ``ftlcloud validate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ftlcloud.cli.options import store_option
from ftlcloud.cli.run import _store


@click.group()
def review() -> None:
    """Review an iteration's candidates: export for QGIS, a review page, apply decisions."""


@review.command()
@store_option()
@click.option("--run-id", required=True)
@click.option("--iteration", "k", type=int, required=True)
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
def export(store: str, run_id: str, k: int, out: Path) -> None:
    """Write the candidates as a GeoPackage with an empty `decision` field (for QGIS)."""
    from ftlcloud.pipeline.api import read_candidates
    from ftlcloud.review.decisions import export_review_gpkg

    export_review_gpkg(read_candidates(_store(store), run_id, k), out)
    click.echo(f"wrote {out}: fill `decision` with accept/reject, then `ftlcloud review apply`")


@review.command()
@store_option()
@click.option("--run-id", required=True)
@click.option("--iteration", "k", type=int, required=True)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the page here."
)
def page(store: str, run_id: str, k: int, out: Path | None) -> None:
    """Build the self-contained HTML review page and store it beside the iteration."""
    from ftlcloud.pipeline.review import publish_review_page

    s = _store(store)
    href, html = publish_review_page(s, run_id, k)
    if out is not None:
        out.write_text(html, encoding="utf-8")
        click.echo(f"wrote {out}")
    click.echo(f"review page: {href}")


@review.command()
@store_option()
@click.option("--run-id", required=True)
@click.option("--iteration", "k", type=int, required=True)
@click.option("--inventory", "inventory_name", help="Ingested inventory the run started from.")
@click.argument("decisions", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def apply(store: str, run_id: str, k: int, inventory_name: str | None, decisions: Path) -> None:
    """Validate a decisions file (CSV, GeoJSON, GeoPackage, GeoParquet) and publish inventory k+1."""
    from ftlcloud.io.catalog import Catalog
    from ftlcloud.pipeline.api import initial_inventory_ref, publish_review, read_candidates
    from ftlcloud.review.decisions import read_decisions, read_review_gpkg

    s = _store(store)
    candidates = read_candidates(s, run_id, k)
    if decisions.suffix.lower() == ".gpkg":
        table = read_review_gpkg(decisions)
    else:
        table = read_decisions(decisions, crs=candidates.crs)
    ref, counts = publish_review(
        s, run_id, k, table, initial=initial_inventory_ref(Catalog(s), inventory_name)
    )
    click.echo(
        f"iteration {k}: {counts['accepted']} accepted, {counts['rejected']} rejected, "
        f"{counts['added']} added, {counts['undecided']} undecided → {counts['new_ftls']} new FTLs"
    )
    click.echo(f"published {ref.item_id}; continue with `ftlcloud iterate --run-id {run_id}`")


@click.command()
@click.option(
    "--records",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Verification records: a CSV with a `status` column of TP / FP / FN.",
)
@click.option(
    "--detected",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Detected FTLs (any vector format) for object-level matching.",
)
@click.option(
    "--reference",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Reference inventory for object-level matching.",
)
@click.option(
    "--rule", type=click.Choice(["intersects", "iou"]), default="intersects", show_default=True
)
@click.option("--min-iou", default=0.1, show_default=True)
def validate(
    records: Path | None, detected: Path | None, reference: Path | None, rule: str, min_iou: float
) -> None:
    """TPR, FPR, FNR (Eq. 3-5) from verification records; precision/recall/F1 against a reference."""
    import geopandas as gpd
    import pandas as pd

    from ftlcloud.errors import InputError
    from ftlcloud.science.metrics import match_objects, verification_rates_from_records

    if records is None and (detected is None or reference is None):
        raise InputError("give --records, or both --detected and --reference")
    if records is not None:
        table = pd.read_csv(records)
        if "status" not in table.columns:
            raise InputError(
                f"{records}: no `status` column (values TP, FP, FN); it has {list(table.columns)}"
            )
        r = verification_rates_from_records(table["status"].astype(str))
        click.echo(
            f"N = {r.n} (TP {r.n_tp}, FP {r.n_fp}, FN {r.n_fn}): TPR {r.tpr_pct:.1f} %, "
            f"FPR {r.fpr_pct:.1f} %, FNR {r.fnr_pct:.1f} %"
        )
    if detected is not None and reference is not None:

        def read(p: Path) -> Any:
            return gpd.read_parquet(p) if p.suffix == ".parquet" else gpd.read_file(p)

        m = match_objects(read(detected), read(reference), rule=rule, min_iou=min_iou)  # type: ignore[arg-type]
        click.echo(
            f"object match ({m.rule}): precision {m.precision:.3f}, recall {m.recall:.3f}, F1 {m.f1:.3f} "
            f"(TP {m.n_true_positive}, FP {m.n_false_positive}, FN {m.n_false_negative})"
        )
