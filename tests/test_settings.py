"""StoreSettings: environment parsing, fsspec options, GDAL env, pickling, no credentials held."""

from __future__ import annotations

import pickle

import pytest

from ftlcloud.errors import ConfigError
from ftlcloud.io.settings import StoreSettings, redact


def test_from_env_reads_ftlcloud_variables() -> None:
    env = {
        "FTLCLOUD_S3_ENDPOINT_URL": "http://127.0.0.1:8333",
        "FTLCLOUD_S3_REGION": "eu-west-1",
        "FTLCLOUD_S3_PATH_STYLE": "true",
        "FTLCLOUD_S3_USE_TLS": "false",
        "AWS_PROFILE": "ftl",
    }
    s = StoreSettings.from_env(env)
    assert s == StoreSettings("http://127.0.0.1:8333", "eu-west-1", True, False, "ftl", False)


def test_from_env_falls_back_to_aws_variables_and_infers_defaults() -> None:
    s = StoreSettings.from_env({"AWS_ENDPOINT_URL": "https://s3.example.org", "AWS_REGION": "x"})
    assert s.endpoint_url == "https://s3.example.org"
    assert s.region == "x"
    assert s.use_tls is True
    assert s.path_style is True  # custom endpoint → path style by default
    aws = StoreSettings.from_env({})
    assert aws.endpoint_url is None and aws.use_tls is True and aws.path_style is False


def test_bad_boolean_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="FTLCLOUD_S3_PATH_STYLE='maybe'"):
        StoreSettings.from_env({"FTLCLOUD_S3_PATH_STYLE": "maybe"})


def test_bad_endpoint_and_embedded_credentials_are_refused() -> None:
    with pytest.raises(ConfigError, match="not of the form"):
        StoreSettings(endpoint_url="ftp://x", use_tls=False)
    with pytest.raises(ConfigError, match="must not embed credentials"):
        StoreSettings(endpoint_url="http://AKIA:topsecret@host:9000", use_tls=False)
    with pytest.raises(ConfigError, match="contradicts use_tls"):
        StoreSettings(endpoint_url="http://host:9000", use_tls=True)


def test_storage_options_and_gdal_env() -> None:
    s = StoreSettings("http://127.0.0.1:9000", "us-east-1", True, False, None)
    opts = s.storage_options()
    assert opts["client_kwargs"] == {
        "endpoint_url": "http://127.0.0.1:9000",
        "region_name": "us-east-1",
    }
    assert opts["config_kwargs"]["s3"]["addressing_style"] == "path"
    assert opts["use_ssl"] is False and opts["anon"] is False
    env = s.gdal_env()
    assert env["AWS_S3_ENDPOINT"] == "127.0.0.1:9000"
    assert env["AWS_HTTPS"] == "NO"
    assert env["AWS_VIRTUAL_HOSTING"] == "FALSE"
    assert env["AWS_REGION"] == "us-east-1"
    assert env["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    assert not any(k in env for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))


def test_credentials_never_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEY123")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRET")
    s = StoreSettings.from_env()
    dumped = repr(s) + str(s.storage_options()) + str(s.gdal_env()) + str(pickle.dumps(s))
    assert "AKIAEXAMPLEKEY123" not in dumped
    assert "wJalrXUtnFEMI" not in dumped
    assert pickle.loads(pickle.dumps(s)) == s


def test_redact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-123")
    assert redact("oops s3cr3t-value-123 leaked") == "oops *** leaked"
