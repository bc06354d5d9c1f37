"""GeoParquet 1.1 writer and reader (WKB geometry, PROJJSON CRS, bbox covering column, zstd)."""

from __future__ import annotations

import io
import logging
from typing import Any

import geopandas as gpd

from ftlcloud.errors import InputError, StoreError
from ftlcloud.io.cog import (
    PARQUET_MEDIA_TYPE,
    AssetInfo,
    bbox_to_wgs84,
    multihash_sha256,
    proj_code,
)
from ftlcloud.io.store import Store

log = logging.getLogger(__name__)


def _column_type(dtype: Any, name: str, geometry_name: str) -> str:
    if name == geometry_name:
        return "geometry"
    kind = getattr(dtype, "kind", "O")
    return {
        "b": "boolean",
        "i": "int64",
        "u": "uint64",
        "f": "float64",
        "M": "datetime",
        "O": "string",
    }.get(kind, str(dtype))


def write_geoparquet(store: Store, key: str, gdf: gpd.GeoDataFrame) -> AssetInfo:
    """Write a GeoDataFrame as GeoParquet 1.1 at ``key`` and describe it for STAC.

    The index is not written (use a column for identifiers). Requires a CRS.
    """
    if not isinstance(gdf, gpd.GeoDataFrame):
        raise InputError(
            f"write_geoparquet {key!r}: expected a GeoDataFrame, got {type(gdf).__name__}"
        )
    if gdf.crs is None:
        raise InputError(
            f"write_geoparquet {key!r}: the GeoDataFrame has no CRS; set one with "
            "gdf.set_crs('EPSG:xxxx') before writing"
        )
    buf = io.BytesIO()
    gdf.to_parquet(
        buf,
        index=False,
        compression="zstd",
        schema_version="1.1.0",
        write_covering_bbox=True,
    )
    data = buf.getvalue()
    store.write_bytes(key, data)

    geometry_name = gdf.geometry.name
    code = proj_code(gdf.crs)
    info = AssetInfo(
        href=store.href(key),
        key=key,
        media_type=PARQUET_MEDIA_TYPE,
        checksum=multihash_sha256(data),
        size=len(data),
        proj={"proj:code": code} if code else {"proj:wkt2": gdf.crs.to_wkt()},
        table={
            "table:primary_geometry": geometry_name,
            "table:row_count": len(gdf),
            "table:columns": [
                {"name": str(name), "type": _column_type(dtype, str(name), geometry_name)}
                for name, dtype in gdf.dtypes.items()
            ]
            + [{"name": "bbox", "type": "struct<xmin,ymin,xmax,ymax>"}],
        },
    )
    if len(gdf) and not gdf.geometry.is_empty.all():
        bounds = [float(v) for v in gdf.total_bounds]
        info.proj["proj:bbox"] = bounds
        info.bbox_wgs84 = bbox_to_wgs84(gdf.crs, bounds)
    log.info("wrote GeoParquet %s (%d rows, %d bytes)", info.href, len(gdf), info.size)
    return info


def read_geoparquet(store: Store, key: str) -> gpd.GeoDataFrame:
    """Read a GeoParquet object of the store (the bbox covering column is dropped)."""
    data = store.read_bytes(key)
    try:
        gdf = gpd.read_parquet(io.BytesIO(data))
    except Exception as err:
        raise StoreError(f"{store.href(key)!r} is not a readable GeoParquet file: {err}") from err
    if "bbox" in gdf.columns and gdf["bbox"].dtype == object:
        gdf = gdf.drop(columns="bbox")
    return gdf
