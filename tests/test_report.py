"""Tests of ftlcloud.report: figures decode as real PNGs, links resolve, Table 2 is right."""

from __future__ import annotations

import dataclasses
import io
import math
from html.parser import HTMLParser

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from affine import Affine
from PIL import Image
from shapely.geometry import Point

from ftlcloud.errors import InputError
from ftlcloud.report import (
    AreaRasters,
    IterationSummary,
    ReportInputs,
    build_iteration_report,
    build_report,
    restrict_to_iteration,
)
from ftlcloud.report.build import in_report_crs
from ftlcloud.report.figures import (
    aspect_sector_counts,
    ftl_pixel_mask,
    polygon_rings,
    velocity_bin_shares_pct,
)
from ftlcloud.report.html import TABLE2_HEADERS, table2_rows
from ftlcloud.report.model import FTL_COLUMNS

CRS = "EPSG:32647"  # UTM 47N, over the Qilian Mountains
PIXEL_M = 30.0
ORIGIN = (400_000.0, 4_200_000.0)

# Table 2 of the paper, with counts of a made-up review.
TABLE2 = [
    (1, "3600–4000", "1–30", "0–315", "≥ 50", 14, 9, 5, 9),
    (2, "3600–4100", "1–35", "0–315", "≥ 40", 6, 3, 3, 3),
    (3, "3600–4200", "1–35", "0–315", "≥ 30", 40, 26, 14, 26),
    (4, "3600–4300", "1–35", "0–315", "≥ 20", 35, 22, 13, 22),
    (5, "3600–4400", "1–40", "0–112.5 & 135–360", "≥ 10", 60, 38, 22, 38),
]


def make_inputs(
    *, n_initial: int = 12, rows: int = 240, cols: int = 320, seed: int = 0
) -> ReportInputs:
    """A small synthetic scene: hills, a stable background, fast FTL blobs and an inventory."""
    rng = np.random.default_rng(seed)
    transform = Affine(PIXEL_M, 0.0, ORIGIN[0], 0.0, -PIXEL_M, ORIGIN[1])
    yy, xx = np.mgrid[0:rows, 0:cols].astype(float)
    dem = 3800 + 300 * np.sin(xx / 40.0) * np.cos(yy / 55.0) + 2.0 * yy
    dzdy, dzdx = np.gradient(dem, PIXEL_M)
    # Lambertian hillshade, sun from the north-west at 45°: enough for an underlay.
    slope = np.arctan(np.hypot(dzdx, dzdy))
    aspect = np.arctan2(-dzdx, dzdy)
    sun_az, sun_alt = math.radians(315.0), math.radians(45.0)
    shade = np.sin(sun_alt) * np.cos(slope) + np.cos(sun_alt) * np.sin(slope) * np.cos(
        sun_az - aspect
    )
    hillshade = np.clip(255 * shade, 0, 255)

    velocity = rng.normal(0.0, 5.0, (rows, cols))
    amplitude = np.abs(rng.gamma(2.0, 3.0, (rows, cols)))
    iterations_found = [1] * 9 + [2] * 3 + [3] * 10 + [4] * 8 + [5] * 6
    labels: list[float] = [math.nan] * n_initial + [float(i) for i in iterations_found]
    records = []
    for k, iteration in enumerate(labels):
        r, c = rng.uniform(15, rows - 15), rng.uniform(15, cols - 15)
        radius_px = rng.uniform(2.0, 7.0)
        speed = rng.uniform(10, 80)
        blob = (yy - r) ** 2 + (xx - c) ** 2 <= radius_px**2
        velocity[blob] = -speed + rng.normal(0, 3, blob.sum())
        amplitude[blob] += rng.uniform(5, 15)
        x, y = transform @ (c, r)
        geom = Point(x, y).buffer(radius_px * PIXEL_M, quad_segs=8)
        records.append(
            {
                "geometry": geom,
                "area_ha": geom.area / 1e4,
                "perimeter_km": geom.length / 1e3,
                "aspect_circmean_deg": float(rng.vonmises(math.radians(315 - 180), 1.5))
                * 180
                / math.pi
                + 180,
                "elevation_mean_m": float(dem[int(r), int(c)]),
                "slope_mean_deg": float(rng.uniform(3, 30)),
                "delta_ndvi_mean": float(rng.normal(-0.03, 0.08)),
                "velocity_mean_abs_mm_a": speed,
                "seasonal_amplitude_mean_mm": float(amplitude[blob].mean()),
                "iteration": iteration,
                "hidden": False,
                "small": geom.area / 1e4 < 10,
                "id": k,
            }
        )
    velocity[:3, :5] = np.nan  # a gap, as InSAR has
    ftls = gpd.GeoDataFrame(records, geometry="geometry", crs=CRS)
    ftls["hidden"] = ftls["delta_ndvi_mean"] > -0.1
    found = ftls[np.isfinite(ftls["iteration"].to_numpy(float))]
    rejected = found.copy()
    rejected["geometry"] = rejected.geometry.translate(1500.0, -900.0)
    rejected["accepted"] = False
    accepted = found.copy()
    accepted["accepted"] = True
    columns = ["geometry", "iteration", "accepted"]
    candidates = gpd.GeoDataFrame(
        pd.concat([accepted[columns], rejected[columns]], ignore_index=True),
        geometry="geometry",
        crs=CRS,
    )
    summaries = [
        IterationSummary(
            iteration=it,
            thresholds={"elevation": e, "slope": s, "aspect": a, "velocity": v},
            n_candidates=nc,
            n_accepted=na,
            n_rejected=nr,
            n_new_ftls=nn,
            recall=min(1.0, 0.2 + 0.15 * it),
            object_precision=0.8,
        )
        for it, e, s, a, v, nc, na, nr, nn in TABLE2
    ]
    return ReportInputs(
        title="Synthetic Qilian scene",
        run_id="test-run-001",
        crs=CRS,
        iterations=summaries,
        ftls=ftls,
        candidates=candidates,
        rasters=AreaRasters(
            velocity_mm_a=velocity,
            seasonal_amplitude_mm=amplitude,
            transform=transform,
            hillshade=hillshade,
        ),
        verification={"n_tp": 14, "n_fp": 0, "n_fn": 1},
        object_match={"precision": 0.8, "recall": 0.95, "f1": 0.869, "rule": "IoU ≥ 0.3"},
    )


