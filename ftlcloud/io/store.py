"""One store, any backend: a local directory or ``s3://bucket/prefix`` on an S3-compatible server.

Keys are ``/``-joined paths relative to the store root. Every read and write of the package goes
through :class:`Store`, so the same code runs on a laptop directory and on object storage.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import rasterio
from rasterio.session import DummySession

from ftlcloud.errors import InputError, StoreError
from ftlcloud.io.settings import StoreSettings, redact

log = logging.getLogger(__name__)


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key inside a store; else raise InputError."""
    if not isinstance(key, str) or not key:
        raise InputError(f"store key {key!r} is empty: give a relative path such as 'inputs/a.tif'")
    if "\\" in key or key.startswith("/") or "://" in key:
        raise InputError(
            f"store key {key!r} must be a relative '/'-separated path inside the store "
            "(no leading '/', no backslashes, no URL scheme)"
        )
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise InputError(
            f"store key {key!r} has an empty, '.' or '..' segment; keys cannot leave the store root"
        )
    return key


#: Environment variables that decide which credentials botocore resolves.
_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
)
_s3_filesystems: dict[tuple[Any, ...], Any] = {}
_s3_filesystems_lock = threading.Lock()


def _s3_filesystem(settings: StoreSettings) -> Any:
    """One s3fs filesystem per process, settings and credentials.

    A Store arrives in every Dask task unpickled; building an S3 client per task (an
    aiobotocore session and its parsed service model each) grew a worker by ~12 MB per
    factor tile, so peak memory grew with the area. fsspec's own instance cache is keyed by
    the arguments only, so a client built before the credentials in the environment changed
    would be reused; this cache is keyed by a digest of those variables too (and the pid: a
    forked child builds its own).
    """
    digest = hashlib.sha256(
        "\0".join(os.environ.get(v, "") for v in _CREDENTIAL_VARIABLES).encode()
    ).hexdigest()
    key = (os.getpid(), settings, digest)
    with _s3_filesystems_lock:
        fs = _s3_filesystems.get(key)
        if fs is None:
            fs = fsspec.filesystem("s3", skip_instance_cache=True, **settings.storage_options())
            _s3_filesystems[key] = fs
        return fs


