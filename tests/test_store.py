"""Store on a local directory (and key safety); the S3 side is in the integration tests."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from ftlcloud.errors import InputError, StoreError
from ftlcloud.io.s3server import LocalS3Server
from ftlcloud.io.store import Store, check_key
from tests.conftest import use_credentials


def test_local_roundtrip_list_delete(tmp_path: Path) -> None:
    store = Store(tmp_path / "st")
    assert not store.is_s3
    store.write_text("a/b/c.json", '{"x": 1}')
    store.write_bytes("a/d.bin", b"\x00\x01")
    assert store.read_text("a/b/c.json") == '{"x": 1}'
    assert store.exists("a/d.bin") and not store.exists("a/zz.bin")
    assert store.list() == ["a/b/c.json", "a/d.bin"]
    assert store.list("a/b") == ["a/b/c.json"]
    assert store.list("nothing/") == []
    assert store.size("a/d.bin") == 2
    assert store.href("a/d.bin") == str(tmp_path / "st" / "a" / "d.bin")
    assert store.gdal_path("a/d.bin") == store.href("a/d.bin")
    assert store.key_of(store.href("a/d.bin")) == "a/d.bin"
    assert store.key_of(str(tmp_path / "elsewhere.tif")) is None
    store.delete("a/d.bin")
    store.delete("a/d.bin")  # idempotent
    assert store.list() == ["a/b/c.json"]
    # atomic write leaves no temporary files behind
    assert [p.name for p in (tmp_path / "st" / "a").iterdir()] == ["b"]


def test_missing_key_is_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"missing\.json' does not exist"):
        Store(tmp_path).read_bytes("missing.json")


@pytest.mark.parametrize(
    "key", ["", "../x", "a/../../x", "/etc/passwd", "a\\b", "a//b", "./a", "s3://b/k"]
)
def test_keys_cannot_escape(tmp_path: Path, key: str) -> None:
    store = Store(tmp_path)
    with pytest.raises(InputError, match="store key"):
        store.write_bytes(key, b"x")
    with pytest.raises(InputError):
        check_key(key)


def test_s3_urls_parse_and_pickle() -> None:
    store = Store("s3://bucket/some/prefix/")
    assert store.is_s3
    assert store.url == "s3://bucket/some/prefix"
    assert store.href("k/a.tif") == "s3://bucket/some/prefix/k/a.tif"
    assert store.gdal_path("k/a.tif") == "/vsis3/bucket/some/prefix/k/a.tif"
    assert store.key_of("s3://bucket/some/prefix/k/a.tif") == "k/a.tif"
    assert store.key_of("s3://other/k/a.tif") is None
    clone = pickle.loads(pickle.dumps(store))
    assert clone == store and clone._fs is None
    with pytest.raises(InputError, match="no bucket"):
        Store("s3://")
    with pytest.raises(InputError, match="only local directories"):
        Store("gs://bucket/x")


def test_local_check(tmp_path: Path) -> None:
    Store(tmp_path / "new").check()
    assert (tmp_path / "new").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create store directory"):
        Store(blocker / "sub").check()


def test_write_file_streams_a_local_file_into_the_store(tmp_path: Path, s3_store: Store) -> None:
    from ftlcloud.io.cog import multihash_sha256

    source = tmp_path / "big.bin"
    payload = np.random.default_rng(3).bytes(9 * 2**20)  # > s3fs's 5 MiB multipart block
    source.write_bytes(payload)
    assert multihash_sha256(source) == multihash_sha256(payload)
    for store in (Store(str(tmp_path / "local")), s3_store):
        store.write_file("runs/r/x.bin", source)
        assert store.read_bytes("runs/r/x.bin") == payload
        assert store.size("runs/r/x.bin") == len(payload)
    assert not [p for p in (tmp_path / "local" / "runs" / "r").iterdir() if p.name != "x.bin"]


def test_s3_stores_share_one_client_per_process_settings_and_credentials(
    tmp_path: Path, s3_server: LocalS3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Store arrives unpickled in every Dask task: each copy must reuse the process's client
    # (one per task grew a worker by ~12 MB per tile), yet new credentials get a new client.
    use_credentials(monkeypatch, s3_server)
    url, settings = s3_server.store_url("shared-client"), s3_server.settings()
    first = Store(url, settings)
    first.write_bytes("a.txt", b"1")
    copies = [pickle.loads(pickle.dumps(first)) for _ in range(3)]
    assert all(c.read_bytes("a.txt") == b"1" for c in copies)
    assert all(c.fs is first.fs for c in copies)
    assert Store(s3_server.store_url("other-prefix"), settings).fs is first.fs
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    wrong = Store(url, settings)
    assert wrong.fs is not first.fs
    with pytest.raises(StoreError, match=r"a\.txt"):
        wrong.read_bytes("a.txt")