def empty_inputs() -> ReportInputs:
    return ReportInputs(
        title="Nothing yet",
        run_id="empty-run",
        crs=CRS,
        iterations=[],
        ftls=gpd.GeoDataFrame({c: [] for c in FTL_COLUMNS}, geometry=[], crs=CRS),
        candidates=gpd.GeoDataFrame({"iteration": [], "accepted": []}, geometry=[], crs=CRS),
    )


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        for name in ("href", "src"):
            if attr.get(name):
                self.refs.append(str(attr[name]))
        if tag == "table":
            self._table = str(attr.get("id"))
            self.tables[self._table] = []
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body and self._table:
            self.tables[self._table].append([])
        elif tag == "td" and self._in_body:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _parse(index: bytes) -> _Links:
    parser = _Links()
    parser.feed(index.decode("utf-8"))
    return parser


def _assert_pngs_sane(report: dict[str, bytes]) -> None:
    pngs = [k for k in report if k.endswith(".png")]
    assert len(pngs) == 4
    for key in pngs:
        data = report[key]
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), key
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            width, height = img.size
            assert 900 <= width <= 3000 and 500 <= height <= 2000, (key, img.size)
            grey = np.asarray(img.convert("L"), dtype=float)
        # A figure with axes, text and data has many distinct grey levels, not a blank canvas.
        assert grey.std() > 5.0, key
        assert len(np.unique(grey)) > 20, key


@pytest.fixture(scope="module")
def inputs() -> ReportInputs:
    return make_inputs()


@pytest.fixture(scope="module")
def report(inputs: ReportInputs) -> dict[str, bytes]:
    return build_report(inputs)


@pytest.mark.slow
def test_report_pngs_decode_and_are_not_blank(report: dict[str, bytes]) -> None:
    assert "index.html" in report
    _assert_pngs_sane(report)


