"""The real SeaweedFS S3 server: auth is enforced, Store works on it, errors are clear."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest
from affine import Affine

from ftlcloud.errors import StoreError
from ftlcloud.io.cog import read_raster, write_cog
from ftlcloud.io.s3server import LocalS3Server
from ftlcloud.io.settings import StoreSettings
from ftlcloud.io.store import Store

pytestmark = pytest.mark.integration


def test_store_roundtrip_on_s3(s3_store: Store) -> None:
    s3_store.check()
    s3_store.write_text("a/b.json", "{}")
    s3_store.write_bytes("a/c.bin", b"123")
    assert s3_store.list() == ["a/b.json", "a/c.bin"]
    assert s3_store.list("a/") == ["a/b.json", "a/c.bin"]
    assert s3_store.exists("a/b.json") and not s3_store.exists("a/x.json")
    assert s3_store.read_bytes("a/c.bin") == b"123"
    assert s3_store.size("a/c.bin") == 3
    clone = pickle.loads(pickle.dumps(s3_store))  # as a Dask worker receives it
    assert clone.read_text("a/b.json") == "{}"
    s3_store.delete("a/c.bin")
    assert s3_store.list() == ["a/b.json"]
    with pytest.raises(StoreError, match="does not exist"):
        s3_store.read_bytes("a/c.bin")


def test_gdal_reads_vsis3(s3_store: Store) -> None:
    arr = np.arange(20 * 30, dtype="float32").reshape(20, 30)
    write_cog(s3_store, "r.tif", arr, transform=Affine(30, 0, 5e5, 0, -30, 4.2e6), crs=32647)
    back, transform, crs, _ = read_raster(s3_store, "r.tif")
    assert np.array_equal(back[0], arr)
    assert crs.to_epsg() == 32647 and transform.c == 5e5


def test_wrong_credentials_refused(
    s3_server: LocalS3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-right-secret-at-all")
    with pytest.raises(StoreError, match="refused the credentials") as info:
        Store(s3_server.store_url("x"), s3_server.settings()).check()
    assert "not-the-right-secret-at-all" not in str(info.value)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StoreError, match="refused the credentials"):
        Store(
            s3_server.store_url("x"),
            StoreSettings(**{**s3_server.settings().__dict__, "anon": True}),
        ).check()


def test_missing_bucket_and_dead_endpoint(
    s3_server: LocalS3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    with pytest.raises(StoreError, match="bucket 'no-such-bucket' does not exist"):
        Store("s3://no-such-bucket/x", s3_server.settings()).check()
    dead = StoreSettings("http://127.0.0.1:9", "us-east-1", True, False, None)
    start = time.monotonic()
    with pytest.raises(StoreError, match=r"cannot reach S3 endpoint http://127\.0\.0\.1:9"):
        Store("s3://b/x", dead).check()
    assert time.monotonic() - start < 60


def test_second_server_on_own_ports(tmp_path) -> None:
    with LocalS3Server(tmp_path / "d", bucket="other") as srv:
        assert srv.endpoint_url.startswith("http://127.0.0.1:")
        assert srv.env()["FTLCLOUD_S3_ENDPOINT_URL"] == srv.endpoint_url
        assert srv.secret_key not in repr(srv)
    assert srv._proc is None
