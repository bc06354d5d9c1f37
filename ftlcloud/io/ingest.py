"""Ingest the inputs users have into the store: COGs / GeoParquet plus STAC items.

Every input is checked before anything is written (readable, CRS, dates, one grid per
collection, inventory non-empty and inside the deformation extent). Then all data objects are
written, and the STAC items last, so an interrupted ingest never leaves an item pointing at
missing data.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import h5py
import numpy as np
import pystac
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import RasterioIOError

from ftlcloud.errors import FtlError, InputError
from ftlcloud.io.catalog import Catalog, build_item
from ftlcloud.io.cog import AssetInfo, write_cog
from ftlcloud.io.geoparquet import write_geoparquet
from ftlcloud.io.store import Store

log = logging.getLogger(__name__)

UTC = dt.UTC
RASTER_SUFFIXES = (".tif", ".tiff", ".TIF", ".TIFF")
_UNIT_TO_MM = {"m": 1000.0, "cm": 10.0, "mm": 1.0}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DATE_TAGS = ("ACQUISITION_DATE", "DATE_ACQUIRED", "DATE", "date", "TIFFTAG_DATETIME")


@dataclass(frozen=True)
class RasterMeta:
    """What a raster's header says (read before any pixel)."""

    path: Path
    crs: CRS
    transform: Affine
    shape: tuple[int, int]
    """(rows, cols)"""
    count: int
    nodata: float | None
    tags: Mapping[str, str]

    def describe(self) -> str:
        """Short grid description for error messages."""
        return (
            f"{self.crs.to_string()} pixel {abs(self.transform.a):g}×{abs(self.transform.e):g}, "
            f"{self.shape[0]}×{self.shape[1]} px, "
            f"origin ({self.transform.c:g}, {self.transform.f:g})"
        )


def _raster_meta(path: Path) -> RasterMeta:
    if not path.is_file():
        raise InputError(f"{path}: no such file; check the path")
    try:
        with rasterio.open(path) as src:
            crs, transform, shape = src.crs, src.transform, (src.height, src.width)
            count, nodata, tags = src.count, src.nodata, dict(src.tags())
    except RasterioIOError as err:
        raise InputError(
            f"{path}: not a readable raster ({err}); check it is a complete GeoTIFF"
        ) from err
    if crs is None:
        raise InputError(
            f"{path}: has no CRS; assign the right one, "
            f"e.g. `gdal_edit.py -a_srs EPSG:32647 {path}`"
        )
    return RasterMeta(path, crs, transform, shape, count, nodata, tags)


def _same_grid(a: RasterMeta, b: RasterMeta) -> bool:
    return (
        a.crs == b.crs
        and a.shape == b.shape
        and np.allclose(
            tuple(a.transform)[:6],
            tuple(b.transform)[:6],
            rtol=0,
            atol=1e-9 * max(1.0, abs(a.transform.c), abs(a.transform.f)),
        )
    )


def _check_one_grid(metas: Sequence[RasterMeta], collection: str) -> None:
    for other in metas[1:]:
        if not _same_grid(metas[0], other):
            raise InputError(
                f"rasters of the {collection!r} collection must share one grid: "
                f"{metas[0].path.name} is {metas[0].describe()} but {other.path.name} is "
                f"{other.describe()}; resample them to one grid first (gdalwarp -t_srs -tr -te)"
            )


def _check_against_collection(
    catalog: Catalog, collection: str, asset: str, meta: RasterMeta
) -> None:
    """The new rasters must match the grid of what the collection already holds."""
    existing = catalog.items(collection)
    if not existing:
        return
    fields = existing[0].assets[asset].extra_fields
    same = (
        fields.get("proj:shape") == list(meta.shape)
        and np.allclose(fields.get("proj:transform", [])[:6], tuple(meta.transform)[:6])
        and CRS.from_user_input(fields.get("proj:code") or fields.get("proj:wkt2")) == meta.crs
    )
    if not same:
        raise InputError(
            f"{meta.path.name} ({meta.describe()}) is not on the grid of the {collection!r} "
            f"collection already in the store (item {existing[0].id!r}: {fields.get('proj:code')}, "
            f"shape {fields.get('proj:shape')}, transform {fields.get('proj:transform')}); "
            "resample it to that grid or ingest into a fresh store"
        )


