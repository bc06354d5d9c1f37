"""Lazy input layers on one grid, from the STAC catalog, with stackstac.

stackstac builds the dask graph (one chunk = one spatial tile with its whole time axis) and reads
through GDAL with the store's environment on the workers. stackstac 0.5.1 reads the projection
extension's v1 ``proj:epsg`` only; ftlcloud publishes v2 ``proj:code``, so the in-memory item dicts
handed to stackstac get ``proj:epsg`` added (nothing written changes).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import pystac
import stackstac
from affine import Affine
from pyproj import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from stackstac.rio_reader import AutoParallelRioReader, ThreadLocalRioDataset

from ftlcloud.errors import CatalogError, InputError
from ftlcloud.io.catalog import Catalog
from ftlcloud.pipeline.grid import GridSpec

log = logging.getLogger(__name__)

DEFORMATION = ("deformation", "displacement")
DEM = ("dem", "elevation")
NDVI = ("ndvi", "ndvi")


@dataclass(frozen=True)
class Inputs:
    """The catalog items a run reads, as absolute-href dicts ready for stackstac."""

    deformation: tuple[dict[str, Any], ...]
    dem: tuple[dict[str, Any], ...]
    ndvi_early: dict[str, Any]
    ndvi_late: dict[str, Any]
    dates: tuple[dt.date, ...]
    grid: GridSpec

    @property
    def item_refs(self) -> list[tuple[str, str]]:
        """(collection, item id) of every input, for ``derived_from`` links and the run manifest."""
        refs = [(DEFORMATION[0], d["id"]) for d in self.deformation]
        refs += [(DEM[0], d["id"]) for d in self.dem]
        refs += [(NDVI[0], self.ndvi_early["id"]), (NDVI[0], self.ndvi_late["id"])]
        return refs


def _as_stackstac_dict(item: pystac.Item) -> dict[str, Any]:
    item = item.clone()
    item.make_asset_hrefs_absolute()
    d = item.to_dict(include_self_link=False, transform_hrefs=False)
    for holder in [d["properties"], *d["assets"].values()]:
        code = holder.get("proj:code")
        if code and "proj:epsg" not in holder:
            epsg = CRS.from_user_input(code).to_epsg()
            if epsg is not None:
                holder["proj:epsg"] = epsg
    return d


def _grid_of(item: dict[str, Any], asset: str) -> GridSpec:
    a = item["assets"][asset]
    props = item["properties"]
    code = a.get("proj:code", props.get("proj:code"))
    transform = a.get("proj:transform", props.get("proj:transform"))
    shape = a.get("proj:shape", props.get("proj:shape"))
    if not (code and transform and shape):
        raise CatalogError(
            f"item {item['id']!r} asset {asset!r} lacks proj:code / proj:transform / proj:shape; "
            "re-ingest it with `ftlcloud ingest`"
        )
    return GridSpec(str(code), Affine(*transform[:6]), (int(shape[0]), int(shape[1])))


def discover_inputs(
    catalog: Catalog,
    *,
    ndvi_years: tuple[int, int] | None = None,
    grid: GridSpec | None = None,
    min_dates: int = 0,
) -> Inputs:
    """Find the deformation, DEM and NDVI items; the grid defaults to the deformation grid.

    Checks before any pixel is read: at least ``min_dates`` acquisitions, no date twice, one
    deformation grid, and every input asset present with its recorded size (a truncated or
    missing COG is named here rather than failing on a worker).
    """
    deformation = [_as_stackstac_dict(i) for i in catalog.items(DEFORMATION[0])]
    if len(deformation) == 0:
        raise CatalogError(
            f"no items in collection {DEFORMATION[0]!r} of the store {catalog.store.url}; "
            "ingest a deformation time series first (`ftlcloud ingest deformation|mintpy`)"
        )
    deformation.sort(key=lambda d: d["properties"]["datetime"])
    dem = [_as_stackstac_dict(i) for i in catalog.items(DEM[0])]
    if not dem:
        raise CatalogError(
            f"no items in collection {DEM[0]!r}; ingest a DEM first (`ftlcloud ingest dem`)"
        )
    ndvi = {
        int(i.properties.get("ftl:year", i.datetime.year if i.datetime else 0)): i
        for i in catalog.items(NDVI[0])
    }
    if len(ndvi) < 2:
        raise CatalogError(
            f"collection {NDVI[0]!r} holds {len(ndvi)} year(s); ΔNDVI needs two "
            "(ingest annual NDVI rasters with `ftlcloud ingest ndvi`)"
        )
    early, late = ndvi_years or (min(ndvi), max(ndvi))
    for year in (early, late):
        if year not in ndvi:
            raise InputError(f"no NDVI item for year {year}; the catalog has years {sorted(ndvi)}")
    dates = tuple(
        dt.datetime.fromisoformat(d["properties"]["datetime"].replace("Z", "+00:00")).date()
        for d in deformation
    )
    for d in [*deformation, *dem, _as_stackstac_dict(ndvi[early]), _as_stackstac_dict(ndvi[late])]:
        _check_assets(catalog, d)
    _check_one_grid(deformation)
    _check_dates(deformation, dates, min_dates)
    return Inputs(
        deformation=tuple(deformation),
        dem=tuple(dem),
        ndvi_early=_as_stackstac_dict(ndvi[early]),
        ndvi_late=_as_stackstac_dict(ndvi[late]),
        dates=dates,
        grid=grid or _grid_of(deformation[0], DEFORMATION[1]),
    )


def _check_dates(
    deformation: Sequence[dict[str, Any]], dates: Sequence[dt.date], min_dates: int
) -> None:
    seen: dict[dt.date, str] = {}
    for d, day in zip(deformation, dates, strict=True):
        if day in seen:
            raise CatalogError(
                f"deformation items {seen[day]!r} and {d['id']!r} have the same date {day}; "
                "delete one of them from the catalog (or re-ingest into a fresh store)"
            )
        seen[day] = d["id"]
    if len(dates) < min_dates:
        raise InputError(
            f"the {DEFORMATION[0]!r} collection has {len(dates)} acquisition date(s) but the seasonal "
            f"fit needs at least min_valid_dates={min_dates} per pixel; ingest more dates "
            "(`ftlcloud ingest deformation|mintpy`) or lower --min-valid-dates (5 at least: Eq. 1 "
            "has 4 unknowns)"
        )


def _check_one_grid(deformation: Sequence[dict[str, Any]]) -> None:
    first = _grid_of(deformation[0], DEFORMATION[1])
    for d in deformation[1:]:
        other = _grid_of(d, DEFORMATION[1])
        if other.to_dict() != first.to_dict():
            raise CatalogError(
                f"deformation items {deformation[0]['id']!r} and {d['id']!r} are on different grids "
                f"({first.to_dict()} vs {other.to_dict()}); every date must share one grid: "
                "re-ingest them resampled to one grid"
            )


def _check_assets(catalog: Catalog, item: dict[str, Any]) -> None:
    store = catalog.store
    for name, asset in item["assets"].items():
        key = store.key_of(asset["href"])
        where = f"asset {name!r} of input item {item['id']!r} ({asset['href']})"
        if key is None:
            raise CatalogError(f"{where} is outside the store {store.url}; re-ingest it")
        if not store.exists(key):
            raise CatalogError(f"{where} is missing from the store; re-ingest that input")
        size = asset.get("file:size")
        if size is not None and store.size(key) != size:
            raise CatalogError(
                f"{where} has {store.size(key)} bytes but its item records {size}: it is truncated "
                "or was overwritten; re-ingest that input"
            )


#: GDAL options for the workers' reads. GDAL's block cache (default 5 % of RAM per process)
#: otherwise fills with the blocks of every input as tile after tile is read; a tile's blocks
#: are read once, so a small cache costs no speed (32 MiB vs 256 MiB: same factor-stage time,
#: peak RSS per worker 0.82 -> 0.60 GB at 2048 x 2048 x 82). rasterio hands GDAL_CACHEMAX to
#: GDALSetCacheMax64: bytes.
READ_ENV: dict[str, Any] = {"GDAL_CACHEMAX": 32 * 2**20}


#: Open datasets kept per worker process: every input of a run (82 dates, DEM, 2 NDVI years)
#: and the factor COGs an iteration reads fit.
_OPEN_LIMIT = 256
_open: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_open_lock = threading.Lock()


#: Source types whose every value, nodata included, is exact in float32: comparing the read
#: float32 pixels with the nodata value is then GDAL's own nodata test.
_EXACT_IN_FLOAT32 = frozenset({"float32", "int16", "uint16", "int8", "uint8"})


class CachedRioReader(AutoParallelRioReader):
    """stackstac's reader, with each input opened once per worker process, not once per chunk.

    stackstac hands every chunk task fresh readers (they are pickled with the graph), so each
    tile re-opened each of the 85 inputs: header requests, IFD parsing and a WarpedVRT per
    asset per tile (5904 opens at paper size). Here the opened dataset (and its WarpedVRT, when
    the asset's grid is not the target grid) lives in a process-wide LRU keyed by URL, target
    grid, resampling and GDAL options; stackstac's thread-local wrapper still gives each thread
    its own GDAL handle. Masking, scaling and errors are stackstac's (see :meth:`read` for the
    plain read where it gives the same array).

    A stage calls :func:`close_cached_datasets` on every worker first (with the GDAL HTTP
    cache), so a dataset replaced in the store between runs is opened afresh.
    """

    def _key(self) -> tuple[Any, ...]:
        env = self.gdal_env
        layers = (env._always, env._open, env._open_vrt, env._read)
        return (
            self.url,
            repr(self.spec.vrt_params),
            self.resampling,
            repr([sorted(d.items()) for d in layers]),
        )

    @property
    def dataset(self) -> Any:
        key = self._key()
        with _open_lock:
            ds = _open.get(key)
            if ds is not None:
                _open.move_to_end(key)
                return ds
        ds = self._open()
        with _open_lock:
            _open[key] = ds
            while len(_open) > _OPEN_LIMIT:
                _open.popitem(last=False)[1].close()
        return ds

    def read(self, window: Window, **kwargs: Any) -> np.ndarray:
        """stackstac's masked read, or a plain one where it gives the same pixels for less.

        A masked read has GDAL build a validity mask and numpy fill it (~7 % of reading a
        tile's 82 dates). Where the asset is on the target grid (no warp), has one band of a
        type exact in float32, no scale/offset and a plain nodata value (or none) as its only
        mask, the plain read with nodata pixels set to the fill value is the same array.
        """
        shared = self.dataset
        ds = getattr(shared, "dataset", None) if isinstance(shared, ThreadLocalRioDataset) else None
        if (
            kwargs
            or ds is None
            or isinstance(ds, WarpedVRT)
            or self.scale_offset != (1, 0)
            or tuple(ds.scales) != (1.0,)
            or tuple(ds.offsets) != (0.0,)
            or ds.dtypes[0] not in _EXACT_IN_FLOAT32
            or ds.mask_flag_enums[0] not in ([MaskFlags.nodata], [MaskFlags.all_valid])
        ):
            return super().read(window, **kwargs)
        try:
            with self.gdal_env.read:
                out = ds.read(1, window=window, out_dtype=self.dtype)
        except Exception as err:
            raise RuntimeError(f"Error reading {window} from {self.url!r}: {err!r}") from err
        nodata = ds.nodata
        if nodata is not None:
            missing = np.isnan(out) if np.isnan(nodata) else out == np.asarray(nodata, out.dtype)
            out[missing] = self.fill_value
        return out

    def close(self) -> None:
        """The dataset is shared with later chunks: only :func:`close_cached_datasets` closes."""


def close_cached_datasets() -> None:
    """Close every dataset :class:`CachedRioReader` holds open in this process."""
    with _open_lock:
        while _open:
            _open.popitem()[1].close()


def _stack(
    items: Sequence[dict[str, Any]],
    asset: str,
    grid: GridSpec,
    tile_size: int,
    gdal_env: dict[str, Any],
    *,
    time_chunk: int,
) -> da.Array:
    epsg = grid.epsg
    if epsg is None:
        raise InputError(
            f"the grid CRS {grid.crs!r} has no EPSG code; give the target grid as EPSG"
        )
    env = stackstac.DEFAULT_GDAL_ENV.updated(always={**READ_ENV, **gdal_env})
    arr = stackstac.stack(
        list(items),
        assets=[asset],
        epsg=epsg,
        resolution=grid.resolution_xy,
        bounds=grid.bounds,
        snap_bounds=False,
        chunksize=(time_chunk, 1, tile_size, tile_size),
        resampling=Resampling.bilinear,
        dtype=np.dtype("float32"),
        fill_value=np.float32(np.nan),
        rescale=False,
        properties=False,
        band_coords=False,
        gdal_env=env,
        reader=CachedRioReader,
    )
    if arr.shape[-2:] != grid.shape_yx:
        raise InputError(
            f"stacked {asset!r} has shape {arr.shape[-2:]} but the grid is {grid.shape_yx}; "
            "the grid bounds are not a whole number of pixels"
        )
    return arr.data[:, 0]


def lazy_layers(inputs: Inputs, tile_size: int, gdal_env: dict[str, Any]) -> dict[str, da.Array]:
    """Dask arrays on the run grid: ``displacement_mm`` (time, y, x) and 2-D ``dem_m``,
    ``ndvi_early``, ``ndvi_late``, each chunked as one spatial tile (whole time axis)."""
    grid = inputs.grid
    cube = _stack(inputs.deformation, DEFORMATION[1], grid, tile_size, gdal_env, time_chunk=-1)
    dem_stack = _stack(inputs.dem, DEM[1], grid, tile_size, gdal_env, time_chunk=-1)
    # Several DEM tiles: the first valid value wins (they do not overlap, or agree where they do).
    dem = _first_valid(dem_stack)
    ndvi_early = _stack([inputs.ndvi_early], NDVI[1], grid, tile_size, gdal_env, time_chunk=1)[0]
    ndvi_late = _stack([inputs.ndvi_late], NDVI[1], grid, tile_size, gdal_env, time_chunk=1)[0]
    return {"displacement_mm": cube, "dem_m": dem, "ndvi_early": ndvi_early, "ndvi_late": ndvi_late}


def _first_valid(stack: da.Array) -> da.Array:
    if stack.shape[0] == 1:
        return stack[0]

    def reduce(block: np.ndarray) -> np.ndarray:
        out = np.full(block.shape[1:], np.nan, dtype=block.dtype)
        for layer in block:
            fill = np.isnan(out)
            out[fill] = layer[fill]
        return out

    return da.map_blocks(reduce, stack, drop_axis=0, dtype=stack.dtype)
