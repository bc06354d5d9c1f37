"""Shared fixtures: a real SeaweedFS S3 server, a GeoTIFF factory, the offline STAC validator."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from distributed import LocalCluster

from ftlcloud.demo.scene import Scene, SceneSpec, generate_scene, write_scene
from ftlcloud.io import ingest
from ftlcloud.io.s3server import LocalS3Server
from ftlcloud.io.store import Store
from ftlcloud.pipeline.cluster import ClusterSpec

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
STAC_VALIDATE = SHARED / "tools" / "stac-validate"

#: A 30 m UTM grid in the Qilian Mountains (zone 47N), used by the raster factory by default.
UTM47 = "EPSG:32647"
ORIGIN_XY = (500_000.0, 4_200_000.0)


def stac_validate(paths: Sequence[str | Path]) -> str:
    """Run ../shared/tools/stac-validate on files or folders; assert exit 0; return the output."""
    result = subprocess.run(
        [sys.executable, str(STAC_VALIDATE), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, f"stac-validate failed:\n{out}"
    assert " 0 invalid" in out, out
    return out


@pytest.fixture(name="stac_validate")
def stac_validate_fixture() -> Callable[[Sequence[str | Path]], str]:
    """The :func:`stac_validate` helper as a fixture."""
    return stac_validate


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3Server]:
    """A real SeaweedFS S3 gateway on free ports; sets no environment variable."""
    server = LocalS3Server(tmp_path_factory.mktemp("seaweedfs"), bucket="ftlcloud-test")
    with server:
        yield server


def use_credentials(mp: pytest.MonkeyPatch, server: LocalS3Server) -> None:
    """Put the server's credentials in the standard AWS variables, as in a user's shell."""
    for name, value in server.env().items():
        if name.startswith("AWS_"):
            mp.setenv(name, value)


@pytest.fixture
def s3_store(s3_server: LocalS3Server, monkeypatch: pytest.MonkeyPatch) -> Store:
    """A Store on a fresh prefix of the test server; credentials in the env for this test only."""
    use_credentials(monkeypatch, s3_server)
    return Store(s3_server.store_url(f"t-{uuid.uuid4().hex[:12]}"), s3_server.settings())


def write_geotiff(
    path: str | Path,
    array: np.ndarray,
    *,
    transform: Affine | None = None,
    crs: Any = UTM47,
    nodata: float | int | None = None,
    tags: dict[str, str] | None = None,
    resolution: float = 30.0,
    origin_xy: tuple[float, float] = ORIGIN_XY,
) -> Path:
    """Write a plain (striped) GeoTIFF, 2-D or band-first 3-D; ``crs=None`` writes none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if transform is None:
        transform = Affine(resolution, 0, origin_xy[0], 0, -resolution, origin_xy[1])
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": arr.shape[2],
        "height": arr.shape[1],
        "count": arr.shape[0],
        "dtype": arr.dtype.name,
        "transform": transform,
    }
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
        if tags:
            dst.update_tags(**tags)
    return path


@pytest.fixture
def geotiff_factory(tmp_path: Path) -> Callable[..., Path]:
    """``make(name, array, **kw)`` writes a small GeoTIFF under the test's tmp dir."""

    def make(name: str, array: np.ndarray, **kwargs: Any) -> Path:
        return write_geotiff(tmp_path / name, array, **kwargs)

    return make


DATES = ["20200101", "20200113", "20200125"]


@pytest.fixture
def input_files(tmp_path: Path) -> dict[str, Any]:
    """A small consistent set of user inputs on the 30 m UTM 47N grid.

    deformation GeoTIFFs in metres (one per date, with a NoData patch), two aligned DEM tiles,
    NDVI for 2017 and 2019 on a coarser 60 m grid, and a polygon + point inventory (GeoPackage).
    """
    import geopandas as gpd
    import shapely

    rng = np.random.default_rng(42)
    rows, cols = 40, 50
    deformation = {}
    for i, day in enumerate(DATES):
        arr = (rng.normal(0, 0.003, (rows, cols)) - 0.01 * i).astype("float32")
        arr[:2, :3] = -9999.0
        deformation[day] = arr
        write_geotiff(tmp_path / "defo" / f"S1_{day}_disp.tif", arr, nodata=-9999.0)
    dem_w = (3000 + rng.uniform(0, 500, (rows, 25))).astype("float32")
    dem_e = (3000 + rng.uniform(0, 500, (rows, 25))).astype("float32")
    write_geotiff(tmp_path / "dem" / "dem_w.tif", dem_w)
    write_geotiff(
        tmp_path / "dem" / "dem_e.tif", dem_e, origin_xy=(ORIGIN_XY[0] + 25 * 30, ORIGIN_XY[1])
    )
    ndvi = {y: rng.uniform(-0.2, 0.9, (20, 25)).astype("float32") for y in (2017, 2019)}
    for y, arr in ndvi.items():
        write_geotiff(tmp_path / "ndvi" / f"ndvi_max_{y}.tif", arr, resolution=60.0)
    inv = gpd.GeoDataFrame(
        {"name": ["slump A", "slump B"]},
        geometry=[
            shapely.box(500_300, 4_199_100, 500_600, 4_199_400),
            shapely.Point(501_000, 4_199_000),
        ],
        crs=UTM47,
    )
    inv.to_file(tmp_path / "inventory.gpkg")
    return {
        "dir": tmp_path,
        "deformation_dir": tmp_path / "defo",
        "deformation_m": deformation,
        "dem_paths": [tmp_path / "dem" / "dem_w.tif", tmp_path / "dem" / "dem_e.tif"],
        "dem": {"dem_w": dem_w, "dem_e": dem_e},
        "ndvi_paths": sorted((tmp_path / "ndvi").glob("*.tif")),
        "ndvi": ndvi,
        "inventory_path": tmp_path / "inventory.gpkg",
        "inventory": inv,
    }


# --- the pipeline-level tests: a real LocalCluster and a small synthetic scene ingested into a
# --- local store (module-scoped: each test module gets its own)


def ingest_scene(store: Store, scene: Scene, tmp: Path) -> None:
    """Write the scene as a user's files and ingest them, as `ftlcloud ingest` does."""
    paths = write_scene(scene, tmp, dem_tiles=True)
    ingest.ingest_mintpy_h5(store, paths.timeseries_h5)
    ingest.ingest_dem(store, list(paths.dem))
    ingest.ingest_ndvi(store, dict(paths.ndvi))
    ingest.ingest_inventory(store, paths.inventory, name="initial")


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSpec]:
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as c:
        yield ClusterSpec(scheduler=c.scheduler_address)


@pytest.fixture(scope="module")
def scene() -> Scene:
    return generate_scene(SceneSpec.preset("small"))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, scene: Scene) -> Store:
    s = Store(str(tmp_path_factory.mktemp("store")))
    ingest_scene(s, scene, tmp_path_factory.mktemp("scene"))
    return s
