"""The factor stage's reader: stackstac's reader, with inputs opened once per worker process.

Truth is stackstac's own ``AutoParallelRioReader`` reading the same file through the same grid:
every case must give the same array, bit for bit, whichever read path the cached reader takes.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import stackstac
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window
from stackstac.raster_spec import RasterSpec
from stackstac.rio_reader import AutoParallelRioReader

from ftlcloud.pipeline import load
from ftlcloud.pipeline.load import CachedRioReader, close_cached_datasets

ORIGIN = (570000.0, 4270000.0)
RES = 30.0
SHAPE = (70, 90)


@pytest.fixture(autouse=True)
def _fresh_cache() -> Any:
    close_cached_datasets()
    yield
    close_cached_datasets()


def _write(path: Path, array: np.ndarray, **profile: Any) -> str:
    base = {
        "driver": "GTiff",
        "height": array.shape[0],
        "width": array.shape[1],
        "count": 1,
        "dtype": array.dtype.name,
        "crs": "EPSG:32647",
        "transform": Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1]),
        "tiled": True,
        "blockxsize": 32,
        "blockysize": 32,
    }
    base.update(profile)
    with rasterio.open(path, "w", **base) as dst:
        dst.write(array, 1)
    return str(path)


def _spec(res: float = RES) -> RasterSpec:
    x0, y1 = ORIGIN
    return RasterSpec(
        epsg=32647,
        bounds=(x0, y1 - SHAPE[0] * RES, x0 + SHAPE[1] * RES, y1),
        resolutions_xy=(res, res),
    )


def _readers(url: str, spec: RasterSpec, scale_offset: tuple[float, float] = (1, 0)) -> Any:
    kwargs: dict[str, Any] = {
        "url": url,
        "spec": spec,
        "resampling": Resampling.bilinear,
        "dtype": np.dtype("float32"),
        "fill_value": np.float32(np.nan),
        "scale_offset": scale_offset,
        "gdal_env": stackstac.DEFAULT_GDAL_ENV,
    }
    return AutoParallelRioReader(**kwargs), CachedRioReader(**kwargs)


def _values(rng: np.random.Generator, dtype: str) -> np.ndarray:
    if dtype == "int16":
        return rng.integers(-300, 300, SHAPE).astype("int16")
    return rng.normal(0, 50, SHAPE).astype(dtype)


# dtype, nodata, extras; those in PLAIN take the plain read, the others stackstac's masked one
# (float64: a value could round to the nodata value in float32).
CASES = {
    "float32, nodata NaN": ("float32", float("nan"), {}),
    "float32, nodata -9999": ("float32", -9999.0, {}),
    "float64, nodata -9999": ("float64", -9999.0, {}),
    "int16, nodata -32768": ("int16", -32768, {}),
    "float32, no nodata": ("float32", None, {}),
    "float32, internal mask band": ("float32", None, {"mask": True}),
    "float32 with a scale": ("float32", -9999.0, {"scale": 0.001}),
    "float32 with an offset": ("float32", -9999.0, {"offset": 100.0}),
    "float32 scaled by its item": ("float32", -9999.0, {"item_scale": 0.5}),
}
PLAIN = {
    "float32, nodata NaN",
    "float32, nodata -9999",
    "int16, nodata -32768",
    "float32, no nodata",
}


@pytest.mark.parametrize("case", CASES)
def test_cached_reader_reads_what_stackstac_reads(
    tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dtype, nodata, extra = CASES[case]
    rng = np.random.default_rng(11)
    arr = _values(rng, dtype)
    holes = rng.random(SHAPE) < 0.1
    if nodata is not None:
        arr[holes] = nodata
    profile = {} if nodata is None else {"nodata": nodata}
    url = _write(tmp_path / "a.tif", arr, **profile)
    if extra.get("mask"):
        with (
            rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True),
            rasterio.open(url, "r+") as dst,
        ):
            dst.write_mask(np.where(holes, 0, 255).astype("uint8"))
    if "scale" in extra or "offset" in extra:
        with rasterio.open(url, "r+") as dst:
            dst.scales = (extra.get("scale", 1.0),)
            dst.offsets = (extra.get("offset", 0.0),)
    ref, cached = _readers(url, _spec(), (extra.get("item_scale", 1), 0))
    masked_reads: list[Window] = []
    real_read = AutoParallelRioReader.read

    def counting_read(self: AutoParallelRioReader, window: Window, **kwargs: Any) -> np.ndarray:
        masked_reads.append(window)
        return real_read(self, window, **kwargs)

    monkeypatch.setattr(AutoParallelRioReader, "read", counting_read)
    windows = (Window(0, 0, 90, 70), Window(7, 13, 40, 33), Window(80, 60, 10, 10))
    for window in windows:
        want = ref.read(window)
        got = cached.read(window)
        assert got.dtype == want.dtype == np.float32
        np.testing.assert_array_equal(got, want)
    # The reference's reads are counted too: the cached reader added none on the plain path.
    assert len(masked_reads) == (len(windows) if case in PLAIN else 2 * len(windows))
    if nodata is not None or extra.get("mask"):
        assert np.isnan(cached.read(Window(0, 0, 90, 70))[holes]).all()


def test_cached_reader_warps_like_stackstac_off_grid(tmp_path: Path) -> None:
    # A 25 m raster (as NDVI) read on the 30 m target grid goes through stackstac's WarpedVRT.
    rng = np.random.default_rng(5)
    arr = rng.random((90, 110)).astype("float32")
    arr[3:9, 40:60] = np.nan
    url = _write(
        tmp_path / "ndvi.tif",
        arr,
        nodata=float("nan"),
        transform=Affine(25.0, 0, ORIGIN[0], 0, -25.0, ORIGIN[1]),
    )
    ref, cached = _readers(url, _spec())
    window = Window(5, 2, 60, 50)
    np.testing.assert_array_equal(cached.read(window), ref.read(window))


def test_each_input_is_opened_once_per_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = [
        _write(tmp_path / f"d{i}.tif", np.full(SHAPE, i, "float32"), nodata=float("nan"))
        for i in range(3)
    ]
    opened: list[str] = []
    real_open = AutoParallelRioReader._open

    def counting_open(self: AutoParallelRioReader) -> Any:
        opened.append(self.url)
        return real_open(self)

    monkeypatch.setattr(AutoParallelRioReader, "_open", counting_open)
    # stackstac ships fresh (unpickled) readers with every chunk task: 4 tiles x 3 dates.
    prototypes = [_readers(u, _spec())[1] for u in urls]
    for tile in range(4):
        for i, proto in enumerate(prototypes):
            reader = pickle.loads(pickle.dumps(proto))
            window = Window(tile * 20, 0, 20, 20)
            assert (reader.read(window) == i).all()
            reader.close()  # what stackstac does when the chunk's reader is dropped
    assert sorted(opened) == sorted(urls)
    # Another target grid is another dataset (its own WarpedVRT).
    _readers(urls[0], _spec(res=60.0))[1].read(Window(0, 0, 10, 10))
    assert len(opened) == 4


def test_close_cached_datasets_sees_a_replaced_input(tmp_path: Path) -> None:
    path = tmp_path / "d.tif"
    _write(path, np.full(SHAPE, 1, "float32"), nodata=float("nan"))
    reader = _readers(str(path), _spec())[1]
    assert (reader.read(Window(0, 0, 8, 8)) == 1).all()
    replacement = tmp_path / "new.tif"
    _write(replacement, np.full(SHAPE, 2, "float32"), nodata=float("nan"))
    replacement.replace(path)  # as a re-ingest does
    close_cached_datasets()
    assert not load._open
    assert (reader.read(Window(0, 0, 8, 8)) == 2).all()
