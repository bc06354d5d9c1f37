"""The review chips and the review page, the page driven in a real headless Chromium."""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from PIL import Image
from playwright.sync_api import Route, sync_playwright
from pyproj import Transformer

from ftlcloud.errors import InputError
from ftlcloud.review.chips import hillshade, layer_limits, render_chips
from ftlcloud.review.decisions import apply_decisions, read_decisions, validate_decisions
from ftlcloud.review.page import build_review_page

CRS = "EPSG:32647"
RES_M = 30.0
ORIGIN = (500_000.0, 4_200_000.0)  # UTM 47N, about 37.9° N 99° E: the Qilian Mountains
TRANSFORM = Affine(RES_M, 0.0, ORIGIN[0], 0.0, -RES_M, ORIGIN[1])
SHAPE = (160, 200)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# (centre col, centre row, radius px, velocity mm/a, score)
SLIDES = [
    (40, 40, 6, -45.0, 0.91),
    (120, 50, 4, -30.0, 0.55),
    (160, 120, 9, -60.0, 0.97),
    (70, 120, 3, -18.0, 0.22),
    (100, 90, 5, 25.0, 0.40),
]


def _xy(col: float, row: float) -> tuple[float, float]:
    return TRANSFORM @ (col, row)


def synthetic_layers() -> dict[str, tuple[np.ndarray, Affine]]:
    """A ridge DEM and factor fields with landslide blobs at SLIDES."""
    rows, cols = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    rng = np.random.default_rng(7)
    dem = 3800.0 + 400.0 * np.sin(cols / 35.0) * np.cos(rows / 50.0) + 2.0 * rows
    velocity = rng.normal(0.0, 3.0, SHAPE)
    amplitude = 8.0 + rng.normal(0.0, 1.5, SHAPE)
    dndvi = rng.normal(0.0, 0.03, SHAPE)
    for c, r, rad, v, _ in SLIDES:
        blob = np.exp(-((cols - c) ** 2 + (rows - r) ** 2) / (2.0 * rad**2))
        velocity += v * blob
        amplitude += 25.0 * blob
        dndvi -= 0.2 * blob
    velocity[0:10, 0:10] = np.nan  # a no-data corner
    return {
        "hillshade": (hillshade(dem, TRANSFORM), TRANSFORM),
        "velocity": (velocity, TRANSFORM),
        "seasonal_amplitude": (amplitude, TRANSFORM),
        "delta_ndvi": (dndvi, TRANSFORM),
    }


def synthetic_candidates() -> gpd.GeoDataFrame:
    records = []
    for i, (c, r, rad, v, score) in enumerate(SLIDES, start=1):
        x, y = _xy(c + 0.5, r + 0.5)
        geom = shapely.Point(x, y).buffer(rad * RES_M, quad_segs=6)
        records.append(
            {
                "candidate_id": f"it2-c{i:04d}",
                "iteration": 2,
                "area_ha": geom.area / 1e4,
                "perimeter_km": geom.length / 1e3,
                "n_pixels": round(geom.area / RES_M**2),
                "velocity_mean_abs_mm_a": abs(v) * 0.6,
                "velocity_max_abs_mm_a": abs(v),
                "seasonal_amplitude_mean_mm": 20.0,
                "slope_mean_deg": 24.0,
                "aspect_circmean_deg": 160.0,
                "elevation_mean_m": 3900.0,
                "delta_ndvi_mean": -0.12,
                "hidden": False,
                "small": geom.area / 1e4 < 10.0,
                "centroid_x": geom.centroid.x,
                "centroid_y": geom.centroid.y,
                "overlaps_known": i == 1,
                "score": score,
                "geometry": geom,
            }
        )
    return gpd.GeoDataFrame(records, geometry="geometry", crs=CRS)


def _png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


# --- chips -------------------------------------------------------------------------------------


