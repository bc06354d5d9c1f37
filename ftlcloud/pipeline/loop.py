"""The semi-automatic iterative loop (paper section 3.1.2, Table 2) with review and validation.

factors once → for k = 1, 2, …: iteration k → review (a reviewer callable, or stop and wait for
human decisions) → inventory k+1 → stop when the |velocity| threshold reaches the stable band, when
an iteration accepts nothing new, or after ``max_iterations``. Every step is published to the
catalog as it completes, so a rerun resumes where the last one stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd

from ftlcloud.errors import InputError
from ftlcloud.io.catalog import Catalog
from ftlcloud.io.store import Store
from ftlcloud.pipeline.api import (
    ITERATIONS_COLLECTION,
    FactorsResult,
    InventoryRef,
    IterationResult,
    compute_factors,
    initial_inventory_ref,
    inventory_for_iteration,
    iteration_item_id,
    publish_review,
    run_iteration,
)
from ftlcloud.pipeline.cluster import ClusterSpec
from ftlcloud.pipeline.run import FactorSettings, check_run_id, run_lock
from ftlcloud.science.rules import STABLE_BAND_MM_A, Rules

log = logging.getLogger(__name__)

#: A reviewer gets the candidates of iteration k and returns decisions (candidate_id, decision,
#: geometry, note), as ftlcloud.review.decisions produces them.
Reviewer = Callable[[gpd.GeoDataFrame, int], gpd.GeoDataFrame]


@dataclass(frozen=True)
class ReferenceReviewer:
    """The simulated reviewer: decides by overlap with a reference inventory."""

    reference: gpd.GeoDataFrame
    rule: str = "intersects"
    min_fraction: float = 0.1
    boundary: str = "reference"

    def __call__(self, candidates: gpd.GeoDataFrame, k: int) -> gpd.GeoDataFrame:
        from ftlcloud.review.decisions import reference_decisions

        return reference_decisions(
            candidates,
            self.reference,
            rule=self.rule,  # type: ignore[arg-type]
            min_fraction=self.min_fraction,
            boundary=self.boundary,  # type: ignore[arg-type]
        )


@dataclass
class LoopResult:
    """How a loop ended."""

    run_id: str
    factors: FactorsResult
    iterations: list[IterationResult] = field(default_factory=list)
    stop_reason: str = ""
    waiting_for_review: int | None = None
    """Iteration whose decisions are awaited (no reviewer given), else None."""
    final_inventory: InventoryRef | None = None

    def table(self) -> pd.DataFrame:
        """Table 2 of the paper for this run."""
        rows = []
        for r in self.iterations:
            t = r.thresholds
            rows.append(
                {
                    "iteration": r.iteration,
                    "elevation (m)": t.elevation_m.label,
                    "slope (°)": t.slope_deg.label,
                    "aspect (°)": t.aspect_label,
                    "|velocity| (mm/a)": f"≥ {t.velocity_abs_min_mm_a:g}",
                    "candidates": r.n_candidates,
                    "accepted": r.counts.get("accepted", 0),
                    "new FTLs": r.counts.get("new_ftls", 0),
                }
            )
        return pd.DataFrame(rows)


def _reviewed_counts(catalog: Catalog, run_id: str, k: int) -> dict[str, int] | None:
    item = catalog.get_item(ITERATIONS_COLLECTION, iteration_item_id(run_id, k))
    if item is None or item.properties.get("ftl:status") != "reviewed":
        return None
    p = item.properties
    return {
        "accepted": int(p.get("ftl:n_accepted", 0)),
        "rejected": int(p.get("ftl:n_rejected", 0)),
        "added": int(p.get("ftl:n_added", 0)),
        "undecided": int(p.get("ftl:n_undecided", 0)),
        "new_ftls": int(p.get("ftl:new_ftls", 0)),
    }


def iterate(
    store: Store,
    run_id: str,
    *,
    rules: Rules,
    reviewer: Reviewer | None,
    initial_inventory: str | None = None,
    settings: FactorSettings | None = None,
    cluster: ClusterSpec | None = None,
    max_iterations: int = 5,
    stable_band_mm_a: float = STABLE_BAND_MM_A,
    min_area_ha: float = 0.0,
    progress: bool = True,
    on_iteration: Callable[[IterationResult], None] | None = None,
) -> LoopResult:
    """Run (or resume) the loop until its stop rule holds; see the module docstring."""
    if max_iterations < 1:
        raise InputError(f"max_iterations must be at least 1, got {max_iterations}")
    check_run_id(run_id)
    with ExitStack() as stack:
        # One hold for the whole loop: no other process can slip in between two stages.
        stack.enter_context(run_lock(store, run_id))
        client_spec = _shared_cluster(stack, cluster)
        factors = compute_factors(
            store, run_id, settings=settings, cluster=client_spec, progress=progress
        )
        catalog = Catalog(store)
        initial = initial_inventory_ref(catalog, initial_inventory)
        result = LoopResult(run_id, factors)
        inventory = initial
        for k in range(1, max_iterations + 1):
            inventory = inventory_for_iteration(store, run_id, k, initial)
            it = run_iteration(
                store,
                run_id,
                k,
                rules=rules,
                inventory=inventory,
                cluster=client_spec,
                min_area_ha=min_area_ha,
                progress=progress,
            )
            counts = _reviewed_counts(catalog, run_id, k)
            if counts is None:
                if reviewer is None:
                    result.iterations.append(it)
                    result.waiting_for_review = k
                    result.stop_reason = (
                        f"iteration {k} awaits review: decide its candidates, then "
                        f"`ftlcloud review apply --run-id {run_id} --iteration {k} DECISIONS` and rerun"
                    )
                    result.final_inventory = inventory
                    return result
                decisions = reviewer(it.candidates, k)
                _, counts = publish_review(store, run_id, k, decisions, initial=initial)
            it.counts = counts
            result.iterations.append(it)
            if on_iteration is not None:
                on_iteration(it)
            log.info(
                "iteration %d: %d candidates, %d accepted, %d new FTLs",
                k,
                it.n_candidates,
                counts["accepted"],
                counts["new_ftls"],
            )
            inventory = inventory_for_iteration(store, run_id, k + 1, initial)
            if it.thresholds.velocity_abs_min_mm_a <= stable_band_mm_a:
                result.stop_reason = f"the |velocity| threshold reached the stable band (≤ {stable_band_mm_a:g} mm/a)"
                break
            if counts["new_ftls"] == 0 and counts["added"] == 0:
                result.stop_reason = f"iteration {k} accepted nothing new"
                break
            if rules.max_iteration is not None and k >= rules.max_iteration:
                result.stop_reason = f"the rules define no iteration after {k}"
                break
        else:
            result.stop_reason = f"reached the maximum of {max_iterations} iterations"
        result.final_inventory = inventory
        return result


def _shared_cluster(stack: ExitStack, spec: ClusterSpec | None) -> ClusterSpec:
    """Start one cluster for the whole loop (not one per stage) and hand out its client.

    A Gateway cluster's scheduler speaks TLS with the gateway's credentials, so stages reuse the
    connected client rather than reconnecting by address.
    """
    spec = spec or ClusterSpec()
    if spec.client is not None:
        return spec
    from ftlcloud.pipeline.cluster import connect

    client = stack.enter_context(connect(spec))
    return ClusterSpec(client=client)


def accepted_ftls(results: list[IterationResult], store: Store, run_id: str) -> gpd.GeoDataFrame:
    """The new FTLs of every iteration (Fig. 4): accepted candidates that were not already known,
    with their attributes and the iteration that found them."""
    from ftlcloud.io.geoparquet import read_geoparquet
    from ftlcloud.pipeline.run import RunPaths

    frames = []
    paths = RunPaths(run_id)
    for r in results:
        key = paths.iteration(r.iteration, "decisions.parquet")
        if not store.exists(key):
            continue
        dec = read_geoparquet(store, key)
        acc = set(dec.loc[dec["decision"] == "accept", "candidate_id"].dropna())
        c = r.candidates
        frames.append(c[c["candidate_id"].isin(acc) & ~c["overlaps_known"].astype(bool)])
    if not frames:
        return gpd.GeoDataFrame(geometry=[], crs=results[0].candidates.crs if results else None)
    out = pd.concat(frames, ignore_index=True)
    return gpd.GeoDataFrame(out, geometry="geometry", crs=frames[0].crs)


def new_candidate_count(results: list[IterationResult]) -> int:
    """Candidates a reviewer had to look at: those not overlapping an already known FTL."""
    return int(sum((~r.candidates["overlaps_known"].astype(bool)).sum() for r in results))


def all_candidates(results: list[IterationResult], accepted: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Candidates of every iteration with an ``accepted`` column."""
    frames = [r.candidates for r in results if len(r.candidates)]
    if not frames:
        return gpd.GeoDataFrame({"iteration": [], "accepted": []}, geometry=[])
    out = gpd.GeoDataFrame(
        pd.concat(frames, ignore_index=True), geometry="geometry", crs=frames[0].crs
    )
    ids = set(accepted["candidate_id"]) if len(accepted) else set()
    out["accepted"] = np.asarray(out["candidate_id"].isin(ids), dtype=bool)
    return out