@pytest.mark.slow
def test_every_link_resolves_to_an_output_key(report: dict[str, bytes]) -> None:
    parsed = _parse(report["index.html"])
    assert parsed.refs, "the page should link its figures"
    for ref in parsed.refs:
        assert "://" not in ref and not ref.startswith("/"), f"{ref} is not relative"
        assert ref in report, f"{ref} does not resolve to a report file"
    for key in report:
        if key.endswith(".png"):
            assert key in parsed.refs, f"{key} is produced but not shown"


@pytest.mark.slow
def test_table2_rows_match_the_iterations(report: dict[str, bytes]) -> None:
    table = _parse(report["index.html"]).tables["table2"]
    expected = [[str(c) for c in row[:5]] + [str(c) for c in row[5:]] for row in TABLE2]
    assert table == expected
    assert table2_rows(make_inputs().iterations) == expected
    assert len(TABLE2_HEADERS) == len(expected[0])


@pytest.mark.slow
def test_index_shows_metrics_and_the_mintpy_note(report: dict[str, bytes]) -> None:
    page = report["index.html"].decode()
    tables = _parse(report["index.html"]).tables
    # The paper's 14 TP, 0 FP, 1 FN: TPR 93.3 %, FPR 0 %, FNR 6.7 % (Eq. 3–5).
    assert tables["verification"] == [["14", "0", "1", "15", "93.3", "0.0", "6.7"]]
    assert tables["object-match"] == [["80.0", "95.0", "86.9"]]
    assert "IoU ≥ 0.3" in page
    assert "annualAmplitude" in page and "half of A" in page
    assert "test-run-001" in page
    assert "<script" not in page and "http" not in page


@pytest.mark.slow
def test_iteration_report_is_restricted(inputs: ReportInputs) -> None:
    report = build_iteration_report(inputs, 2)
    _assert_pngs_sane(report)
    parsed = _parse(report["index.html"])
    assert [row[0] for row in parsed.tables["table2"]] == ["1", "2"]
    assert all(ref in report for ref in parsed.refs)
    summary = dict(row for row in parsed.tables["summary"] if len(row) == 2)
    # 12 initial + 9 found in iteration 1 + 3 in iteration 2.
    assert summary["FTLs in the inventory"] == "24"
    assert summary["found by the iterations"] == "12"
    assert "iteration 2" in report["index.html"].decode()


def test_empty_report_says_no_ftls_yet() -> None:
    report = build_report(empty_inputs())
    _assert_pngs_sane(report)
    page = report["index.html"].decode()
    parsed = _parse(report["index.html"])
    assert all(ref in report for ref in parsed.refs)
    assert parsed.tables["table2"] == [["no iterations yet"]]
    assert "No verification records" in page


def test_restrict_unknown_iteration_is_a_clear_error(inputs: ReportInputs) -> None:
    with pytest.raises(InputError, match="iteration 9 has no IterationSummary"):
        restrict_to_iteration(inputs, 9)


def test_restrict_keeps_initial_inventory_and_earlier_finds(inputs: ReportInputs) -> None:
    restricted = restrict_to_iteration(inputs, 3)
    it = restricted.ftls["iteration"].to_numpy(float)
    assert np.sum(~np.isfinite(it)) == 12
    assert sorted(set(it[np.isfinite(it)])) == [1.0, 2.0, 3.0]
    assert (restricted.candidates["iteration"] <= 3).all()
    assert [s.iteration for s in restricted.iterations] == [1, 2, 3]


def test_missing_ftl_column_names_it(inputs: ReportInputs) -> None:
    with pytest.raises(InputError, match="area_ha"):
        ReportInputs(
            title="t",
            run_id="r",
            crs=CRS,
            iterations=[],
            ftls=inputs.ftls.drop(columns=["area_ha"]),
            candidates=inputs.candidates,
        )


def test_raster_shape_mismatch_names_the_raster() -> None:
    with pytest.raises(InputError, match="seasonal_amplitude_mm"):
        AreaRasters(
            velocity_mm_a=np.zeros((4, 5)),
            seasonal_amplitude_mm=np.zeros((5, 4)),
            transform=Affine.identity(),
        )


