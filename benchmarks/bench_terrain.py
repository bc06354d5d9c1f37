"""Terrain: ftlcloud slope_aspect vs ``gdaldem slope`` + ``gdaldem aspect``.

gdaldem always reads a GeoTIFF and writes GeoTIFFs, so two ftlcloud figures are reported: the
kernel alone (numpy array in memory) and the fair like-for-like one (read the GeoTIFF with
rasterio, compute, write two GeoTIFFs). The PASS/MISS ratio uses the file-to-file figure.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from benchmarks._timing import Row, best_of, check
from ftlcloud.science.terrain import slope_aspect

PIXEL_M = 30.0
PROFILE = {
    "driver": "GTiff",
    "dtype": "float32",
    "count": 1,
    "crs": "EPSG:32647",
    "tiled": True,
    "blockxsize": 256,
    "blockysize": 256,
}


def make_dem(side: int, seed: int = 3) -> np.ndarray:
    """A smooth synthetic DEM (metres): broad hills plus small-scale roughness."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / np.float32(side)
    dem = 3000 + 400 * np.sin(6 * x) * np.cos(5 * y) + 150 * np.sin(23 * x + 11 * y)
    dem += rng.normal(0, 2, (side, side)).astype(np.float32)
    return dem.astype(np.float32)


def _write(path: Path, arr: np.ndarray, transform: Affine) -> None:
    with rasterio.open(
        path, "w", height=arr.shape[0], width=arr.shape[1], transform=transform, **PROFILE
    ) as dst:
        dst.write(arr, 1)


def run(side: int) -> list[Row]:
    """Every terrain figure for a side x side DEM."""
    gdaldem = shutil.which("gdaldem")
    dem = make_dem(side)
    transform = Affine(PIXEL_M, 0, 500000, 0, -PIXEL_M, 4200000)
    with tempfile.TemporaryDirectory(prefix="ftl-bench-terrain-") as tmp:
        tmpdir = Path(tmp)
        dem_path = tmpdir / "dem.tif"
        _write(dem_path, dem, transform)

        t_mem = best_of(lambda: slope_aspect(dem, transform))

        def ftl_files() -> None:
            with rasterio.open(dem_path) as src:
                arr = src.read(1)
                tr = src.transform
            slope, aspect = slope_aspect(arr, tr)
            _write(tmpdir / "ftl_slope.tif", slope, tr)
            _write(tmpdir / "ftl_aspect.tif", aspect, tr)

        t_files = best_of(ftl_files)
        rows = [
            Row(
                f"slope+aspect {side}^2: ftlcloud in memory",
                t_mem,
                "s",
                note="numpy array in, two arrays out",
            ),
            Row(
                f"slope+aspect {side}^2: ftlcloud file to file",
                t_files,
                "s",
                note="rasterio read GeoTIFF, compute, write 2 GeoTIFFs",
            ),
        ]
        if gdaldem is None:
            return [*rows, Row("gdaldem", float("nan"), "s", note="gdaldem not installed")]

        def gdal() -> None:
            for mode in ("slope", "aspect"):
                subprocess.run(
                    [gdaldem, mode, "-q", str(dem_path), str(tmpdir / f"g_{mode}.tif")], check=True
                )

        t_gdal = best_of(gdal)
        rows += [
            Row(
                f"gdaldem slope + gdaldem aspect {side}^2",
                t_gdal,
                "s",
                note="2 subprocesses, each reads the GeoTIFF and writes one",
            ),
            check("gdaldem / ftlcloud file to file (speed-up)", t_gdal / t_files, at_least=1.5),
            check(
                "gdaldem / ftlcloud in memory (speed-up)",
                t_gdal / t_mem,
                note="not like for like: no I/O on ftlcloud's side",
            ),
        ]
        return rows