class Store:
    """A local directory or ``s3://bucket/prefix``; picklable (the filesystem is rebuilt lazily)."""

    def __init__(self, url: str | os.PathLike[str], settings: StoreSettings | None = None) -> None:
        raw = os.fspath(url)
        if not raw:
            raise InputError("store URL is empty: give a directory or s3://bucket/prefix")
        self._fs: Any = None
        if raw.startswith("s3://"):
            rest = raw[len("s3://") :].strip("/")
            bucket, _, prefix = rest.partition("/")
            if not bucket:
                raise InputError(f"store URL {raw!r} has no bucket: use s3://bucket/prefix")
            self._bucket: str | None = bucket
            self._prefix = prefix.strip("/")
            if self._prefix:
                check_key(self._prefix)
            self._settings = settings if settings is not None else StoreSettings.from_env()
            self._url = f"s3://{bucket}/{self._prefix}" if self._prefix else f"s3://{bucket}"
            self._root: Path | None = None
        elif "://" in raw and not raw.startswith("file://"):
            raise InputError(
                f"store URL {raw!r}: only local directories and s3://bucket/prefix are supported"
            )
        else:
            path = Path(raw.removeprefix("file://")).expanduser().resolve()
            self._bucket = None
            self._prefix = ""
            self._settings = settings if settings is not None else StoreSettings()
            self._root = path
            self._url = str(path)

    # -- pickling: ship url + settings, never a live filesystem or session ---------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"url": self._url, "settings": self._settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["settings"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"Store({self._url!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Store)
            and other._url == self._url
            and other._settings == self._settings
        )

    def __hash__(self) -> int:
        return hash((self._url, self._settings))

    # -- properties ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The normalised store URL (absolute directory path or ``s3://bucket[/prefix]``)."""
        return self._url

    @property
    def is_s3(self) -> bool:
        """True for an ``s3://`` store."""
        return self._bucket is not None

    @property
    def settings(self) -> StoreSettings:
        """The S3 settings (unused for a local store)."""
        return self._settings

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (built on first use, so a pickled Store stays light)."""
        if self._fs is None:
            if self.is_s3:
                self._fs = _s3_filesystem(self._settings)
            else:
                self._fs = fsspec.filesystem("file")
        return self._fs

    # -- paths --------------------------------------------------------------------------------
    def _path(self, key: str) -> str:
        """The fsspec path of a key (bucket/prefix/key for S3, absolute path locally)."""
        check_key(key)
        if self._root is not None:
            return str(self._root / key)
        return "/".join(p for p in (self._bucket, self._prefix, key) if p)

    def href(self, key: str) -> str:
        """Absolute location of a key: a local path or ``s3://bucket/prefix/key``."""
        path = self._path(key)
        return path if self._root is not None else f"s3://{path}"

    def gdal_path(self, key: str) -> str:
        """The path GDAL opens: a local path or ``/vsis3/bucket/prefix/key``."""
        path = self._path(key)
        return path if self._root is not None else f"/vsis3/{path}"

    def key_of(self, href: str) -> str | None:
        """The key of an absolute href inside this store, or None if it lies outside."""
        if self._root is not None:
            if "://" in href and not href.startswith("file://"):
                return None
            try:
                rel = Path(href.removeprefix("file://")).resolve().relative_to(self._root)
            except ValueError:
                return None
            return rel.as_posix() if rel.parts else None
        for base in (self._url + "/", "/vsis3/" + self._url[len("s3://") :] + "/"):
            if href.startswith(base):
                return href[len(base) :] or None
        return None

    # -- I/O ----------------------------------------------------------------------------------
    def _fail(self, action: str, key: str, err: Exception) -> StoreError:
        detail = redact(f"{type(err).__name__}: {err}")
        return StoreError(f"cannot {action} {self.href(key)!r} in store {self._url}: {detail}")

    def exists(self, key: str) -> bool:
        """True if the key holds an object."""
        path = self._path(key)
        if self._root is not None:
            return os.path.isfile(path)
        try:
            return bool(self.fs.isfile(path))
        except Exception as err:
            raise self._fail("check", key, err) from err

    def size(self, key: str) -> int:
        """Size of the object in bytes."""
        path = self._path(key)
        try:
            if self._root is not None:
                return os.path.getsize(path)
            return int(self.fs.size(path))
        except FileNotFoundError as err:
            raise StoreError(f"{self.href(key)!r} does not exist in store {self._url}") from err
        except Exception as err:
            raise self._fail("stat", key, err) from err

    def read_bytes(self, key: str) -> bytes:
        """The whole object; StoreError if it is missing or unreadable."""
        path = self._path(key)
        try:
            if self._root is not None:
                return Path(path).read_bytes()
            return bytes(self.fs.cat_file(path))
        except FileNotFoundError as err:
            raise StoreError(f"{self.href(key)!r} does not exist in store {self._url}") from err
        except Exception as err:
            raise self._fail("read", key, err) from err

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write an object in one piece (temp file + rename locally; one PUT on S3)."""
        path = self._path(key)
        try:
            if self._root is not None:
                _replace_atomically(Path(path), lambda tmp: Path(tmp).write_bytes(data))
            else:
                self.fs.pipe_file(path, bytes(data))
        except Exception as err:
            raise self._fail("write", key, err) from err
        log.debug("wrote %s (%d bytes)", self.href(key), len(data))

    def write_file(self, key: str, source: str | os.PathLike[str]) -> None:
        """Upload a local file without holding it in memory (copy + rename locally; S3 streams
        it, multipart when large, and the object appears only once complete)."""
        path = self._path(key)
        try:
            if self._root is not None:
                _replace_atomically(Path(path), lambda tmp: shutil.copyfile(source, tmp))
            else:
                self.fs.put_file(os.fspath(source), path)
        except Exception as err:
            raise self._fail("write", key, err) from err
        log.debug("wrote %s from %s", self.href(key), source)

    def create_exclusive(self, key: str, data: bytes) -> str | None:
        """Write ``key`` only if no object holds it; its version tag, or None if it exists.

        Locally an ``O_EXCL`` create (the data is written into the new file: a reader may see it
        partly written, so use it for small control objects only). On S3 a PUT with
        ``If-None-Match: *``, honoured by AWS S3 (since 2024), MinIO and SeaweedFS; the returned
        tag is the object's ETag, for :meth:`replace_if_match`.
        """
        path = self._path(key)
        try:
            if self._root is not None:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return None
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                return self.etag(key)
            try:
                out = self.fs.pipe_file(path, bytes(data), mode="create")
            except FileExistsError:
                return None
            except OSError as err:
                if _precondition_failed(err):
                    return None
                raise
            return _etag_of(out) or self.etag(key)
        except StoreError:
            raise
        except Exception as err:
            raise self._fail("create", key, err) from err

    def replace_if_match(self, key: str, data: bytes, tag: str) -> str | None:
        """Overwrite ``key`` only if its version tag is still ``tag``; the new tag, or None.

        S3 only (``If-Match`` on PUT, as AWS S3, MinIO and SeaweedFS honour it).
        """
        if self._root is not None:
            raise StoreError(
                f"conditional replace is an S3 operation; {self._url} is a local directory"
            )
        path = self._path(key)
        try:
            out = self.fs.pipe_file(path, bytes(data), IfMatch=tag)
        except FileNotFoundError:
            return None
        except OSError as err:
            if _precondition_failed(err):
                return None
            raise self._fail("replace", key, err) from err
        except Exception as err:
            raise self._fail("replace", key, err) from err
        return _etag_of(out) or self.etag(key)

    def etag(self, key: str) -> str | None:
        """A version tag of the object (S3 ETag; local size and mtime), or None if it is absent."""
        path = self._path(key)
        try:
            if self._root is not None:
                st = os.stat(path)
                return f"{st.st_size}-{st.st_mtime_ns}"
            info = self.fs.info(path, refresh=True)
        except FileNotFoundError:
            return None
        except Exception as err:
            raise self._fail("stat", key, err) from err
        tag = info.get("ETag") or info.get("etag")
        return str(tag) if tag else None

    def read_text(self, key: str) -> str:
        """The object decoded as UTF-8."""
        return self.read_bytes(key).decode("utf-8")

    def write_text(self, key: str, text: str) -> None:
        """Write UTF-8 text."""
        self.write_bytes(key, text.encode("utf-8"))

    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys of every object under ``prefix`` (recursive; '' = the whole store)."""
        if prefix:
            check_key(prefix.rstrip("/"))
        if self._root is not None:
            base = self._root / prefix.rstrip("/") if prefix else self._root
            if not base.is_dir():
                return []
            return sorted(
                p.relative_to(self._root).as_posix()
                for p in base.rglob("*")
                if p.is_file() and not p.name.endswith(".tmp")
            )
        root = "/".join(p for p in (self._bucket, self._prefix) if p)
        s3_base = f"{root}/{prefix.rstrip('/')}" if prefix else root
        try:
            found = self.fs.find(s3_base)
        except FileNotFoundError:
            return []
        except Exception as err:
            raise StoreError(
                redact(f"cannot list {s3_base!r} in store {self._url}: {err}")
            ) from err
        return sorted(p[len(root) + 1 :] for p in found if p.startswith(root + "/"))

    def delete(self, key: str) -> None:
        """Remove an object (no error if it is already gone)."""
        path = self._path(key)
        try:
            if self._root is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            elif self.fs.isfile(path):
                self.fs.rm_file(path)
        except Exception as err:
            raise self._fail("delete", key, err) from err

    # -- GDAL ---------------------------------------------------------------------------------
    def gdal_env(self) -> dict[str, str]:
        """GDAL config options to open this store's ``gdal_path`` keys."""
        return self._settings.gdal_env() if self.is_s3 else {}

    def rasterio_env(self) -> rasterio.Env:
        """A ``rasterio.Env`` for reading this store through GDAL.

        A DummySession makes GDAL read credentials from the process environment or profile
        itself instead of rasterio copying them into config options.
        """
        return rasterio.Env(session=DummySession(), **self.gdal_env())

    # -- health -------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise StoreError naming the problem if the store cannot be read and written."""
        if self._root is not None:
            try:
                self._root.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise StoreError(f"cannot create store directory {self._root}: {err}") from err
            if not os.access(self._root, os.W_OK):
                raise StoreError(
                    f"store directory {self._root} is not writable: fix its permissions"
                )
            return
        endpoint = self._settings.endpoint_url or "AWS S3"
        try:
            self.fs.ls(self._bucket, refresh=True)
        except FileNotFoundError as err:
            raise StoreError(
                f"bucket {self._bucket!r} does not exist on {endpoint}: create it (e.g. "
                f"`aws s3 mb s3://{self._bucket}` or the server's console) or fix the store URL"
            ) from err
        except PermissionError as err:
            raise StoreError(
                f"{endpoint} refused the credentials for bucket {self._bucket!r}: check "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE (values not shown)"
            ) from err
        except Exception as err:
            raise StoreError(
                f"cannot reach S3 endpoint {endpoint} for store {self._url}: is the server "
                "running? check FTLCLOUD_S3_ENDPOINT_URL / FTLCLOUD_S3_USE_TLS "
                f"({redact(type(err).__name__ + ': ' + str(err))})"
            ) from err