def _read_band_float(meta: RasterMeta) -> np.ndarray:
    try:
        with rasterio.open(meta.path) as src:
            arr = src.read(1, masked=True)
    except RasterioIOError as err:
        # A truncated file often opens (its header is intact) and fails only on its pixels.
        raise InputError(
            f"{meta.path}: cannot read its pixels ({err}); the file is truncated or corrupt: "
            "export or download it again"
        ) from err
    out = np.ma.filled(arr.astype("float32"), np.nan)
    return np.asarray(out, dtype="float32")


def _expand(paths: str | Path | Iterable[str | Path], what: str) -> list[Path]:
    if isinstance(paths, str | Path):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix in RASTER_SUFFIXES)
            if not found:
                raise InputError(f"{p}: folder holds no GeoTIFF (*.tif) for {what}")
            files += found
        else:
            files.append(p)
    if not files:
        raise InputError(f"no {what} files given")
    return files


def _check_name(name: str, source: str) -> str:
    if not _NAME_RE.match(name):
        raise InputError(
            f"{source}: name {name!r} is not usable as a store key; "
            "use letters, digits, '_', '-', '.'"
        )
    return name


def _parse_date(text: str, source: str) -> dt.date:
    value = text.strip()
    for fmt in ("%Y%m%d", "%Y:%m:%d %H:%M:%S"):  # file names; TIFFTAG_DATETIME
        try:
            return dt.datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    try:
        return dt.datetime.fromisoformat(value).date()
    except ValueError:
        pass
    raise InputError(f"{source}: cannot parse the date {text!r}; expected YYYYMMDD (e.g. 20200113)")


def _date_of(meta: RasterMeta, date_pattern: str) -> dt.date:
    match = re.search(date_pattern, meta.path.name)
    if match:
        return _parse_date(match.group(1) if match.groups() else match.group(0), str(meta.path))
    for tag in _DATE_TAGS:
        if tag in meta.tags:
            return _parse_date(meta.tags[tag], f"{meta.path} (tag {tag})")
    raise InputError(
        f"{meta.path}: no acquisition date: the name has no match for {date_pattern!r} and no "
        f"date tag ({', '.join(_DATE_TAGS)}); rename it to include YYYYMMDD or pass date_pattern"
    )


def _check_unique_dates(dated: Sequence[tuple[dt.date, str]]) -> None:
    seen: dict[dt.date, str] = {}
    for day, source in dated:
        if day in seen:
            raise InputError(
                f"duplicate acquisition date {day:%Y%m%d}: {seen[day]} and {source}; keep one"
            )
        seen[day] = source


@contextlib.contextmanager
def _all_or_nothing(store: Store) -> Iterator[list[str]]:
    """Collects keys a block creates; if the block fails they are deleted again, so a refused
    input (e.g. a file truncated half-way through a stack) leaves no orphan object behind."""
    created: list[str] = []
    try:
        yield created
    except BaseException:
        for key in created:
            with contextlib.suppress(FtlError):
                store.delete(key)
        raise


def _write_new(store: Store, created: list[str], key: str, write: Any) -> AssetInfo:
    if not store.exists(key):
        created.append(key)
    info: AssetInfo = write(key)
    return info


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=UTC)


def _publish(catalog: Catalog, collection: str, items: Sequence[pystac.Item]) -> list[pystac.Item]:
    for item in items:
        catalog.add_item(item, collection)
    return list(items)


def _deformation_items(
    store: Store,
    dated: Sequence[tuple[dt.date, str, Any]],
    *,
    transform: Affine,
    crs: CRS,
    unit: str,
    read: Any,
) -> list[pystac.Item]:
    """Write one mm COG per date (all first), then publish one item per date."""
    catalog = Catalog(store)
    factor = _UNIT_TO_MM[unit]
    written: list[tuple[dt.date, str, AssetInfo]] = []
    with _all_or_nothing(store) as created:
        for day, source, handle in dated:
            mm = (read(handle) * factor).astype("float32")
            info = _write_new(
                store,
                created,
                f"inputs/deformation/{day:%Y%m%d}.tif",
                lambda key, mm=mm, day=day: write_cog(
                    store,
                    key,
                    mm,
                    transform=transform,
                    crs=crs,
                    unit="mm",
                    description=f"LOS displacement {day:%Y-%m-%d} (mm)",
                ),
            )
            written.append((day, source, info))
    items = [
        build_item(
            f"deformation-{day:%Y%m%d}",
            {"displacement": info},
            datetime=_midnight(day),
            titles={"displacement": f"LOS displacement {day:%Y-%m-%d} (mm)"},
            properties={
                "ftlcloud:unit": "mm",
                "ftlcloud:source_unit": unit,
                "ftlcloud:source_file": source,
            },
        )
        for day, source, info in written
    ]
    return _publish(catalog, "deformation", items)


