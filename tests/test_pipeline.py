"""The tiled pipeline end to end on a small synthetic scene: a real LocalCluster, a local store.

Checks: tiled factors equal whole-raster processing, candidates do not depend on the tile size,
every output validates, reruns write nothing, interrupted runs resume without redoing tiles.
"""

from __future__ import annotations

import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.features import geometry_mask
from rasterio.warp import Resampling, reproject
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import Point, box

from ftlcloud.demo.scene import Scene
from ftlcloud.io.catalog import Catalog
from ftlcloud.io.geoparquet import read_geoparquet
from ftlcloud.io.store import Store
from ftlcloud.pipeline.api import (
    FACTORS_COLLECTION,
    ITERATIONS_COLLECTION,
    compute_factors,
    initial_inventory_ref,
    read_inventory,
    run_iteration,
)
from ftlcloud.pipeline.cluster import ClusterSpec, connect
from ftlcloud.pipeline.factors import FACTOR_NAMES
from ftlcloud.pipeline.iteration import SAMPLED_FACTORS, sample_factors
from ftlcloud.pipeline.run import FactorSettings, RunManifest, RunPaths
from ftlcloud.science.fit import fit_seasonal
from ftlcloud.science.ndvi import delta_ndvi
from ftlcloud.science.rules import parse_rules
from ftlcloud.science.terrain import slope_aspect

pytestmark = pytest.mark.slow


def read_band(path: str) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def whole_raster_factors(scene: Scene) -> dict[str, np.ndarray]:
    """The factors computed on whole rasters straight from the scene (no store, no tiles)."""
    cube_mm = scene.displacement_m * 1000.0
    fit = fit_seasonal(cube_mm, list(scene.dates), unit="mm", min_valid=10).as_dict()
    padded = np.pad(scene.dem_m, 1, constant_values=np.nan)
    slope, aspect = slope_aspect(padded, scene.transform @ scene.transform.translation(-1, -1))
    ndvi = {}
    for year, arr in scene.ndvi.items():
        dst = np.full(scene.dem_m.shape, np.nan, dtype="float32")
        reproject(
            arr.astype("float32"),
            dst,
            src_transform=scene.ndvi_transform,
            src_crs=scene.crs,
            dst_transform=scene.transform,
            dst_crs=scene.crs,
            resampling=Resampling.bilinear,
            src_nodata=np.nan,
            dst_nodata=np.nan,
        )
        ndvi[year] = dst
    early, late = sorted(ndvi)
    return {
        **fit,
        "elevation_m": scene.dem_m,
        "slope_deg": slope[1:-1, 1:-1],
        "aspect_deg": aspect[1:-1, 1:-1],
        "delta_ndvi": delta_ndvi(ndvi[late], ndvi[early]),
    }


def test_tiled_factors_equal_whole_raster(store: Store, scene: Scene, cluster: ClusterSpec) -> None:
    res = compute_factors(
        store, "tiled", settings=FactorSettings(tile_size=64), cluster=cluster, progress=False
    )
    assert res.tiles_total == 12 and res.tiles_computed == 12
    truth = whole_raster_factors(scene)
    paths = RunPaths("tiled")
    for name in FACTOR_NAMES:
        got = read_band(store.href(paths.factor_cog(name)))
        want = np.asarray(truth[name], dtype="float32")
        assert got.shape == want.shape, name
        if name == "delta_ndvi":
            # Bilinear resampling from the 25 m NDVI grid: GDAL's warper (stackstac) and
            # rasterio.warp agree away from the raster's rim.
            got, want = got[2:-2, 2:-2], want[2:-2, 2:-2]
            np.testing.assert_allclose(got, want, atol=1e-3, equal_nan=True, err_msg=name)
        else:
            np.testing.assert_allclose(
                got, want, rtol=1e-4, atol=1e-3, equal_nan=True, err_msg=name
            )
        ok, errors, _ = cog_validate(store.href(paths.factor_cog(name)), strict=True, quiet=True)
        assert ok, (name, errors)