@contextlib.contextmanager
def opened(store: Store, key: str) -> Iterator[Any]:
    """Open a raster key of the store with rasterio inside the store's GDAL environment."""
    with store.rasterio_env(), rasterio.open(store.gdal_path(key)) as src:
        yield src


def _replace_atomically(target: Path, fill: Callable[[str], object]) -> None:
    """Write ``target`` so that a reader never sees it half-written: fill a temporary file beside
    it, then rename it over the target (atomic on one filesystem)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fill(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _etag_of(response: Any) -> str | None:
    """The ETag of an s3fs/botocore PUT response, if it carries one."""
    if isinstance(response, dict):
        tag = response.get("ETag")
        return str(tag) if tag else None
    return None


def _precondition_failed(err: BaseException) -> bool:
    """True if an S3 error is HTTP 412 (a conditional request lost), whatever s3fs mapped it to."""
    seen: BaseException | None = err
    for _ in range(5):
        if seen is None:
            break
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412:
                return True
        seen = seen.__cause__ or seen.__context__
    return "pre-condition" in str(err).lower() or "precondition" in str(err).lower()


def clear_gdal_http_cache() -> bool:
    """Forget GDAL's process-wide ``/vsicurl/`` (``/vsis3/``) cache of sizes, existence and blocks.

    GDAL keeps what it learnt about a URL for the life of the process, including failures: a
    worker that lived through a store outage would go on failing to open objects that are back.
    Stages call this on every worker before they read. Returns False where libgdal's symbol
    cannot be reached (then nothing is cleared).
    """
    import ctypes
    import glob

    import rasterio

    paths: list[str] = []
    with contextlib.suppress(OSError), open("/proc/self/maps") as maps:
        paths = sorted({ln.split()[-1] for ln in maps if "libgdal" in ln and "/" in ln})
    if not paths:
        libs = Path(rasterio.__file__).resolve().parent.parent / "rasterio.libs"
        paths = sorted(glob.glob(str(libs / "libgdal*")))
    for path in paths:
        try:
            # The same path as the loaded library yields the same handle, so the same cache.
            ctypes.CDLL(path).VSICurlClearCache()
        except (OSError, AttributeError):
            continue
        return True
    log.debug("cannot clear GDAL's HTTP cache: libgdal not found among %s", paths)
    return False
