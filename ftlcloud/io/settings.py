"""Settings for reaching an S3-compatible store: one object feeds fsspec/s3fs and GDAL.

Credentials are never held here. They come only from the standard AWS environment variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``) or from a named profile,
and are read by botocore (s3fs) and GDAL at the moment they connect. The settings object is
therefore safe to pickle to Dask workers, to log and to repr; every worker rebuilds its fsspec
options and GDAL environment from it plus its own environment (e.g. a Kubernetes secret).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ftlcloud.errors import ConfigError

#: Environment variables holding credentials. They are never copied, stored or logged.
SECRET_ENV_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


def _env_bool(env: Mapping[str, str], name: str) -> bool | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"environment variable {name}={raw!r} is not a boolean: use true or false")


def _first(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name)
        if value:
            return value.strip()
    return None


@dataclass(frozen=True)
class StoreSettings:
    """How to reach an S3-compatible object store (never the credentials themselves)."""

    endpoint_url: str | None = None
    """``http(s)://host:port`` of a non-AWS server (MinIO, SeaweedFS, Ceph); None for AWS S3."""
    region: str | None = None
    """Region name; S3-compatible servers usually accept any, e.g. ``us-east-1``."""
    path_style: bool = False
    """``http://host/bucket/key`` addressing (needed by most self-hosted servers)."""
    use_tls: bool = True
    """HTTPS to the endpoint."""
    profile: str | None = None
    """A named profile of ``~/.aws/credentials`` / ``~/.aws/config`` holding the credentials."""
    anon: bool = False
    """Unsigned requests (public buckets)."""

    def __post_init__(self) -> None:
        if self.endpoint_url is not None:
            try:
                parts = urlsplit(self.endpoint_url)
                parts.port  # noqa: B018 (a port out of 0..65535 raises only when read)
            except ValueError as err:
                raise ConfigError(
                    f"S3 endpoint URL {self.endpoint_url!r} cannot be parsed ({err}); set "
                    "FTLCLOUD_S3_ENDPOINT_URL to e.g. http://127.0.0.1:8333"
                ) from err
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(
                    f"S3 endpoint URL {self.endpoint_url!r} is not of the form "
                    "http(s)://host:port; set FTLCLOUD_S3_ENDPOINT_URL to e.g. http://127.0.0.1:8333"
                )
            if parts.username or parts.password:
                # A URL with user:password@ would leak credentials into every repr and log line.
                raise ConfigError(
                    "S3 endpoint URL must not embed credentials; put them in AWS_ACCESS_KEY_ID / "
                    "AWS_SECRET_ACCESS_KEY or a profile instead"
                )
            if (parts.scheme == "https") != self.use_tls:
                raise ConfigError(
                    f"S3 endpoint URL scheme {parts.scheme!r} contradicts use_tls={self.use_tls}; "
                    "unset FTLCLOUD_S3_USE_TLS or make it match the URL"
                )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StoreSettings:
        """Read FTLCLOUD_S3_* (falling back to AWS_ENDPOINT_URL, AWS_REGION, AWS_PROFILE)."""
        env = os.environ if env is None else env
        endpoint = _first(
            env, "FTLCLOUD_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"
        )
        region = _first(env, "FTLCLOUD_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")
        profile = _first(env, "FTLCLOUD_S3_PROFILE", "AWS_PROFILE")
        path_style = _env_bool(env, "FTLCLOUD_S3_PATH_STYLE")
        use_tls = _env_bool(env, "FTLCLOUD_S3_USE_TLS")
        anon = _env_bool(env, "FTLCLOUD_S3_ANON") or False
        if endpoint is not None and "://" not in endpoint:
            endpoint = f"{'http' if use_tls is False else 'https'}://{endpoint}"
        if use_tls is None:
            use_tls = endpoint is None or endpoint.startswith("https://")
        if path_style is None:
            # Self-hosted servers rarely have wildcard DNS for virtual-host buckets.
            path_style = endpoint is not None
        return cls(
            endpoint_url=endpoint,
            region=region,
            path_style=path_style,
            use_tls=use_tls,
            profile=profile,
            anon=anon,
        )

    def storage_options(self) -> dict[str, Any]:
        """Keyword arguments for ``s3fs.S3FileSystem`` / fsspec ``storage_options``."""
        client_kwargs: dict[str, Any] = {}
        if self.endpoint_url:
            client_kwargs["endpoint_url"] = self.endpoint_url
        if self.region:
            client_kwargs["region_name"] = self.region
        s3_config: dict[str, Any] = {"addressing_style": "path" if self.path_style else "auto"}
        options: dict[str, Any] = {
            "anon": self.anon,
            "use_ssl": self.use_tls,
            "client_kwargs": client_kwargs,
            # Fail fast on a dead endpoint instead of botocore's 60 s default.
            "config_kwargs": {"s3": s3_config, "connect_timeout": 10, "read_timeout": 60},
            # Several processes write the same store; a stale listing cache would hide their keys.
            "use_listings_cache": False,
        }
        if self.profile:
            options["profile"] = self.profile
        return options

    def gdal_env(self) -> dict[str, str]:
        """GDAL configuration options for reading ``/vsis3/`` paths with these settings.

        Credentials are not included: GDAL reads AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
        AWS_SESSION_TOKEN from the process environment (or the profile) itself.
        """
        env: dict[str, str] = {
            # Opening a COG must not list the bucket prefix looking for sidecar files.
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
            # Only probe object keys with these suffixes; other /vsis3/ lookups fail fast.
            "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.ovr,.json,.parquet",
            # Adjacent COG tile requests become one range request.
            "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
            # HTTP/2 multiplexing where the server offers it: fewer connections per worker.
            "GDAL_HTTP_MULTIPLEX": "YES",
            # Transient 5xx / connection resets on object stores are common; retry them.
            "GDAL_HTTP_MAX_RETRY": "3",
            "GDAL_HTTP_RETRY_DELAY": "1",
            # Cache the header/IFD bytes of each COG so repeated window reads reuse them. 4 MiB
            # per open file holds those; GDAL's default (25 MB, with up to 100 files kept open)
            # fills with whole files as tile after tile is read.
            "VSI_CACHE": "TRUE",
            "VSI_CACHE_SIZE": str(4 * 2**20),
        }
        if self.endpoint_url:
            parts = urlsplit(self.endpoint_url)
            host = parts.hostname or ""
            # GDAL wants host[:port] without scheme; the scheme is AWS_HTTPS.
            env["AWS_S3_ENDPOINT"] = f"{host}:{parts.port}" if parts.port else host
        env["AWS_HTTPS"] = "YES" if self.use_tls else "NO"
        # Path-style addressing: GDAL otherwise puts the bucket in the host name.
        env["AWS_VIRTUAL_HOSTING"] = "FALSE" if self.path_style else "TRUE"
        if self.region:
            env["AWS_REGION"] = self.region
        if self.profile:
            # GDAL resolves the profile's credentials from the shared files itself.
            env["AWS_PROFILE"] = self.profile
        if self.anon:
            env["AWS_NO_SIGN_REQUEST"] = "YES"
        return env


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """Replace any credential value present in the environment by ``***`` (for error messages)."""
    env = os.environ if env is None else env
    for name in SECRET_ENV_VARS:
        value = env.get(name)
        # Very short values would blank out ordinary words; real keys are 16+ characters.
        if value and len(value) >= 8:
            text = text.replace(value, "***")
    return text
