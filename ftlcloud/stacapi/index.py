"""Keep a pgstac database in step with a store's static STAC catalog.

The static catalog in the store stays the source of truth (an item JSON is written only after its
assets, so every item there is complete). The index is derived from it: :meth:`PgstacIndex.sync`
reads every collection and item, rewrites their relative hrefs as absolute hrefs a client can open
(see :func:`asset_href`), and upserts what changed since the last sync (pypgstac's loader); items
that disappeared from the store are deleted from the index.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import quote, urlsplit

from ftlcloud.errors import CatalogError, ConfigError, StoreError
from ftlcloud.io.catalog import CATALOG_KEY, Catalog
from ftlcloud.io.store import Store

log = logging.getLogger(__name__)

HrefMode = Literal["auto", "s3", "http", "local"]
HREF_MODES: tuple[str, ...] = ("auto", "s3", "http", "local")

# Links that describe the static catalog's tree; the API writes its own.
_TREE_RELS = {"root", "parent", "collection", "self", "item", "child"}


def asset_href(store: Store, key: str, mode: HrefMode = "auto") -> str:
    """The href a STAC API client opens for a key of the store.

    ``s3`` (the default for S3 stores): ``s3://bucket/prefix/key``, opened by GDAL/rasterio,
    stackstac, s3fs and geopandas with the store's endpoint and credentials (docs/stac-api.md).
    ``http``: ``<endpoint>/<bucket>/<prefix>/<key>`` (path-style; AWS virtual-host style when no
    endpoint is set), for public-read buckets or a signing proxy. ``local`` (the default for a
    local store): the absolute file path.
    """
    href = store.href(key)
    if mode == "auto":
        mode = "s3" if store.is_s3 else "local"
    if mode == "local":
        if store.is_s3:
            raise ConfigError(f"--asset-hrefs local needs a local store, not {store.url}")
        return href
    if not store.is_s3:
        raise ConfigError(
            f"--asset-hrefs {mode} needs an s3:// store; {store.url} is a local directory "
            "(use --asset-hrefs local)"
        )
    if mode == "s3":
        return href
    if mode == "http":
        bucket, _, path = href.removeprefix("s3://").partition("/")
        endpoint = store.settings.endpoint_url
        if endpoint:
            return f"{endpoint.rstrip('/')}/{bucket}/{quote(path)}"
        region = store.settings.region or "us-east-1"
        return f"https://{bucket}.s3.{region}.amazonaws.com/{quote(path)}"
    raise ConfigError(f"unknown asset href mode {mode!r}; use one of {', '.join(HREF_MODES)}")


def _absolute(store: Store, from_key: str, href: str, mode: HrefMode) -> str:
    if "://" in href or href.startswith("/"):
        return href
    key = posixpath.normpath(posixpath.join(posixpath.dirname(from_key), href))
    return asset_href(store, key, mode)


def index_item(store: Store, key: str, doc: Mapping[str, Any], mode: HrefMode) -> dict[str, Any]:
    """An item JSON of the store as the index holds it: absolute hrefs, no tree links."""
    out = json.loads(json.dumps(doc))
    for asset in out.get("assets", {}).values():
        asset["href"] = _absolute(store, key, asset["href"], mode)
    out["links"] = [
        {**lk, "href": _absolute(store, key, lk["href"], mode)}
        for lk in out.get("links", [])
        if lk.get("rel") not in _TREE_RELS
    ]
    return cast(dict[str, Any], out)


def index_collection(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A collection JSON as the index holds it (the API writes the tree links)."""
    out = json.loads(json.dumps(doc))
    out["links"] = [lk for lk in out.get("links", []) if lk.get("rel") not in _TREE_RELS]
    return cast(dict[str, Any], out)


@dataclass
class SyncReport:
    """What one sync changed."""

    collections: int = 0
    upserted: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    total_items: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.upserted or self.deleted)

    def summary(self) -> str:
        return (
            f"{self.total_items} items in {self.collections} collections "
            f"({len(self.upserted)} upserted, {len(self.deleted)} deleted"
            + (f", {len(self.skipped)} unreadable, retried next sync" if self.skipped else "")
            + ")"
        )


