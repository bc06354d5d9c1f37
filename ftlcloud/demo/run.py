"""The main job on its embedded default: synthetic area → ingest → factors → 5 iterations with the
reference reviewer → validation → report."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ftlcloud.io.catalog import Catalog
from ftlcloud.io.settings import StoreSettings
from ftlcloud.io.store import Store
from ftlcloud.pipeline.cluster import ClusterSpec
from ftlcloud.pipeline.loop import (
    LoopResult,
    ReferenceReviewer,
    accepted_ftls,
    iterate,
    new_candidate_count,
)
from ftlcloud.pipeline.reporting import publish_report, validate_run
from ftlcloud.pipeline.run import FactorSettings
from ftlcloud.science.metrics import ObjectMatch, VerificationRates
from ftlcloud.science.rules import parse_rules

log = logging.getLogger(__name__)

DEMO_RUN_ID = "demo"


@dataclass
class DemoResult:
    """What the demo found, for printing and for tests."""

    store_url: str
    loop: LoopResult
    table: pd.DataFrame
    report_href: str
    match: ObjectMatch
    rates: VerificationRates
    n_missing: int
    """Landslides absent from the starting inventory (what the method must find)."""
    n_missing_found: int
    recall_missing: float
    candidates_per_found: float
    seconds: float
    summary: dict[str, object]


def _ingest(store: Store, paths: object, say: Callable[[str], None]) -> None:
    from ftlcloud.io import ingest

    catalog = Catalog(store)
    if catalog.items("deformation") and catalog.items("inventory"):
        say("inputs already ingested; reusing them")
        return
    p = paths  # ScenePaths
    say("ingesting the MintPy time series, DEM tiles, NDVI and the inventory")
    ingest.ingest_mintpy_h5(store, p.timeseries_h5)  # type: ignore[attr-defined]
    ingest.ingest_dem(store, list(p.dem))  # type: ignore[attr-defined]
    ingest.ingest_ndvi(store, dict(p.ndvi))  # type: ignore[attr-defined]
    ingest.ingest_inventory(store, p.inventory, name="initial")  # type: ignore[attr-defined]


def run_demo(
    store_url: str = "ftlcloud-demo",
    *,
    size: float | str = "default",
    seed: int = 7,
    cluster: ClusterSpec | None = None,
    tile_size: int = 256,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Run the whole method on a synthetic Qilian-like study area and validate it against truth."""
    from ftlcloud.demo.scene import SceneSpec, generate_scene, scene_summary, write_scene

    start = time.perf_counter()
    spec = (
        SceneSpec.preset(size, seed=seed)
        if isinstance(size, str)
        else SceneSpec.sized(size, seed=seed)
    )
    say(
        f"generating a synthetic study area: {spec.width} x {spec.height} px at {spec.resolution_m:g} m, "
        f"{len(spec.dates)} acquisitions, seed {seed}"
    )
    scene = generate_scene(spec)
    summary = scene_summary(scene)
    store = Store(store_url, StoreSettings.from_env())
    store.check()
    with tempfile.TemporaryDirectory(prefix="ftlcloud-demo-") as tmp:
        paths = write_scene(scene, Path(tmp), dem_tiles=True)
        _ingest(store, paths, say)
    truth = scene.truth
    reviewer = ReferenceReviewer(truth, rule="intersects", boundary="reference")
    say(
        "computing factors once, then iterating (thresholds derived from the inventory, "
        "|velocity| 50 → 10 mm/a)"
    )
    loop = iterate(
        store,
        DEMO_RUN_ID,
        rules=parse_rules("derived"),
        reviewer=reviewer,
        settings=FactorSettings(tile_size=tile_size),
        cluster=cluster,
        max_iterations=5,
        progress=progress,
    )
    found = accepted_ftls(loop.iterations, store, DEMO_RUN_ID)
    match, rates = validate_run(found, truth[~truth["in_inventory"]], rule="intersects")
    missing = truth[~truth["in_inventory"]]
    n_found = match.n_true_positive
    n_candidates = new_candidate_count(loop.iterations)
    report = publish_report(
        store,
        loop,
        title="ftlcloud demo: synthetic Qilian-like study area",
        match=match,
        rates=rates,
    )
    table = loop.table()
    return DemoResult(
        store_url=store.url,
        loop=loop,
        table=table,
        report_href=report,
        match=match,
        rates=rates,
        n_missing=len(missing),
        n_missing_found=n_found,
        recall_missing=n_found / max(len(missing), 1),
        candidates_per_found=n_candidates / max(n_found, 1),
        seconds=time.perf_counter() - start,
        summary=summary,
    )


def print_demo(result: DemoResult, say: Callable[[str], None] = print) -> None:
    """The demo's closing output: Table 2 for this run, the metrics, where the report is."""
    say("")
    say("Table 2 for this run (thresholds and results per iteration):")
    say(result.table.to_string(index=False))
    say("")
    say(f"stop: {result.loop.stop_reason}")
    m, r = result.match, result.rates
    say(
        f"landslides missing from the starting inventory: {result.n_missing}; found "
        f"{result.n_missing_found} (recall {100 * result.recall_missing:.1f} %)"
    )
    say(
        "candidates to review (not overlapping a known FTL) per landslide found: "
        f"{result.candidates_per_found:.2f}"
    )
    say(
        f"object match vs truth ({m.rule}): precision {_pct(m.precision)}, recall {_pct(m.recall)}, "
        f"F1 {_pct(m.f1)}"
    )
    say(
        f"Eq. 3-5 over N = {r.n}: TPR {r.tpr_pct:.1f} %, FPR {r.fpr_pct:.1f} %, FNR {r.fnr_pct:.1f} %"
    )
    say(f"report: {result.report_href}")
    say(f"catalog: {result.store_url.rstrip('/')}/catalog.json   ({result.seconds:.0f} s)")


def _pct(v: float) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.1f} %"


__all__ = ["DEMO_RUN_ID", "DemoResult", "print_demo", "run_demo"]
