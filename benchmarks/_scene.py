"""Input files of any size for the end-to-end benchmarks, streamed one date at a time.

``generate_scene`` holds the whole (time, y, x) cube in float64, so it cannot build the paper's
4440 x 3700 x 82 area in a reasonable memory. Here the demo scene of ``SceneSpec.sized(1)``
(600 x 500 px, 30 m, 82 dates) is repeated as a mosaic and cropped to the requested size: every
raster is realistic (terrain, landslides, decoys, gaps-free MintPy-like displacement, NDVI on its
own 25 m grid) and the inventory is the demo inventory repeated in every whole copy. The seams
between copies are steps in the DEM; they only add a few steep lines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from affine import Affine

from ftlcloud.demo.scene import SceneSpec, generate_scene

logger = logging.getLogger(__name__)

_PROFILE = {
    "driver": "GTiff",
    "count": 1,
    "dtype": "float32",
    "nodata": float("nan"),
    "tiled": True,
    "blockxsize": 512,
    "blockysize": 512,
    # Fast level: these are the user's files, not what is measured.
    "compress": "deflate",
    "zlevel": 1,
    "predictor": 3,
}


@dataclass(frozen=True)
class MosaicPaths:
    """Files written by :func:`write_mosaic_scene`."""

    deformation_dir: Path
    dem: Path
    ndvi: dict[int, Path]
    inventory: Path
    width_px: int
    height_px: int
    n_dates: int


def _mosaic(tile: np.ndarray, height: int, width: int) -> np.ndarray:
    reps = (-(-height // tile.shape[0]), -(-width // tile.shape[1]))
    return np.ascontiguousarray(np.tile(tile, reps)[:height, :width], dtype=np.float32)


def _write(path: Path, array: np.ndarray, transform: Affine, crs: str) -> None:
    with rasterio.open(
        path,
        "w",
        height=array.shape[0],
        width=array.shape[1],
        transform=transform,
        crs=crs,
        **_PROFILE,
    ) as dst:
        dst.write(array, 1)


def write_mosaic_scene(out_dir: Path, width_px: int, height_px: int) -> MosaicPaths:
    """Write per-date deformation GeoTIFFs (metres), a DEM, two NDVI years and an inventory."""
    scene = generate_scene(SceneSpec.sized(1.0))
    tile_h, tile_w = scene.dem_m.shape
    crs = scene.crs
    tr = scene.transform
    ndvi_tr = scene.ndvi_transform
    # The NDVI grid (25 m) covers the same extent: scale the crop by the pixel size ratio.
    ndvi_scale = tr.a / ndvi_tr.a
    ndvi_h, ndvi_w = round(height_px * ndvi_scale), round(width_px * ndvi_scale)
    out_dir.mkdir(parents=True, exist_ok=True)
    deformation_dir = out_dir / "deformation"
    deformation_dir.mkdir(exist_ok=True)

    for i, day in enumerate(scene.dates):
        frame = _mosaic(scene.displacement_m[i], height_px, width_px)
        _write(deformation_dir / f"{day:%Y%m%d}.tif", frame, tr, crs)
    dem_path = out_dir / "dem.tif"
    _write(dem_path, _mosaic(scene.dem_m, height_px, width_px), tr, crs)
    ndvi_paths: dict[int, Path] = {}
    for year, field in scene.ndvi.items():
        ndvi_paths[year] = out_dir / f"ndvi_{year}.tif"
        _write(ndvi_paths[year], _mosaic(field, ndvi_h, ndvi_w), ndvi_tr, crs)

    # The inventory repeated in every copy that lies wholly inside the crop.
    copies = []
    for r in range(height_px // tile_h):
        for c in range(width_px // tile_w):
            part = scene.inventory.copy()
            part["geometry"] = part.geometry.translate(c * tile_w * tr.a, r * tile_h * tr.e)
            part["id"] = [f"{v}-r{r}c{c}" for v in part["id"]]
            copies.append(part)
    inventory = gpd.GeoDataFrame(pd.concat(copies, ignore_index=True), crs=scene.inventory.crs)
    inventory_path = out_dir / "inventory.gpkg"
    inventory.to_file(inventory_path, layer="inventory")
    logger.info(
        "mosaic scene %d x %d px x %d dates, %d inventory features",
        width_px,
        height_px,
        len(scene.dates),
        len(inventory),
    )
    return MosaicPaths(
        deformation_dir, dem_path, ndvi_paths, inventory_path, width_px, height_px, len(scene.dates)
    )
