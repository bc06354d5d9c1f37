"""Decisions: each file format, validation errors, the reference reviewer, apply, QGIS."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from shapely.geometry import Point, box

from ftlcloud.errors import InputError
from ftlcloud.review.decisions import (
    ALL_DECISIONS,
    DECISIONS,
    Decision,
    DecisionCounts,
    apply_decisions,
    decisions_frame,
    export_review_gpkg,
    read_decisions,
    read_review_gpkg,
    reference_decisions,
    validate_decisions,
)

CRS = "EPSG:32647"
X0, Y0 = 500_000.0, 4_200_000.0


def _box(x: float, y: float, w: float, h: float) -> shapely.Polygon:
    return box(X0 + x, Y0 + y, X0 + x + w, Y0 + y + h)


@pytest.fixture
def candidates() -> gpd.GeoDataFrame:
    geoms = [
        _box(0, 0, 100, 100),  # c0001
        _box(300, 0, 100, 100),  # c0002
        _box(600, 0, 100, 100),  # c0003
        _box(650, 50, 100, 100),  # c0004 overlaps c0003
        _box(900, 0, 100, 100),  # c0005
    ]
    return gpd.GeoDataFrame(
        {
            "candidate_id": [f"it2-c{i:04d}" for i in range(1, 6)],
            "iteration": 2,
            "area_ha": [g.area / 1e4 for g in geoms],
            "hidden": False,
            "small": True,
            "overlaps_known": False,
            "score": [0.9, 0.8, 0.7, 0.6, 0.5],
        },
        geometry=geoms,
        crs=CRS,
    )


def _write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- reading ---------------------------------------------------------------------------------


def test_constants() -> None:
    assert DECISIONS == ("accept", "reject")
    assert ALL_DECISIONS == ("accept", "reject", "add")


def test_read_csv_normalises_and_keeps_ids_as_text(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "d.csv",
        "candidate_id,decision,note\n"
        "it2-c0001, Accepted ,scarp\n"
        "0007,REJECT,\n"
        "it2-c0003,,not sure yet\n"
        'it2-c0005,reject,"road cut, not a slide"\n',
    )
    d = read_decisions(path)
    assert d["candidate_id"].tolist() == ["it2-c0001", "0007", "it2-c0005"]
    assert d["decision"].tolist() == ["accept", "reject", "reject"]
    assert d["note"].tolist() == ["scarp", "", "road cut, not a slide"]
    assert d["row"].tolist() == [1, 2, 4]  # the undecided row 3 is dropped
    assert d.geometry.isna().all()
    assert d.attrs["source"] == str(path)


def test_read_csv_with_wkt_and_crs(tmp_path: Path, candidates: gpd.GeoDataFrame) -> None:
    edited = _box(0, 0, 80, 80)
    path = _write_csv(
        tmp_path / "d.csv",
        f'candidate_id,decision,wkt\nit2-c0001,accept,"{edited.wkt}"\nit2-c0002,reject,\n',
    )
    d = read_decisions(path, crs=CRS)
    assert d.crs.to_epsg() == 32647
    assert d.geometry.iloc[0].equals(edited) and d.geometry.iloc[1] is None
    # Without a CRS the geometry cannot be placed: validation says how to fix it.
    with pytest.raises(InputError, match=r"geometries but no CRS; give the CSV's CRS"):
        validate_decisions(read_decisions(path), candidates)


def test_read_geojson_reprojected(tmp_path: Path, candidates: gpd.GeoDataFrame) -> None:
    edited = _box(300, 0, 60, 60)
    frame = gpd.GeoDataFrame(
        {"candidate_id": ["it2-c0002", None], "decision": ["accept", "add"], "note": ["", "m"]},
        geometry=[edited, _box(2000, 0, 50, 50)],
        crs=CRS,
    ).to_crs("EPSG:4326")
    path = tmp_path / "d.geojson"
    frame.to_file(path, driver="GeoJSON")
    d = validate_decisions(read_decisions(path), candidates)
    assert d.crs.to_epsg() == 32647
    assert d["decision"].tolist() == ["accept", "add"]
    assert d["candidate_id"].tolist() == ["it2-c0002", None]
    # Back in UTM the edited boundary is where it was drawn (to GeoJSON's coordinate precision).
    assert d.geometry.iloc[0].symmetric_difference(edited).area < 1.0


def test_read_gpkg_and_geoparquet(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {"candidate_id": ["it2-c0001", "it2-c0002"], "decision": ["Accept", "rejected"]},
        geometry=[_box(0, 0, 90, 90), None],
        crs=CRS,
    )
    frame.to_file(tmp_path / "d.gpkg", layer="mine", driver="GPKG")
    frame.to_parquet(tmp_path / "d.parquet")
    for name in ("d.gpkg", "d.parquet"):
        d = read_decisions(tmp_path / name)
        assert d["decision"].tolist() == ["accept", "reject"], name
        assert d.crs.to_epsg() == 32647, name
        assert d.geometry.iloc[0].equals(_box(0, 0, 90, 90)), name
        assert d["note"].tolist() == ["", ""], name
    # A plain Parquet table (no geo metadata) is decisions without geometry.
    pd.DataFrame({"candidate_id": ["it2-c0003"], "decision": ["reject"]}).to_parquet(
        tmp_path / "plain.parquet"
    )
    d = read_decisions(tmp_path / "plain.parquet")
    assert d["decision"].tolist() == ["reject"] and d.geometry.isna().all()


def test_read_errors_name_file_row_and_fix(tmp_path: Path) -> None:
    bad = _write_csv(tmp_path / "bad.csv", "candidate_id,decision\nit2-c0001,accept\nx,maybe\n")
    with pytest.raises(InputError) as err:
        read_decisions(bad)
    msg = str(err.value)
    assert "bad.csv" in msg and "row 2" in msg and "'maybe'" in msg
    assert "accept, reject, add" in msg
    with pytest.raises(InputError, match=r"no column 'decision'.*needs candidate_id and"):
        read_decisions(_write_csv(tmp_path / "c.csv", "candidate_id,verdict\na,accept\n"))
    with pytest.raises(InputError, match=r"unknown suffix '\.xlsx'; use \.csv"):
        (tmp_path / "d.xlsx").write_bytes(b"x")
        read_decisions(tmp_path / "d.xlsx")
    with pytest.raises(InputError, match=r"'.*nope\.csv' does not exist"):
        read_decisions(tmp_path / "nope.csv")
    wkt = _write_csv(tmp_path / "w.csv", "candidate_id,decision,wkt\na,accept,POLYGON ((0 0, 1\n")
    with pytest.raises(InputError, match=r"w\.csv' row 1 \(line 2\): column 'wkt' is not valid"):
        read_decisions(wkt, crs=CRS)
    two = tmp_path / "two.gpkg"
    for layer in ("a", "b"):
        gpd.GeoDataFrame(
            {"candidate_id": ["x"], "decision": ["reject"]}, geometry=[None], crs=CRS
        ).to_file(two, layer=layer, driver="GPKG")
    with pytest.raises(InputError, match=r"several layers \(a, b\); name one with layer="):
        read_decisions(two)
    assert read_decisions(two, layer="b")["decision"].tolist() == ["reject"]


# --- validation --------------------------------------------------------------------------------


def test_validate_collects_every_problem(candidates: gpd.GeoDataFrame) -> None:
    bowtie = shapely.Polygon(
        [(X0, Y0), (X0 + 100, Y0 + 100), (X0 + 100, Y0), (X0, Y0 + 100), (X0, Y0)]
    )
    d = decisions_frame(
        [
            Decision("it2-c0001", "accept"),
            Decision("it2-c9999", "reject"),  # row 2: unknown
            Decision("it2-c0001", "reject"),  # row 3: duplicate of row 1
            Decision(None, "add"),  # row 4: add without geometry
            Decision("it2-c0002", "accept", bowtie),  # row 5: invalid geometry
            Decision(None, "reject"),  # row 6: reject without id
            Decision("it2-c0003", "add", _box(600, 0, 10, 10)),  # row 7: add names a candidate
            Decision("it2-c0005", "accept", shapely.LineString([(X0, Y0), (X0 + 1, Y0)])),
            Decision("it2-c0004", "maybe"),  # row 9
        ],
        crs=CRS,
        source="mine.csv",
    )
    with pytest.raises(InputError) as err:
        validate_decisions(d, candidates)
    msg = str(err.value)
    assert msg.startswith("decisions 'mine.csv': 8 problem(s)")  # row 1 is fine
    assert "row 2: unknown candidate_id 'it2-c9999' (not among the 5 candidates" in msg
    assert "row 3: duplicate decision for candidate 'it2-c0001' (also row 1)" in msg
    assert "row 4: 'add' needs a geometry" in msg
    assert "row 5 (it2-c0002): invalid geometry: Self-intersection" in msg
    assert "row 6: 'reject' without candidate_id" in msg
    assert "row 7: 'add' names candidate 'it2-c0003'" in msg
    assert "row 8: accept geometry is a LineString; expected Polygon or MultiPolygon" in msg
    assert "row 9: decision 'maybe' is not one of accept, reject, add" in msg


def test_validate_ok_counts_undecided(candidates: gpd.GeoDataFrame) -> None:
    d = decisions_frame(
        [Decision("it2-c0001", "accept"), Decision("it2-c0002", "reject", note=" x ")], crs=None
    )
    out = validate_decisions(d, candidates)
    assert out.crs.to_epsg() == 32647  # no geometries: the missing CRS does not matter
    assert out["note"].tolist() == ["", "x"]
    _, counts = apply_decisions(_empty_inventory(), candidates, out, iteration=2)
    assert (counts.accepted, counts.rejected, counts.undecided) == (1, 1, 3)


# --- reference reviewer -------------------------------------------------------------------------


@pytest.fixture
def reference() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"ftl_id": ["R1", "R2", "R3", "R4"], "kind": ["polygon", "polygon", "point", "polygon"]},
        geometry=[
            _box(90, 0, 100, 100),  # R1: 10 % of c0001 (IoU 1000/19000 = 0.053)
            _box(300, 0, 100, 80),  # R2: 80 % of c0002, IoU 0.8
            Point(X0 + 620, Y0 + 20),  # R3: a point inside c0003 only
            _box(1000, 0, 50, 100),  # R4: touches c0005 along its east edge, no area
        ],
        crs=CRS,
    )


def _accepted(d: gpd.GeoDataFrame) -> list[str]:
    return d.loc[d["decision"] == "accept", "candidate_id"].tolist()


def test_reference_rules(candidates: gpd.GeoDataFrame, reference: gpd.GeoDataFrame) -> None:
    touching = ["it2-c0001", "it2-c0002", "it2-c0003", "it2-c0005"]
    assert _accepted(reference_decisions(candidates, reference, rule="intersects")) == touching
    frac = reference_decisions(candidates, reference, rule="overlap_fraction", min_fraction=0.1)
    assert _accepted(frac) == ["it2-c0001", "it2-c0002", "it2-c0003"]
    frac = reference_decisions(candidates, reference, rule="overlap_fraction", min_fraction=0.2)
    assert _accepted(frac) == ["it2-c0002", "it2-c0003"]
    iou = reference_decisions(candidates, reference, rule="iou", min_fraction=0.05)
    assert _accepted(iou) == ["it2-c0001", "it2-c0002", "it2-c0003"]
    iou = reference_decisions(candidates, reference, rule="iou", min_fraction=0.81)
    assert _accepted(iou) == ["it2-c0003"]  # only the point match is left
    d = reference_decisions(candidates, reference, rule="iou", min_fraction=0.5)
    assert len(d) == len(candidates)
    assert d.set_index("candidate_id").loc["it2-c0002", "note"] == "reference R2 (iou 0.80)"
    assert d.set_index("candidate_id").loc["it2-c0004", "note"].startswith("no reference FTL")
    with pytest.raises(InputError, match="rule 'area'"):
        reference_decisions(candidates, reference, rule="area")  # type: ignore[arg-type]


def test_reference_boundary(candidates: gpd.GeoDataFrame, reference: gpd.GeoDataFrame) -> None:
    ref = reference_decisions(candidates, reference, rule="overlap_fraction", boundary="reference")
    geoms = dict(zip(ref["candidate_id"], ref.geometry, strict=True))
    assert geoms["it2-c0002"].equals(reference.geometry.iloc[1])
    assert geoms["it2-c0003"].equals(candidates.geometry.iloc[2])  # a point has no boundary
    assert geoms["it2-c0004"] is None  # rejected
    cand = reference_decisions(candidates, reference, rule="overlap_fraction", boundary="candidate")
    assert dict(zip(cand["candidate_id"], cand.geometry, strict=True))["it2-c0002"].equals(
        candidates.geometry.iloc[1]
    )
    # Reference in another CRS: reprojected, same answer.
    ref4326 = reference_decisions(
        candidates, reference.to_crs("EPSG:4326"), rule="overlap_fraction"
    )
    assert _accepted(ref4326) == _accepted(ref)


# --- apply ---------------------------------------------------------------------------------------


def _empty_inventory() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"ftl_id": [], "kind": [], "source": []}, geometry=gpd.GeoSeries([], crs=CRS)
    )


def test_apply_union_without_duplicates(candidates: gpd.GeoDataFrame) -> None:
    inventory = gpd.GeoDataFrame(
        {"ftl_id": ["K1", "K2", "K3"], "kind": ["point", "polygon", "polygon"]},
        geometry=[
            Point(X0 + 50, Y0 + 50),  # inside c0001: c0001 is a known FTL
            _box(-200, 0, 100, 100),
            _box(1000, 0, 100, 100),  # touches c0005 only along an edge: distinct
        ],
        crs=CRS,
    ).assign(source="initial")
    edited = _box(300, 0, 50, 50)
    added = _box(2000, 2000, 40, 40)
    d = decisions_frame(
        [
            Decision("it2-c0001", "accept", note="known"),
            Decision("it2-c0002", "accept", edited),
            Decision("it2-c0003", "accept"),
            Decision("it2-c0004", "accept"),  # overlaps c0003: dissolved with it
            Decision("it2-c0005", "accept"),
            Decision(None, "add", added, note="missed by the method"),
        ],
        crs=CRS,
    )
    out, counts = apply_decisions(inventory, candidates, d, iteration=3)
    assert counts == DecisionCounts(
        candidates=5, accepted=5, rejected=0, added=1, undecided=0, new_ftls=4
    )
    assert out["ftl_id"].tolist()[:3] == ["K1", "K2", "K3"]
    assert out["ftl_id"].is_unique and len(out) == 7
    new = out.iloc[3:]
    assert (new["source"] == "iteration-3").all() and (new["kind"] == "polygon").all()
    assert new["ftl_id"].tolist() == ["it3-ftl0001", "it3-ftl0002", "it3-ftl0003", "it3-ftl0004"]
    by_cid = dict(zip(new["candidate_id"], new.geometry, strict=True))
    assert by_cid["it2-c0002"].equals(edited)  # the edited boundary, not the candidate's
    merged = by_cid["it2-c0003;it2-c0004"]
    assert merged.area == pytest.approx(2 * 100 * 100 - 50 * 50)
    assert by_cid["it2-c0005"].equals(candidates.geometry.iloc[4])
    assert new.loc[new["candidate_id"].isna()].geometry.iloc[0].equals(added)
    assert "missed by the method" in new["note"].tolist()
    assert out.crs.to_epsg() == 32647
    # Applying the same decisions to inventory k+1 adds nothing: every FTL is already known.
    again, counts2 = apply_decisions(out, candidates, d, iteration=4)
    assert len(again) == len(out) and counts2.new_ftls == 0


def test_apply_keeps_inventory_crs_and_ids(candidates: gpd.GeoDataFrame) -> None:
    inventory = gpd.GeoDataFrame(
        {"ftl_id": ["it2-ftl0001"], "kind": ["point"], "source": ["initial"]},
        geometry=[Point(X0 + 5000, Y0 + 5000)],
        crs=CRS,
    ).to_crs("EPSG:4326")
    d = decisions_frame([Decision("it2-c0002", "accept")], crs=CRS)
    out, counts = apply_decisions(inventory, candidates, d, iteration=2)
    assert out.crs.to_epsg() == 4326 and counts.new_ftls == 1
    assert out["ftl_id"].tolist() == ["it2-ftl0001", "it2-ftl0002"]  # no id collision
    back = out.to_crs(CRS).geometry.iloc[1]
    assert back.symmetric_difference(candidates.geometry.iloc[1]).area < 1e-3


# --- QGIS round trip -------------------------------------------------------------------------


def test_review_gpkg_round_trip(tmp_path: Path, candidates: gpd.GeoDataFrame) -> None:
    path = tmp_path / "review.gpkg"
    export_review_gpkg(candidates, path)
    # What QGIS sees: text decision and note fields, the candidates sorted by score.
    with sqlite3.connect(path) as con:
        cols = {row[1]: row[2] for row in con.execute("PRAGMA table_info(candidates)")}
        assert cols["decision"] == "TEXT" and cols["note"] == "TEXT"
        assert {r[0] for r in con.execute("SELECT decision FROM candidates")} == {""}
    # The reviewer fills in the attribute table. QGIS edits a GeoPackage through GDAL's driver
    # (whose SQL functions the R-tree triggers need), so do it with GDAL's ogrinfo.
    for sql in (
        "UPDATE candidates SET decision = 'Accept', note = 'clear scarp' "
        "WHERE candidate_id = 'it2-c0001'",
        "UPDATE candidates SET decision = 'reject' WHERE candidate_id = 'it2-c0002'",
    ):
        subprocess.run(["ogrinfo", "-q", str(path), "-sql", sql], check=True, capture_output=True)
    # The reviewer also edits a boundary and draws a missed FTL (geometry edits via GDAL).
    layer = gpd.read_file(path, layer="candidates")
    assert layer["candidate_id"].tolist() == candidates["candidate_id"].tolist()
    edited = _box(600, 0, 70, 70)
    layer.loc[layer["candidate_id"] == "it2-c0003", ["decision", "geometry"]] = ["accept", edited]
    drawn = gpd.GeoDataFrame(
        {"decision": [""], "note": ["drawn"], "candidate_id": [None]},
        geometry=[shapely.MultiPolygon([_box(3000, 0, 30, 30)])],
        crs=CRS,
    )
    filled = gpd.GeoDataFrame(pd.concat([layer, drawn], ignore_index=True), crs=CRS)
    filled.to_file(path, layer="candidates", driver="GPKG")

    d = read_review_gpkg(path)
    assert d["candidate_id"].tolist() == ["it2-c0001", "it2-c0002", "it2-c0003", None]
    assert d["decision"].tolist() == ["accept", "reject", "accept", "add"]
    assert d["note"].tolist()[0] == "clear scarp"
    checked = validate_decisions(d, candidates)
    inventory, counts = apply_decisions(_empty_inventory(), candidates, checked, iteration=2)
    assert (counts.accepted, counts.rejected, counts.added, counts.undecided) == (2, 1, 1, 2)
    geoms = dict(zip(inventory["candidate_id"], inventory.geometry, strict=True))
    assert geoms["it2-c0003"].equals(shapely.MultiPolygon([edited]))
    assert geoms["it2-c0001"].equals(shapely.MultiPolygon([candidates.geometry.iloc[0]]))


def test_review_gpkg_errors(tmp_path: Path, candidates: gpd.GeoDataFrame) -> None:
    with pytest.raises(InputError, match=r"review GeoPackage '.*missing\.gpkg' does not exist"):
        read_review_gpkg(tmp_path / "missing.gpkg")
    with pytest.raises(InputError, match="no 'candidate_id' column"):
        export_review_gpkg(candidates.drop(columns="candidate_id"), tmp_path / "x.gpkg")
