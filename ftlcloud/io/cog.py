"""Cloud-optimised GeoTIFF writer and validator, and the STAC asset description of what was written.

The COG is built in memory with GDAL's COG driver (512×512 tiles, DEFLATE with the floating-point
or horizontal predictor, overviews) and uploaded to the store in one write, so a reader never sees
a partial file.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pystac
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import MemoryFile
from rasterio.warp import transform_bounds
from rio_cogeo.cogeo import cog_validate

from ftlcloud.errors import InputError
from ftlcloud.io.store import Store

log = logging.getLogger(__name__)

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
BLOCK_SIZE = 512

Kind = Literal["continuous", "mask", "categorical"]


def multihash_sha256(data: bytes | Path) -> str:
    """The STAC file extension's ``file:checksum``: multihash sha2-256 (code 0x12, 32 bytes) of
    bytes, or of a local file read in chunks."""
    if isinstance(data, Path):
        with data.open("rb") as fh:
            return "1220" + hashlib.file_digest(fh, "sha256").hexdigest()
    return "1220" + hashlib.sha256(data).hexdigest()


@dataclass
class AssetInfo:
    """What was written to the store, with the metadata a STAC asset needs."""

    href: str
    """Absolute location in the store (local path or s3://...)."""
    key: str
    """Store key."""
    media_type: str
    checksum: str
    """``file:checksum`` (multihash sha2-256, hex)."""
    size: int
    """``file:size`` in bytes."""
    proj: dict[str, Any] = field(default_factory=dict)
    """``proj:code``, ``proj:shape`` (rows, cols), ``proj:transform``, ``proj:bbox``."""
    bbox_wgs84: list[float] | None = None
    """[west, south, east, north] in EPSG:4326, for item geometry and collection extent."""
    bands: list[dict[str, Any]] = field(default_factory=list)
    """``raster:bands`` entries (data_type, nodata, unit, statistics, ...)."""
    table: dict[str, Any] = field(default_factory=dict)
    """``table:*`` fields for GeoParquet assets."""
    title: str | None = None

    def to_asset(self, roles: Sequence[str] = ("data",), title: str | None = None) -> pystac.Asset:
        """A pystac Asset with file, projection and raster (or table) fields."""
        extra: dict[str, Any] = {"file:checksum": self.checksum, "file:size": self.size}
        extra.update(self.proj)
        if self.bands:
            extra["raster:bands"] = [dict(b) for b in self.bands]
        extra.update(self.table)
        return pystac.Asset(
            href=self.href,
            media_type=self.media_type,
            roles=list(roles),
            title=title or self.title,
            extra_fields=extra,
        )


def proj_code(crs: CRS) -> str | None:
    """``EPSG:nnnn`` (or another authority code) of a CRS, None if it has none."""
    auth = crs.to_authority()
    return f"{auth[0]}:{auth[1]}" if auth else None


def proj_fields(crs: CRS, transform: Affine, shape: tuple[int, int]) -> dict[str, Any]:
    """Projection extension fields for a grid; the WKT2 goes in when there is no code."""
    rows, cols = shape
    west, north = transform @ (0, 0)
    east, south = transform @ (cols, rows)
    bbox = [min(west, east), min(south, north), max(west, east), max(south, north)]
    out: dict[str, Any] = {
        "proj:code": proj_code(crs),
        "proj:shape": [int(rows), int(cols)],
        "proj:transform": [float(v) for v in tuple(transform)[:6]],
        "proj:bbox": [float(v) for v in bbox],
    }
    if out["proj:code"] is None:
        out["proj:wkt2"] = crs.to_wkt()
    return out


def bbox_to_wgs84(crs: CRS, bbox: Sequence[float]) -> list[float]:
    """Transform a bbox to EPSG:4326 (densified edges, so curved edges stay inside)."""
    west, south, east, north = transform_bounds(crs, "EPSG:4326", *bbox, densify_pts=21)
    return [float(west), float(south), float(east), float(north)]


def _json_number(value: float) -> float | str:
    # JSON has no NaN/Inf; the raster extension spells them as strings.
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def band_stats(band: np.ndarray, nodata: float | int | None) -> dict[str, float]:
    """raster:bands ``statistics`` of the valid values of one band (NaN and nodata left out)."""
    valid = np.isfinite(band) if band.dtype.kind == "f" else np.ones(band.shape, bool)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        valid &= band != nodata
    n = int(valid.sum())
    stats: dict[str, float] = {"valid_percent": round(100.0 * n / max(band.size, 1), 4)}
    if n:
        values = band[valid].astype("float64")
        stats.update(
            minimum=float(values.min()),
            maximum=float(values.max()),
            mean=float(values.mean()),
            stddev=float(values.std()),
        )
    return stats


def write_cog(
    store: Store,
    key: str,
    array: np.ndarray,
    *,
    transform: Affine,
    crs: CRS | str | int,
    kind: Kind = "continuous",
    nodata: float | int | None = None,
    band_names: Sequence[str] | None = None,
    description: str | None = None,
    unit: str | None = None,
    compress: Literal["DEFLATE", "ZSTD"] = "DEFLATE",
) -> AssetInfo:
    """Write a 2-D (or band-first 3-D) array as a COG at ``key`` and describe it.

    ``nodata`` defaults to NaN for float arrays and 0 for integer ones; overviews use average
    resampling for continuous layers and nearest for masks and categorical layers.
    """
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise InputError(
            f"write_cog {key!r}: array of shape {array.shape} is not 2-D or bands×rows×cols"
        )
    if arr.dtype == np.bool_:
        arr = arr.astype("uint8")
    if arr.dtype.kind not in "fiu":
        raise InputError(f"write_cog {key!r}: dtype {arr.dtype} is not numeric")
    if arr.dtype == np.float16:
        arr = arr.astype("float32")
    is_float = arr.dtype.kind == "f"
    if nodata is None:
        nodata = float("nan") if is_float else 0
    if kind not in ("continuous", "mask", "categorical"):
        raise InputError(f"write_cog {key!r}: kind {kind!r} is not continuous, mask or categorical")
    try:
        crs_obj = CRS.from_user_input(crs)
    except Exception as err:
        raise InputError(f"write_cog {key!r}: unusable CRS {crs!r}: {err}") from err
    n_bands, rows, cols = arr.shape
    if band_names is not None and len(band_names) != n_bands:
        raise InputError(f"write_cog {key!r}: {len(band_names)} band names for {n_bands} bands")

    options = cog_creation_options(kind, arr.dtype, compress)
    profile = {
        "driver": "COG",
        "width": cols,
        "height": rows,
        "count": n_bands,
        "dtype": arr.dtype.name,
        "crs": crs_obj,
        "transform": transform,
        "nodata": nodata,
        **options,
    }
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(arr)
            for i in range(n_bands):
                if band_names is not None:
                    dst.set_band_description(i + 1, band_names[i])
                if unit:
                    dst.set_band_unit(i + 1, unit)
            if description:
                dst.update_tags(TIFFTAG_IMAGEDESCRIPTION=description)
        data = bytes(mem.read())
    store.write_bytes(key, data)

    proj = proj_fields(crs_obj, transform, (rows, cols))
    bands = []
    for i in range(n_bands):
        band: dict[str, Any] = {
            "data_type": arr.dtype.name,
            "nodata": _json_number(float(nodata) if is_float else int(nodata)),
            "statistics": band_stats(arr[i], nodata),
            "spatial_resolution": float(abs(transform.a)),
        }
        if unit:
            band["unit"] = unit
        if band_names is not None:
            band["name"] = band_names[i]
        bands.append(band)
    info = cog_asset_info(store, key, data, crs_obj, proj, bands, description)
    log.info("wrote COG %s (%d×%d×%d, %d bytes)", info.href, n_bands, rows, cols, info.size)
    return info


def cog_asset_info(
    store: Store,
    key: str,
    data: bytes | Path,
    crs: CRS,
    proj: dict[str, Any],
    bands: list[dict[str, Any]],
    title: str | None,
) -> AssetInfo:
    """Describe a COG written at ``key`` from ``data`` (its bytes, or the local file uploaded):
    checksum, size, projection, footprint, bands."""
    return AssetInfo(
        href=store.href(key),
        key=key,
        media_type=COG_MEDIA_TYPE,
        checksum=multihash_sha256(data),
        size=data.stat().st_size if isinstance(data, Path) else len(data),
        proj=proj,
        bbox_wgs84=bbox_to_wgs84(crs, proj["proj:bbox"]),
        bands=bands,
        title=title,
    )


def validate_cog(store: Store, key: str) -> tuple[bool, list[str], list[str]]:
    """rio-cogeo's strict validation of a COG in the store: (is_valid, errors, warnings)."""
    with store.rasterio_env():
        return cog_validate(store.gdal_path(key), strict=True, quiet=True)


def read_raster(store: Store, key: str) -> tuple[np.ndarray, Affine, CRS, Any]:
    """Read a whole raster from the store: (bands×rows×cols array, transform, crs, nodata)."""
    with store.rasterio_env(), rasterio.open(store.gdal_path(key)) as src:
        return src.read(), src.transform, src.crs, src.nodata


def cog_creation_options(
    kind: Kind, dtype: np.dtype, compress: Literal["DEFLATE", "ZSTD"] = "DEFLATE"
) -> dict[str, Any]:
    """GDAL COG driver options of the store's COG profile (for writers that stream from a VRT)."""
    is_float = np.dtype(dtype).kind == "f"
    options: dict[str, Any] = {
        "BLOCKSIZE": BLOCK_SIZE,
        "COMPRESS": compress,
        # Floating-point predictor (3) for floats, horizontal differencing (2) for integers.
        "PREDICTOR": "FLOATING_POINT" if is_float else "YES",
        "OVERVIEW_RESAMPLING": "AVERAGE" if kind == "continuous" else "NEAREST",
        "RESAMPLING": "AVERAGE" if kind == "continuous" else "NEAREST",
        "BIGTIFF": "IF_SAFER",
    }
    if compress == "DEFLATE":
        # Level 1: on float rasters behind the floating-point predictor, level 6 (GDAL's
        # default) made a 4440 x 3700 factor COG 1.2 % smaller and took 45 % longer to write
        # (3.82 vs 2.63 s; benchmarks/README.md).
        options["LEVEL"] = 1
    return options