class PgstacIndex:
    """A pgstac database fed from a store's catalog (pypgstac migrations and loader)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        # (collection, item id) -> sha256 of the indexed JSON, and the same for collections.
        self._items: dict[tuple[str, str], str] = {}
        self._collections: dict[str, str] = {}

    def __repr__(self) -> str:
        return "PgstacIndex(<dsn>)"  # the DSN may hold a password

    def _db(self) -> Any:
        from pypgstac.db import PgstacDB

        return PgstacDB(dsn=self.dsn)

    def where(self) -> str:
        """``host:port/database`` of the DSN (no user, no password: safe to print)."""
        parts = urlsplit(self.dsn)
        return f"{parts.hostname}:{parts.port or 5432}/{parts.path.lstrip('/') or 'postgres'}"

    def check_connection(self, timeout_s: int = 10) -> None:
        """Connect once, failing fast with the database's location and the fix."""
        import psycopg

        try:
            psycopg.connect(self.dsn, connect_timeout=timeout_s).close()
        except psycopg.Error as err:
            raise StoreError(
                f"cannot connect to the STAC index database at {self.where()}: "
                f"{_first_line(err)}; check --pgstac (postgresql://user:password@host:port/db) "
                "and that the server is up"
            ) from err

    def migrate(self) -> str:
        """Install or upgrade the pgstac schema (idempotent); returns its version."""
        from pypgstac.migrate import Migrate

        self.check_connection()
        try:
            with self._db() as db:
                return str(Migrate(db).run_migration())
        except Exception as err:  # psycopg raises many kinds; name the database and the fix
            hint = ""
            if "postgis" in str(err).lower():
                hint = " (PostGIS is missing: apt-get install postgresql-postgis)"
            raise StoreError(
                f"could not install pgstac in the index database: {type(err).__name__}: "
                f"{_first_line(err)}{hint}"
            ) from err

    def sync(self, store: Store, *, hrefs: HrefMode = "auto") -> SyncReport:
        """Upsert the collections and items that changed in ``store``; delete vanished items."""
        from pypgstac.load import Loader, Methods

        if not store.exists(CATALOG_KEY):
            raise CatalogError(
                f"no STAC catalog at {store.href(CATALOG_KEY)}: check --store, or ingest inputs "
                "(ftlcloud ingest ...) or run `ftlcloud demo --store ...` first"
            )
        catalog = Catalog(store)
        report = SyncReport()
        collections: dict[str, dict[str, Any]] = {}
        items: dict[tuple[str, str], dict[str, Any]] = {}
        for cid in catalog.collection_ids():
            collections[cid] = index_collection(catalog.read_json(Catalog.collection_key(cid)))
            for key in catalog.item_keys(cid):
                try:
                    doc = catalog.read_json(key)
                except CatalogError as err:
                    # An item caught mid-write on a store without atomic writes: the next sync
                    # retries it.
                    log.warning("skipping %s this sync: %s", key, err)
                    report.skipped.append(key)
                    continue
                items[(cid, doc["id"])] = index_item(store, key, doc, hrefs)
        report.collections = len(collections)
        report.total_items = len(items)

        new_colls = {c: d for c, d in collections.items() if self._collections.get(c) != _sha(d)}
        new_items = {k: d for k, d in items.items() if self._items.get(k) != _sha(d)}
        gone = [k for k in self._items if k not in items]
        if not (new_colls or new_items or gone):
            return report
        try:
            with self._db() as db:
                loader = Loader(db)
                if new_colls:
                    loader.load_collections(iter(new_colls.values()), insert_mode=Methods.upsert)
                if new_items:
                    loader.load_items(iter(new_items.values()), insert_mode=Methods.upsert)
                conn = db.connect()
                with conn.cursor() as cur:
                    for cid, iid in gone:
                        cur.execute("SELECT delete_item(%s, %s)", (iid, cid))
                conn.commit()
        except Exception as err:
            raise StoreError(
                f"could not update the STAC index from {store.url}: {type(err).__name__}: "
                f"{_first_line(err)}"
            ) from err
        for cid, doc in new_colls.items():
            self._collections[cid] = _sha(doc)
        for k, doc in new_items.items():
            self._items[k] = _sha(doc)
        for k in gone:
            del self._items[k]
        report.upserted = [f"{c}/{i}" for c, i in new_items]
        report.deleted = [f"{c}/{i}" for c, i in gone]
        log.info("STAC index in step with %s: %s", store.url, report.summary())
        return report


def _sha(doc: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else ""
