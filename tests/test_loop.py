"""The iterative loop end to end: five iterations with the reference reviewer, human review pauses,
validation and the report (real LocalCluster, local store, small synthetic scene)."""

from __future__ import annotations

import itertools
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rio_cogeo.cogeo import cog_validate

from ftlcloud.demo.scene import Scene
from ftlcloud.io.catalog import Catalog
from ftlcloud.io.store import Store
from ftlcloud.pipeline.api import ITERATIONS_COLLECTION, initial_inventory_ref, publish_review
from ftlcloud.pipeline.cluster import ClusterSpec
from ftlcloud.pipeline.loop import ReferenceReviewer, accepted_ftls, iterate
from ftlcloud.pipeline.reporting import publish_report, validate_run
from ftlcloud.pipeline.run import FactorSettings, RunPaths
from ftlcloud.review.decisions import read_decisions, reference_decisions
from ftlcloud.science.rules import parse_rules

pytestmark = pytest.mark.slow


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value and not value.startswith(("#", "data:")):
                self.links.append(value)


def test_five_iterations_with_reference_reviewer(
    store: Store, scene: Scene, cluster: ClusterSpec, stac_validate: object
) -> None:
    truth = scene.truth
    missing = truth[~truth["in_inventory"]]
    loop = iterate(
        store,
        "loop",
        rules=parse_rules("derived"),
        reviewer=ReferenceReviewer(truth),
        settings=FactorSettings(tile_size=64),
        cluster=cluster,
        max_iterations=5,
        progress=False,
    )
    assert [r.iteration for r in loop.iterations] == [1, 2, 3, 4, 5]
    assert "stable band" in loop.stop_reason
    assert [r.thresholds.velocity_abs_min_mm_a for r in loop.iterations] == [50, 40, 30, 20, 10]

    # Recall of the landslides missing from the starting inventory rises across iterations.
    recalls = []
    for k in range(1, 6):
        found = accepted_ftls(loop.iterations[:k], store, "loop")
        match, _ = validate_run(found, missing)
        recalls.append(match.recall)
    assert all(b >= a for a, b in itertools.pairwise(recalls)), recalls
    assert recalls[-1] > recalls[0]
    assert recalls[-1] >= 0.7, recalls

    catalog = Catalog(store)
    for k in range(1, 6):
        item = catalog.get_item(ITERATIONS_COLLECTION, f"loop-it{k:02d}")
        assert item is not None
        p = item.properties
        assert p["ftl:status"] == "reviewed"
        assert p["ftl:n_candidates"] == loop.iterations[k - 1].n_candidates
        assert (
            p["ftl:n_accepted"] + p["ftl:n_rejected"] + p["ftl:n_undecided"]
            == p["ftl:n_candidates"]
        )
        assert p["ftl:inventory"] == ("inventory-initial" if k == 1 else f"loop-inventory-{k:02d}")
        assert "thresholds" in item.assets and "decisions" in item.assets
        ok, errors, _ = cog_validate(
            store.href(RunPaths("loop").iteration(k, "mask.tif")), strict=True
        )
        assert ok, errors

    found = accepted_ftls(loop.iterations, store, "loop")
    match, rates = validate_run(found, missing)
    index = Path(publish_report(store, loop, title="test", match=match, rates=rates))
    assert index.is_file()
    parser = _Links()
    parser.feed(index.read_text())
    pngs = [link for link in parser.links if link.endswith(".png")]
    assert len(pngs) >= 4
    for link in parser.links:
        target = index.parent / link
        assert target.is_file(), link
    for link in pngs:
        with Image.open(index.parent / link) as im:
            arr = np.asarray(im.convert("L"))
            assert im.width > 400 and im.height > 300
            assert arr.std() > 5
    last = catalog.get_item(ITERATIONS_COLLECTION, "loop-it05")
    assert last is not None and "report" in last.assets
    assert last.properties["ftl:object_match"]["recall"] == pytest.approx(match.recall)
    stac_validate([store.url])  # type: ignore[operator]


def test_loop_waits_for_human_review_and_resumes(
    store: Store, scene: Scene, cluster: ClusterSpec, tmp_path: Path
) -> None:
    kwargs = dict(
        rules=parse_rules("derived"),
        settings=FactorSettings(tile_size=64),
        cluster=cluster,
        progress=False,
    )
    first = iterate(store, "human", reviewer=None, **kwargs)  # type: ignore[arg-type]
    assert first.waiting_for_review == 1
    assert "review apply" in first.stop_reason
    cands = first.iterations[0].candidates
    # A reviewer's CSV, as the review page exports it.
    decisions = reference_decisions(cands, scene.truth, boundary="candidate")
    csv = tmp_path / "decisions.csv"
    decisions[["candidate_id", "decision", "note"]].to_csv(csv, index=False)
    table = read_decisions(csv)
    ref, counts = publish_review(
        store, "human", 1, table, initial=initial_inventory_ref(Catalog(store), None)
    )
    assert ref.item_id == "human-inventory-02"
    assert counts["accepted"] == int((decisions["decision"] == "accept").sum())
    assert counts["new_ftls"] > 0, counts
    again = iterate(store, "human", reviewer=None, **kwargs)  # type: ignore[arg-type]
    assert again.waiting_for_review == 2
    assert again.iterations[0].counts["accepted"] == counts["accepted"]