def ingest_deformation_geotiffs(
    store: Store,
    folder_or_files: str | Path | Iterable[str | Path],
    *,
    unit: Literal["m", "mm"],
    date_pattern: str = r"(\d{8})",
) -> list[pystac.Item]:
    """Ingest one GeoTIFF per acquisition (date from the name or a tag) as mm COGs + items."""
    if unit not in _UNIT_TO_MM:
        raise InputError(f"deformation unit {unit!r}: declare 'm' (as MintPy writes) or 'mm'")
    metas = [_raster_meta(p) for p in _expand(folder_or_files, "deformation")]
    _check_one_grid(metas, "deformation")
    dated = [(_date_of(m, date_pattern), m) for m in metas]
    _check_unique_dates([(d, m.path.name) for d, m in dated])
    _check_against_collection(Catalog(store), "deformation", "displacement", metas[0])
    dated.sort(key=lambda dm: dm[0])
    log.info("ingesting %d deformation GeoTIFFs (%s) into %s", len(dated), unit, store.url)
    return _deformation_items(
        store,
        [(d, m.path.name, m) for d, m in dated],
        transform=metas[0].transform,
        crs=metas[0].crs,
        unit=unit,
        read=_read_band_float,
    )


def _attr(attrs: Mapping[str, Any], name: str) -> str | None:
    value = attrs.get(name)
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else value
    return str(value.decode() if isinstance(value, bytes) else value)