def test_recall_given_as_percent_is_rejected() -> None:
    with pytest.raises(InputError, match="recall"):
        IterationSummary(1, {}, 1, 1, 0, 1, recall=93.3)


def test_velocity_bin_shares_hand_computed() -> None:
    # |v|: 0, 5 → 0–10; 10 → 10–20 (left-closed); 25 → 20–30; 49.9 → 40–50; 50, 120 → ≥ 50.
    shares = velocity_bin_shares_pct(np.array([0.0, -5.0, 10.0, 25.0, -49.9, 50.0, 120.0, np.nan]))
    np.testing.assert_allclose(shares, np.array([2, 1, 1, 0, 1, 2]) * 100 / 7)
    assert velocity_bin_shares_pct(np.array([np.nan])).sum() == 0


def test_aspect_sectors_centred_on_compass_points() -> None:
    counts = aspect_sector_counts(np.array([0.0, 359.0, 11.0, 11.3, 90.0, 315.0, -1.0, np.nan]))
    expected = np.zeros(16, dtype=int)
    expected[0] = 3  # 0, 359, 11 are within ±11.25° of north
    expected[1] = 1  # 11.3 is NNE
    expected[4] = 1  # east
    expected[14] = 1  # north-west
    np.testing.assert_array_equal(counts, expected)


def test_ftl_pixel_mask_counts_the_burned_square() -> None:
    transform = Affine(10.0, 0.0, 0.0, 0.0, -10.0, 100.0)
    rasters = AreaRasters(np.zeros((10, 10)), np.zeros((10, 10)), transform)
    # A 30 m square aligned on pixel edges covers exactly 3 × 3 pixels (pixel-centre rule).
    square = Point(45.0, 55.0).buffer(15.0, cap_style="square")
    ftls = gpd.GeoDataFrame({"iteration": [1.0]}, geometry=[square])
    mask = ftl_pixel_mask(rasters, ftls)
    assert mask.sum() == 9
    assert mask[3:6, 3:6].all()


def test_polygon_rings_includes_holes() -> None:
    donut = Point(0, 0).buffer(10).difference(Point(0, 0).buffer(3))
    rings = polygon_rings([donut, None])
    assert len(rings) == 2
    assert all(r.shape[1] == 2 and np.allclose(r[0], r[-1]) for r in rings)


def test_rasters_without_ftls_yet() -> None:
    full = make_inputs(n_initial=0)
    no_ftls = dataclasses.replace(full, ftls=full.ftls.iloc[:0], iterations=[])
    report = build_report(no_ftls)
    _assert_pngs_sane(report)
    assert "FTLs in the inventory</td><td>0<" in report["index.html"].decode()


@pytest.mark.slow
def test_geographic_crs_reprojects_vectors_and_decimates_big_rasters() -> None:
    utm = make_inputs(rows=60, cols=80)
    lonlat = utm.ftls.to_crs("EPSG:4326")
    # A raster larger than figures.MAX_MAP_PIXELS on one side, in degrees around the FTLs.
    minx, miny, maxx, maxy = lonlat.total_bounds
    cols, rows = 3200, 40
    transform = Affine((maxx - minx) / cols, 0, minx, 0, -(maxy - miny) / rows, maxy)
    rng = np.random.default_rng(1)
    rasters = AreaRasters(
        velocity_mm_a=rng.normal(0, 8, (rows, cols)),
        seasonal_amplitude_mm=rng.gamma(2, 3, (rows, cols)),
        transform=transform,
    )
    inputs = dataclasses.replace(utm, crs="EPSG:4326", rasters=rasters)  # ftls stay in UTM
    report = build_report(inputs)
    _assert_pngs_sane(report)
    moved = in_report_crs(inputs)
    assert moved.ftls.crs.equals("EPSG:4326") and moved.candidates.crs.equals("EPSG:4326")
    np.testing.assert_allclose(moved.ftls.total_bounds, lonlat.total_bounds)
    assert ftl_pixel_mask(rasters, moved.ftls).any(), "FTLs must land on the degree grid"


def test_report_bytes_are_reproducible() -> None:
    inputs = empty_inputs()
    assert build_report(inputs) == build_report(inputs)