def test_inventory_sampling_in_tiles_equals_whole_raster(
    store: Store, scene: Scene, cluster: ClusterSpec
) -> None:
    # The derived thresholds learn from the factors under the inventory, sampled per tile on
    # the workers: the values must be those of each feature rasterised on the whole grid.
    compute_factors(
        store, "sample", settings=FactorSettings(tile_size=48), cluster=cluster, progress=False
    )
    paths = RunPaths("sample")
    catalog = Catalog(store)
    inv = read_inventory(store, catalog, initial_inventory_ref(catalog, None))
    grid = RunManifest.from_json(store.read_text(paths.manifest)).grid
    # Add a point, a feature straddling a tile corner (48, 48), and one off the grid.
    x0, y0 = grid.transform * (48, 48)
    extra = gpd.GeoDataFrame(
        geometry=[
            Point(x0 + 75.0, y0 - 45.0),
            box(x0 - 200, y0 - 170, x0 + 130, y0 + 160),
            box(x0 - 1e5, y0 - 1e5, x0 - 9e4, y0 - 9e4),
        ],
        crs=grid.crs,
    ).to_crs(inv.crs)
    inv = pd.concat([inv, extra], ignore_index=True)
    whole = {n: read_band(store.href(paths.factor_cog(n))) for n in SAMPLED_FACTORS}
    want: dict[str, list[np.ndarray]] = {n: [] for n in SAMPLED_FACTORS}
    n_pieces = 0
    for geom in inv.to_crs(grid.crs).geometry:
        if geom.geom_type == "Point":
            col, row = ~grid.transform * (geom.x, geom.y)
            inside = np.zeros(grid.shape_yx, dtype=bool)
            inside[int(row), int(col)] = True
        else:
            inside = geometry_mask(
                [geom], out_shape=grid.shape_yx, transform=grid.transform, invert=True
            )
        rows, cols = np.nonzero(inside)
        n_pieces += len({(r // 48, c // 48) for r, c in zip(rows, cols, strict=True)})
        for n in SAMPLED_FACTORS:
            want[n].append(whole[n][inside])
    assert n_pieces > len(inv), "some features must cross tile edges"
    with connect(cluster) as client:
        got = sample_factors(client, store, paths, grid, 48, inv)
    for n in SAMPLED_FACTORS:
        expected = np.concatenate(want[n])
        assert expected.size > 100
        np.testing.assert_array_equal(np.sort(got[n]), np.sort(expected), err_msg=n)


def test_candidates_do_not_depend_on_tile_size(store: Store, cluster: ClusterSpec) -> None:
    rules = parse_rules("table2")
    initial = initial_inventory_ref(Catalog(store), None)
    frames = {}
    for run_id, tile in (("t48", 48), ("t1024", 1024)):
        compute_factors(
            store, run_id, settings=FactorSettings(tile_size=tile), cluster=cluster, progress=False
        )
        res = run_iteration(
            store, run_id, 5, rules=rules, inventory=initial, cluster=cluster, progress=False
        )
        frames[run_id] = res.candidates
    a, b = frames["t48"], frames["t1024"]
    assert len(a) > 0
    assert len(a) == len(b)
    cols = ["area_ha", "n_pixels", "velocity_mean_abs_mm_a", "slope_mean_deg", "elevation_mean_m"]
    np.testing.assert_allclose(a[cols].to_numpy(float), b[cols].to_numpy(float), rtol=1e-5)
    assert all(ga.equals(gb) for ga, gb in zip(a.geometry, b.geometry, strict=True))


def test_iteration_outputs_validate_and_rerun_writes_nothing(
    store: Store, cluster: ClusterSpec, stac_validate: object
) -> None:
    rules = parse_rules("derived")
    initial = initial_inventory_ref(Catalog(store), None)
    compute_factors(
        store, "rerun", settings=FactorSettings(tile_size=64), cluster=cluster, progress=False
    )
    res = run_iteration(
        store, "rerun", 1, rules=rules, inventory=initial, cluster=cluster, progress=False
    )
    assert not res.skipped
    cat = Catalog(store)
    item = cat.get_item(ITERATIONS_COLLECTION, "rerun-it01")
    assert item is not None
    assert set(item.assets) >= {"mask", "candidates", "thresholds"}
    assert item.properties["ftl:n_candidates"] == len(res.candidates)
    assert {lk.rel for lk in item.links} >= {"derived_from"}
    cands = read_geoparquet(store, RunPaths("rerun").iteration(1, "candidates.parquet"))
    assert {"iteration", "overlaps_known", "score", "candidate_id", "area_ha"} <= set(cands.columns)
    stac_validate([store.url])  # type: ignore[operator]

    before = {p: os.stat(p).st_mtime_ns for p in Path(store.url).rglob("*") if p.is_file()}
    again = compute_factors(
        store, "rerun", settings=FactorSettings(tile_size=64), cluster=cluster, progress=False
    )
    assert again.skipped
    res2 = run_iteration(
        store, "rerun", 1, rules=rules, inventory=initial, cluster=cluster, progress=False
    )
    assert res2.skipped and len(res2.candidates) == len(res.candidates)
    after = {p: os.stat(p).st_mtime_ns for p in Path(store.url).rglob("*") if p.is_file()}
    assert after == before


def test_interrupted_factor_stage_resumes_only_missing_tiles(
    store: Store, cluster: ClusterSpec
) -> None:
    settings = FactorSettings(tile_size=64)
    compute_factors(store, "resume", settings=settings, cluster=cluster, progress=False)
    cat = Catalog(store)
    paths = RunPaths("resume")
    reference = read_band(store.href(paths.factor_cog("velocity_mm_a")))
    # Simulate an interruption: the item and two tiles never made it.
    store.delete(cat.item_key(FACTORS_COLLECTION, "resume-factors"))
    tiles = [k for k in store.list(f"{paths.prefix}/factors/tiles/")]
    for key in tiles[:2]:
        store.delete(key)
    assert not cat.is_complete(FACTORS_COLLECTION, "resume-factors")
    res = compute_factors(store, "resume", settings=settings, cluster=cluster, progress=False)
    assert res.tiles_computed == 2
    np.testing.assert_array_equal(
        read_band(store.href(paths.factor_cog("velocity_mm_a"))), reference
    )


def test_changed_settings_under_same_run_id_are_refused(store: Store, cluster: ClusterSpec) -> None:
    from ftlcloud.errors import RunError

    compute_factors(
        store, "fixed", settings=FactorSettings(tile_size=64), cluster=cluster, progress=False
    )
    with pytest.raises(RunError, match=r"already exists .* other settings"):
        compute_factors(
            store, "fixed", settings=FactorSettings(tile_size=128), cluster=cluster, progress=False
        )


@pytest.mark.integration
def test_cog_assembly_on_s3_from_a_worker_thread(s3_store: Store) -> None:
    # GDAL 3.10 reads the sources of a large VRT request in its own thread pool; off the main
    # thread (a Dask worker's task thread) rasterio sets the S3 options thread-locally, and the
    # pool lost the endpoint at the paper's scale (72 tiles of 512 px): assemble there.
    from concurrent.futures import ThreadPoolExecutor

    from affine import Affine

    from ftlcloud.pipeline.grid import GridSpec
    from ftlcloud.pipeline.tiles import assemble_cog, encode_tile

    grid = GridSpec("EPSG:32647", Affine(30.0, 0, 500000.0, 0, -30.0, 4200000.0), (3700, 4440))
    tiles = grid.tiles(512)
    keys = [f"tiles/{t.tile_id}.tif" for t in tiles]
    for tile, key in zip(tiles, keys, strict=True):
        w = tile.window
        value = np.full((w.height, w.width), float(tile.row * 100 + tile.col), np.float32)
        s3_store.write_bytes(key, encode_tile({"v": value}, grid.tile_transform(w), grid.crs))
    with ThreadPoolExecutor(1) as pool:
        pool.submit(assemble_cog, s3_store, grid, tiles, keys, 1, "out.tif").result()
    with s3_store.rasterio_env(), rasterio.open(s3_store.gdal_path("out.tif")) as src:
        assert src.shape == (3700, 4440)
        assert src.read(1, window=((3600, 3601), (4400, 4401)))[0, 0] == 7 * 100 + 8