def test_hillshade_matches_gdaldem(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows, cols = np.mgrid[0:50, 0:60]
    dem = (1000 + 3 * cols + 2 * rows + 40 * np.sin(cols / 7) * np.cos(rows / 5)).astype("float32")
    dem += rng.normal(0, 2, dem.shape).astype("float32")
    src = tmp_path / "dem.tif"
    with rasterio.open(
        src, "w", driver="GTiff", width=60, height=50, count=1, dtype="float32", crs=CRS,
        transform=TRANSFORM,
    ) as ds:  # fmt: skip
        ds.write(dem, 1)
    for az, alt in [(315.0, 45.0), (90.0, 30.0), (200.0, 60.0)]:
        out = tmp_path / f"hs_{az:.0f}.tif"
        subprocess.run(
            ["gdaldem", "hillshade", "-q", "-az", str(az), "-alt", str(alt), str(src), str(out)],
            check=True,
        )
        with rasterio.open(out) as ds:
            ref = ds.read(1).astype("float64")
        mine = hillshade(dem, TRANSFORM, azimuth_deg=az, altitude_deg=alt)
        # gdaldem writes bytes: agreement to its rounding, edges are its no-data 0.
        assert np.abs(ref[1:-1, 1:-1] - mine[1:-1, 1:-1]).max() <= 0.5
        assert (mine[0, :] == 0).all() and (ref[0, :] == 0).all()


def test_render_chips_outline_colours_and_limits() -> None:
    layers = synthetic_layers()
    cand = synthetic_candidates().iloc[2]  # the big fast slide, velocity −60 mm/a
    chips = render_chips(cand.geometry, layers, size_px=96, pad_px=12)
    assert set(chips) == set(layers)
    images = {name: _png(data) for name, data in chips.items()}
    assert all(img.shape == (96, 96, 4) for img in images.values())
    vel = images["velocity"]
    # The outline (black on the velocity chip) runs along the inner square: the candidate's
    # bounds fill size − 2·pad pixels, so its leftmost vertex sits near column 12, mid-height.
    left_edge = vel[44:52, 10:15, :3].sum(axis=2)
    assert left_edge.min() < 60
    # The centre of a −60 mm/a slide is red in RdBu (negative = red); symmetric limits from the
    # chip itself put it at the dark-red end, RdBu(0) = (103, 0, 31).
    centre = vel[48, 48, :3].astype(int)
    assert centre[0] > centre[2] + 50 and centre[1] < 40
    # With global limits ten times wider, the same pixel is paler (closer to white).
    wide_limits = {"velocity": (-600.0, 600.0)}
    wide = _png(render_chips(cand.geometry, layers, limits=wide_limits)["velocity"])
    assert wide[48, 48, 1] > centre[1] + 100
    # Hillshade is grey: R = G = B away from the outline.
    hs = images["hillshade"][30, 70, :3].astype(int)
    assert hs[0] == hs[1] == hs[2]


def test_render_chips_nodata_is_transparent_and_errors() -> None:
    layers = synthetic_layers()
    corner = shapely.box(*_xy(0, 4), *_xy(4, 0))  # over the NaN corner and off the grid
    vel = _png(render_chips(corner, layers)["velocity"])
    assert vel[2, 2, 3] == 0  # outside the array
    assert (vel[..., 3] == 255).any()
    with pytest.raises(InputError, match="non-empty candidate geometry"):
        render_chips(shapely.Polygon(), layers)
    with pytest.raises(InputError, match="2-D array"):
        render_chips(corner, {"velocity": (np.zeros((2, 3, 4)), TRANSFORM)})


def test_layer_limits_symmetric_for_diverging() -> None:
    limits = layer_limits(synthetic_layers())
    lo, hi = limits["velocity"]
    assert lo == -hi and hi > 3.0
    assert limits["hillshade"] == (0.0, 255.0)
    lo, hi = limits["seasonal_amplitude"]
    assert 0.0 < lo < 8.0 < hi


# --- page, static checks -----------------------------------------------------------------------


def test_page_is_self_contained_and_sorted() -> None:
    cands = synthetic_candidates()
    page = build_review_page(cands, synthetic_layers(), title="Qilian <test> it2", crs=CRS)
    # Nothing external: no src/href to http(s) except the map links, no stylesheet links.
    assert not re.search(r"<script[^>]+src=", page)
    assert not re.search(r"<link[^>]+stylesheet", page)
    external = re.findall(r'(?:src|href)="(https?://[^"]+)"', page)
    assert external and all(u.startswith("https://www.openstreetmap.org/") for u in external)
    assert "Qilian &lt;test&gt; it2" in page and "<test>" not in page
    # Cards in score order.
    order = re.findall(r'data-cid="([^"]+)"', page)
    expected = cands.sort_values("score", ascending=False)["candidate_id"].tolist()
    assert order == expected
    assert page.count("data:image/png;base64,") == 4 * len(cands)
    # The map link carries the centroid in WGS 84, computed independently here.
    to_ll = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    c = cands.iloc[0].geometry.centroid
    lon, lat = to_ll.transform(c.x, c.y)
    assert f"mlat={lat:.6f}&amp;mlon={lon:.6f}" in page
    assert 37.0 < lat < 39.0 and 98.0 < lon < 100.0


def test_page_rejects_bad_input() -> None:
    cands = synthetic_candidates()
    twice = gpd.GeoDataFrame(gpd.pd.concat([cands, cands.iloc[:1]]), geometry="geometry", crs=CRS)
    with pytest.raises(InputError, match="it2-c0001' occurs more than once"):
        build_review_page(twice, {}, title="t", crs=CRS)
    with pytest.raises(InputError, match="not a CRS"):
        build_review_page(cands, {}, title="t", crs="EPSG:nonsense")


# --- page in a real browser --------------------------------------------------------------------


@pytest.mark.integration
def test_review_page_in_chromium(tmp_path: Path) -> None:
    cands = synthetic_candidates()
    title = "ftlcloud review — browser test"
    page_path = tmp_path / "review.html"
    page_path.write_text(
        build_review_page(cands, synthetic_layers(), title=title, crs=CRS), encoding="utf-8"
    )
    order = cands.sort_values("score", ascending=False)["candidate_id"].tolist()
    requested: list[str] = []
    aborted: list[str] = []

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                accept_downloads=True, viewport={"width": 1200, "height": 900}
            )

            def guard(route: Route) -> None:
                url = route.request.url
                if url.startswith(("file://", "data:", "blob:")):
                    route.continue_()
                else:
                    aborted.append(url)
                    route.abort()

            context.route("**/*", guard)
            page = context.new_page()
            page.on("request", lambda req: requested.append(req.url))
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(page_path.as_uri())
            page.wait_for_selector(".card.current")
            counter = page.locator("#counter")
            assert "0</b> / 5 decided" in counter.inner_html()

            # Keyboard: first card (highest score) accept → moves to 2nd; reject it → 3rd;
            # back up with k, undo the reject, then reject again with the arrow keys.
            page.keyboard.press("a")
            page.keyboard.press("r")
            page.keyboard.press("k")
            page.keyboard.press("u")
            assert page.get_attribute(f'[data-cid="{order[1]}"]', "data-decision") == ""
            page.keyboard.press("r")  # rejects order[1], moves to order[2]
            page.keyboard.press("ArrowDown")  # skip order[2]
            # A note typed after pressing n, with a comma and quotes to exercise CSV quoting.
            page.keyboard.press("n")
            page.keyboard.type('scarp visible, "fresh" cracks')
            page.keyboard.press("Escape")
            page.keyboard.press("a")  # accepts order[3]
            # Buttons: reject the last card by clicking.
            page.locator(f'[data-cid="{order[4]}"] .btn-reject').click()
            assert "4</b> / 5 decided" in counter.inner_html()
            assert "2</b> accepted" in counter.inner_html()

            # Persistence: a reload keeps the decisions and the note.
            page.reload()
            page.wait_for_selector(".card.current")
            assert page.get_attribute(f'[data-cid="{order[0]}"]', "data-decision") == "accept"
            assert page.get_attribute(f'[data-cid="{order[2]}"]', "data-decision") == ""
            assert (
                page.input_value(f'[data-cid="{order[3]}"] .note')
                == 'scarp visible, "fresh" cracks'
            )

            shot = tmp_path / "review.png"
            # The viewport from the top: a full-page shot would float the sticky header.
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(shot))

            with page.expect_download() as info:
                page.locator("#export").click()
            download = info.value
            assert download.suggested_filename == "decisions.csv"
            exported = tmp_path / download.suggested_filename
            download.save_as(exported)
            assert errors == []
        finally:
            browser.close()

    assert aborted == []
    assert requested and all(u.startswith(("file://", "data:", "blob:")) for u in requested)
    img = Image.open(shot)
    assert img.format == "PNG" and img.size == (1200, 900)
    assert np.asarray(img.convert("L")).std() > 10  # not a blank page

    decisions = read_decisions(exported)
    assert decisions["candidate_id"].tolist() == [order[0], order[1], order[3], order[4]]
    assert decisions["decision"].tolist() == ["accept", "reject", "accept", "reject"]
    assert decisions["note"].tolist()[2] == 'scarp visible, "fresh" cracks'
    checked = validate_decisions(decisions, cands)
    empty = gpd.GeoDataFrame(
        {"ftl_id": [], "kind": [], "source": []}, geometry=gpd.GeoSeries([], crs=CRS)
    )
    inventory, counts = apply_decisions(empty, cands, checked, iteration=2)
    assert counts.as_dict() == {
        "candidates": 5,
        "accepted": 2,
        "rejected": 2,
        "added": 0,
        "undecided": 1,
        "new_ftls": 2,
    }
    assert sorted(inventory["candidate_id"]) == sorted([order[0], order[3]])
    assert (inventory["source"] == "iteration-2").all()
