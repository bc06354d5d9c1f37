"""No credential ends up in anything written: objects in the bucket, log records, error messages."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from ftlcloud.errors import FtlError
from ftlcloud.io.ingest import (
    ingest_deformation_geotiffs,
    ingest_dem,
    ingest_inventory,
    ingest_ndvi,
)
from ftlcloud.io.s3server import LocalS3Server
from ftlcloud.io.store import Store

pytestmark = pytest.mark.integration


def test_no_secret_in_objects_logs_or_errors(
    s3_server: LocalS3Server,
    s3_store: Store,
    input_files: dict[str, Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secrets = [s3_server.access_key, s3_server.secret_key]
    caplog.set_level(logging.DEBUG, logger="ftlcloud")
    caplog.set_level(logging.INFO)
    errors: list[str] = []

    ingest_deformation_geotiffs(s3_store, input_files["deformation_dir"], unit="m")
    ingest_dem(s3_store, input_files["dem_paths"])
    ingest_ndvi(s3_store, input_files["ndvi_paths"])
    ingest_inventory(s3_store, input_files["inventory_path"])
    # Errors raised along the way: a refused input, then refused credentials.
    (tmp_path / "junk.gpkg").write_text("junk")
    with pytest.raises(FtlError) as bad_input:
        ingest_inventory(s3_store, tmp_path / "junk.gpkg")
    errors.append(str(bad_input.value))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key + "-wrong")
    refused = Store(s3_store.url, s3_store.settings)
    with pytest.raises(FtlError) as bad_creds:
        refused.check()
    errors.append(str(bad_creds.value))
    with pytest.raises(FtlError) as bad_write:
        refused.write_text("x.json", "{}")
    errors.append(str(bad_write.value) + repr(bad_write.value.__cause__))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)

    keys = s3_store.list()
    assert len(keys) >= 20  # 8 data objects, 13 STAC documents
    blobs = {key: s3_store.read_bytes(key) for key in keys}
    logs = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    assert "wrote COG" in logs  # the scan did see the run's log
    text_things = {"logs": logs, "errors": "\n".join(errors), "store repr": repr(s3_store)}
    for secret in secrets:
        for key, blob in blobs.items():
            assert secret.encode() not in blob, f"credential found in object {key}"
        for what, text in text_things.items():
            assert secret not in text, f"credential found in {what}"
    assert "refused the credentials" in errors[1]
