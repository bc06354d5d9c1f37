"""write_cog: strict COG validity, layout, values, overviews, and the STAC metadata it returns."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rio_cogeo.cogeo import cog_validate

from ftlcloud.errors import InputError
from ftlcloud.io.cog import COG_MEDIA_TYPE, validate_cog, write_cog
from ftlcloud.io.store import Store

T = Affine(30, 0, 500_000, 0, -30, 4_200_000)


def test_continuous_cog_layout_values_and_metadata(tmp_path: Path) -> None:
    store = Store(tmp_path)
    rng = np.random.default_rng(1)
    arr = rng.normal(size=(1200, 1040)).astype("float32")
    arr[:3, :3] = np.nan
    info = write_cog(store, "f/v.tif", arr, transform=T, crs="EPSG:32647", unit="mm/a")
    path = store.href("f/v.tif")
    assert cog_validate(path, strict=True) == (True, [], [])
    assert validate_cog(store, "f/v.tif")[0]
    raw = Path(path).read_bytes()
    assert info.checksum == "1220" + hashlib.sha256(raw).hexdigest()
    assert info.size == len(raw) and info.media_type == COG_MEDIA_TYPE
    with rasterio.open(path) as src:
        assert src.block_shapes == [(512, 512)]
        assert src.compression.name == "deflate"
        assert src.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") == "3"
        assert np.isnan(src.nodata)
        assert src.overviews(1) == [2, 4]
        assert np.array_equal(src.read(1), arr, equal_nan=True)
        ov = src.read(1, out_shape=(600, 520))
    # The first overview is the 2×2 block mean (GDAL average resampling) — numpy as the truth.
    mean = arr[4:, 4:].reshape(598, 2, 518, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(ov[2:, 2:], mean, rtol=1e-5, atol=1e-6)
    assert info.proj == {
        "proj:code": "EPSG:32647",
        "proj:shape": [1200, 1040],
        "proj:transform": [30.0, 0.0, 500000.0, 0.0, -30.0, 4200000.0],
        "proj:bbox": [500000.0, 4200000.0 - 36000.0, 500000.0 + 31200.0, 4200000.0],
    }
    band = info.bands[0]
    assert band["nodata"] == "nan" and band["unit"] == "mm/a" and band["data_type"] == "float32"
    assert band["statistics"]["maximum"] == pytest.approx(float(np.nanmax(arr)))
    assert band["statistics"]["valid_percent"] == pytest.approx(100 * (1 - 9 / arr.size), abs=1e-4)
    w, s, e, n = info.bbox_wgs84 or []
    assert 98.9 < w < e < 99.5 and 37.5 < s < n < 38.0  # UTM 47N near 99° E, 38° N


def test_mask_uses_nearest_and_integer_predictor(tmp_path: Path) -> None:
    store = Store(tmp_path)
    mask = np.zeros((1100, 1100), dtype=bool)
    mask[::2, ::2] = True  # averaging would give 0.25 → 0; nearest keeps 1 on even pixels
    info = write_cog(store, "m.tif", mask, transform=T, crs=32647, kind="mask")
    assert validate_cog(store, "m.tif") == (True, [], [])
    with rasterio.open(store.href("m.tif")) as src:
        assert src.dtypes[0] == "uint8" and src.nodata == 0
        assert src.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") == "2"
        ov = src.read(1, out_shape=(550, 550))
    assert set(np.unique(ov)) == {1}
    assert info.bands[0]["nodata"] == 0


def test_small_and_multiband_zstd(tmp_path: Path) -> None:
    store = Store(tmp_path)
    arr = np.stack([np.full((7, 9), i, dtype="int16") for i in range(3)])
    info = write_cog(
        store,
        "c.tif",
        arr,
        transform=T,
        crs=4326,
        kind="categorical",
        band_names=["a", "b", "c"],
        compress="ZSTD",
    )
    assert validate_cog(store, "c.tif") == (True, [], [])
    with rasterio.open(store.href("c.tif")) as src:
        assert src.compression.name == "zstd" and src.descriptions == ("a", "b", "c")
        assert np.array_equal(src.read(), arr)
    assert [b["name"] for b in info.bands] == ["a", "b", "c"]


def test_bad_arrays(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with pytest.raises(InputError, match=r"'x\.tif'.*not 2-D"):
        write_cog(store, "x.tif", np.zeros(5), transform=T, crs=32647)
    with pytest.raises(InputError, match="unusable CRS"):
        write_cog(store, "x.tif", np.zeros((2, 2)), transform=T, crs="EPSG:nope")
    assert store.list() == []