def ingest_mintpy_h5(store: Store, path: str | Path) -> list[pystac.Item]:
    """Ingest MintPy's geocoded ``timeseries.h5`` / ``geo_timeseries*.h5`` (metres) as mm COGs."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; check the path")
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise InputError(f"{path}: not a readable HDF5 file ({err})") from err
    with h5:
        for name in ("timeseries", "date"):
            if name not in h5:
                raise InputError(
                    f"{path}: no {name!r} dataset; give MintPy's timeseries.h5 or "
                    "geo_timeseries*.h5 (datasets 'timeseries' and 'date')"
                )
        attrs = dict(h5.attrs)
        for name in ("X_FIRST", "Y_FIRST", "X_STEP", "Y_STEP"):
            if _attr(attrs, name) is None:
                raise InputError(
                    f"{path}: attribute {name} is missing, so the file is in radar coordinates; "
                    "geocode it first (MintPy geocode.py) and ingest geo_timeseries*.h5"
                )
        epsg = _attr(attrs, "EPSG")
        if not epsg:
            raise InputError(
                f"{path}: no EPSG attribute, so the CRS is unknown; add it (e.g. "
                "`info.py`/`add_attribute.py {path} EPSG=4326` in MintPy)"
            )
        try:
            crs = CRS.from_epsg(int(float(epsg)))
            x_first, y_first = (
                float(_attr(attrs, "X_FIRST") or ""),
                float(_attr(attrs, "Y_FIRST") or ""),
            )
            x_step, y_step = (
                float(_attr(attrs, "X_STEP") or ""),
                float(_attr(attrs, "Y_STEP") or ""),
            )
        except Exception as err:
            raise InputError(f"{path}: unusable georeferencing attributes ({err})") from err
        ts = h5["timeseries"]
        if ts.ndim != 3:
            raise InputError(
                f"{path}: 'timeseries' has shape {ts.shape}, expected (dates, rows, cols)"
            )
        length, width = _attr(attrs, "LENGTH"), _attr(attrs, "WIDTH")
        if (length and int(length) != ts.shape[1]) or (width and int(width) != ts.shape[2]):
            raise InputError(
                f"{path}: LENGTH×WIDTH {length}×{width} disagrees with 'timeseries' {ts.shape[1:]}"
            )
        raw_dates = [d.decode() if isinstance(d, bytes) else str(d) for d in h5["date"][()]]
        if len(raw_dates) != ts.shape[0]:
            raise InputError(
                f"{path}: {len(raw_dates)} dates for {ts.shape[0]} 'timeseries' layers"
            )
        days = [_parse_date(d, f"{path} (dataset 'date')") for d in raw_dates]
        _check_unique_dates([(d, f"{path.name}[{i}]") for i, d in enumerate(days)])
        unit = (_attr(attrs, "UNIT") or "m").strip()
        if unit not in _UNIT_TO_MM:
            raise InputError(f"{path}: UNIT attribute {unit!r} is not m, cm or mm")
        # MintPy's X_FIRST/Y_FIRST are the outer corner of the upper-left pixel.
        transform = Affine(x_step, 0.0, x_first, 0.0, y_step, y_first)
        meta = RasterMeta(path, crs, transform, (ts.shape[1], ts.shape[2]), 1, None, {})
        _check_against_collection(Catalog(store), "deformation", "displacement", meta)
        order = sorted(range(len(days)), key=lambda i: days[i])
        log.info("ingesting %d dates from MintPy %s into %s", len(days), path.name, store.url)
        return _deformation_items(
            store,
            [(days[i], path.name, i) for i in order],
            transform=transform,
            crs=crs,
            unit=unit,
            read=lambda i: np.asarray(ts[i], dtype="float32"),
        )


def ingest_dem(store: Store, paths: str | Path | Iterable[str | Path]) -> list[pystac.Item]:
    """Ingest one or several DEM GeoTIFF tiles (metres) as COGs, one item per tile."""
    metas = [_raster_meta(p) for p in _expand(paths, "DEM")]
    names = [_check_name(m.path.stem, str(m.path)) for m in metas]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise InputError(f"DEM tiles with the same file name {sorted(dupes)}: rename them")
    ref = metas[0]
    for m in metas[1:]:
        if m.crs != ref.crs or not np.allclose(
            (m.transform.a, m.transform.e), (ref.transform.a, ref.transform.e)
        ):
            raise InputError(
                f"DEM tiles must share CRS and pixel size: {ref.path.name} is {ref.describe()} "
                f"but {m.path.name} is {m.describe()}; resample them to one grid (gdalwarp)"
            )
        # Tiles must be aligned so a mosaic needs no resampling.
        off_x = (m.transform.c - ref.transform.c) / ref.transform.a
        off_y = (m.transform.f - ref.transform.f) / ref.transform.e
        if abs(off_x - round(off_x)) > 1e-3 or abs(off_y - round(off_y)) > 1e-3:
            raise InputError(
                f"DEM tile {m.path.name} is not aligned to the pixel grid of {ref.path.name} "
                f"(offset {off_x:.3f}, {off_y:.3f} px); resample with gdalwarp -tap"
            )
    written = []
    with _all_or_nothing(store) as created:
        for name, meta in zip(names, metas, strict=True):
            info = _write_new(
                store,
                created,
                f"inputs/dem/{name}.tif",
                lambda key, meta=meta, name=name: write_cog(
                    store,
                    key,
                    _read_band_float(meta),
                    transform=meta.transform,
                    crs=meta.crs,
                    unit="m",
                    description=f"elevation {name} (m)",
                ),
            )
            written.append((name, meta, info))
    now = dt.datetime.now(UTC).replace(microsecond=0)
    items = [
        build_item(
            f"dem-{name}",
            {"elevation": info},
            datetime=now,
            properties={"ftlcloud:source_file": meta.path.name, "ftlcloud:unit": "m"},
        )
        for name, meta, info in written
    ]
    return _publish(Catalog(store), "dem", items)


_YEAR_RE = re.compile(r"(?<!\d)((?:19|20)\d{2})(?!\d)")


def ingest_ndvi(
    store: Store, paths_by_year: Mapping[int, str | Path] | Iterable[str | Path]
) -> list[pystac.Item]:
    """Ingest annual (maximum) NDVI rasters, one per year; the year from the mapping or the name."""
    pairs: list[tuple[int, Path]] = []
    if isinstance(paths_by_year, Mapping):
        pairs = [(int(y), Path(p)) for y, p in paths_by_year.items()]
    else:
        for p in _expand(paths_by_year, "NDVI"):
            years = _YEAR_RE.findall(p.name)
            if len(years) != 1:
                raise InputError(
                    f"{p}: cannot tell the NDVI year from the name (found {years or 'none'}); "
                    "name it like ndvi_2019.tif or pass a {year: path} mapping"
                )
            pairs.append((int(years[0]), p))
    years_seen: dict[int, Path] = {}
    for year, p in pairs:
        if year in years_seen:
            raise InputError(f"two NDVI rasters for {year}: {years_seen[year]} and {p}; keep one")
        years_seen[year] = p
    metas = {year: _raster_meta(p) for year, p in sorted(pairs)}
    _check_one_grid(list(metas.values()), "ndvi")
    arrays = {}
    for year, meta in metas.items():
        arr = _read_band_float(meta)
        if np.isfinite(arr).any():
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            if lo < -1.0001 or hi > 1.0001:
                raise InputError(
                    f"{meta.path}: NDVI values span {lo:g}..{hi:g}, outside [-1, 1]; scaled "
                    "integers? divide by the scale factor (often 10000) first"
                )
        arrays[year] = arr
    written = []
    for year, meta in metas.items():
        info = write_cog(
            store,
            f"inputs/ndvi/{year}.tif",
            arrays[year],
            transform=meta.transform,
            crs=meta.crs,
            description=f"annual maximum NDVI {year}",
        )
        written.append((year, meta, info))
    items = [
        build_item(
            f"ndvi-{year}",
            {"ndvi": info},
            datetime=dt.datetime(year, 7, 2, tzinfo=UTC),
            start_datetime=dt.datetime(year, 1, 1, tzinfo=UTC),
            end_datetime=dt.datetime(year, 12, 31, 23, 59, 59, tzinfo=UTC),
            properties={"ftlcloud:source_file": meta.path.name, "ftlcloud:year": year},
        )
        for year, meta, info in written
    ]
    return _publish(Catalog(store), "ndvi", items)


def _read_vector(path: Path) -> gpd.GeoDataFrame:
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    try:
        if path.suffix.lower() in (".parquet", ".geoparquet"):
            return gpd.read_parquet(path)
        return gpd.read_file(path)
    except Exception as err:
        raise InputError(
            f"{path}: cannot read it as GeoPackage, GeoJSON, Shapefile or GeoParquet ({err})"
        ) from err


def ingest_inventory(store: Store, path: str | Path, *, name: str = "initial") -> pystac.Item:
    """Ingest a landslide inventory (points or polygons) as GeoParquet, with a ``kind`` column."""
    path = Path(path)
    _check_name(name, str(path))
    gdf = _read_vector(path)
    if gdf.crs is None:
        raise InputError(
            f"{path}: has no CRS; set it (e.g. `ogr2ogr -a_srs EPSG:4326 out.gpkg {path.name}`)"
        )
    if len(gdf) == 0:
        raise InputError(f"{path}: the inventory is empty; it needs at least one known landslide")
    missing = gdf.geometry.isna() | gdf.geometry.is_empty
    if missing.any():
        raise InputError(
            f"{path}: {int(missing.sum())} feature(s) have no geometry (rows "
            f"{[int(i) for i in np.flatnonzero(missing.to_numpy())[:5]]}); remove or fix them"
        )
    invalid = ~gdf.geometry.is_valid
    if invalid.any():
        rows = [int(i) for i in np.flatnonzero(invalid.to_numpy())[:5]]
        reason = shapely.is_valid_reason(gdf.geometry.iloc[rows[0]])
        raise InputError(
            f"{path}: {int(invalid.sum())} feature(s) have invalid geometries (rows {rows}; first: "
            f"{reason}); repair them, e.g. `ogr2ogr -makevalid fixed.gpkg {path.name}` or "
            "shapely.make_valid"
        )
    types = gdf.geom_type
    kind = types.map(
        {"Point": "point", "MultiPoint": "point", "Polygon": "polygon", "MultiPolygon": "polygon"}
    )
    if kind.isna().any():
        bad = sorted(set(types[kind.isna()]))
        raise InputError(
            f"{path}: geometry types {bad} are not points or polygons; convert them first"
        )
    gdf = gdf.copy()
    gdf["kind"] = kind.astype(str)
    catalog = Catalog(store)
    deformation = catalog.collection("deformation")
    if deformation is not None and catalog.items("deformation"):
        w, s, e, n = deformation.extent.spatial.bboxes[0]
        footprint = shapely.box(w, s, e, n)
        if not gdf.to_crs("EPSG:4326").intersects(footprint).any():
            lon0, lat0, lon1, lat1 = gdf.to_crs("EPSG:4326").total_bounds
            raise InputError(
                f"{path}: no landslide of the inventory lies inside the deformation extent "
                f"(lon {w:.4f}..{e:.4f}, lat {s:.4f}..{n:.4f}); the inventory spans lon "
                f"{lon0:.4f}..{lon1:.4f}, lat {lat0:.4f}..{lat1:.4f}: wrong file or wrong CRS?"
            )
    info = write_geoparquet(store, f"inputs/inventory/{name}.parquet", gdf)
    item = build_item(
        f"inventory-{name}",
        {"inventory": info},
        datetime=dt.datetime.now(UTC).replace(microsecond=0),
        properties={
            "ftlcloud:source_file": path.name,
            "ftlcloud:n_points": int((gdf["kind"] == "point").sum()),
            "ftlcloud:n_polygons": int((gdf["kind"] == "polygon").sum()),
        },
    )
    catalog.add_item(item, "inventory")
    return item
