"""The static STAC 1.1 catalog at the store root.

Layout: ``catalog.json`` → ``<collection>/collection.json`` → ``<collection>/<item>/<item>.json``.
Every href written is relative (links between documents and asset hrefs, which are relative to
the item JSON), so a catalog copied to another bucket or directory keeps working; pystac resolves
them against the document's own location when read back.

Publish order: the caller writes the data objects first; :meth:`Catalog.add_item` checks that
each asset exists with the recorded ``file:size``, writes the item JSON, then links it from its
collection (whose extent grows) and the collection from the root. Items are listed from the
store, so an item written just before a crash is still found and the links are repaired by the
next ``add_item``. Add items from one process (the Dask client), not from workers: the
collection document is read-modified-written.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import posixpath
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import fsspec
import pystac
from pystac.stac_io import StacIO

from ftlcloud import __version__
from ftlcloud.errors import CatalogError, InputError
from ftlcloud.io.cog import AssetInfo
from ftlcloud.io.store import Store

log = logging.getLogger(__name__)

STAC_VERSION = "1.1.0"
CATALOG_ID = "ftlcloud"
CATALOG_KEY = "catalog.json"

EXTENSIONS = {
    "proj:": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "raster:": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "file:": "https://stac-extensions.github.io/file/v2.1.0/schema.json",
    "processing:": "https://stac-extensions.github.io/processing/v1.2.0/schema.json",
    "table:": "https://stac-extensions.github.io/table/v1.2.0/schema.json",
}
_STRUCTURAL_RELS = {"root", "parent", "collection", "self", "item", "child"}


def _template_dirs() -> list[Any]:
    dirs: list[Any] = []
    with contextlib.suppress(ModuleNotFoundError, TypeError):
        dirs.append(resources.files("ftlcloud") / "catalogs")
    dirs.append(Path(__file__).resolve().parents[2] / "catalogs")
    return dirs


def collection_ids() -> list[str]:
    """Ids of the collection templates shipped with ftlcloud."""
    found: set[str] = set()
    for d in _template_dirs():
        if d.is_dir():
            found.update(p.name[: -len(".json")] for p in d.iterdir() if p.name.endswith(".json"))
    return sorted(found)


def collection_template(collection_id: str) -> dict[str, Any]:
    """The collection template: package resource ``ftlcloud/catalogs`` first, then the repo."""
    for d in _template_dirs():
        path = d / f"{collection_id}.json"
        if path.is_file():
            template: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return template
    raise CatalogError(
        f"no STAC collection template {collection_id!r}: known collections are "
        f"{', '.join(collection_ids()) or '(none found)'}; add catalogs/{collection_id}.json"
    )


def extensions_for(doc: Mapping[str, Any]) -> list[str]:
    """Extension schema URIs whose fields occur in an item's properties or assets."""
    keys: set[str] = set(doc.get("properties", {}))
    for asset in doc.get("assets", {}).values():
        keys.update(asset)
    return [uri for prefix, uri in EXTENSIONS.items() if any(k.startswith(prefix) for k in keys)]


def _union_bbox(boxes: Sequence[Sequence[float]]) -> list[float]:
    return [
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    ]


def build_item(
    item_id: str,
    assets: Mapping[str, AssetInfo],
    *,
    datetime: dt.datetime | None = None,
    start_datetime: dt.datetime | None = None,
    end_datetime: dt.datetime | None = None,
    properties: Mapping[str, Any] | None = None,
    roles: Mapping[str, Sequence[str]] | None = None,
    titles: Mapping[str, str] | None = None,
    derived_from: Sequence[str] = (),
    bbox_wgs84: Sequence[float] | None = None,
) -> pystac.Item:
    """A STAC item for written assets: geometry = the union of their WGS 84 boxes.

    ``derived_from`` takes absolute hrefs of input items (``Store.href`` of their JSON keys).
    """
    boxes = [a.bbox_wgs84 for a in assets.values() if a.bbox_wgs84 is not None]
    if bbox_wgs84 is None:
        if not boxes:
            raise InputError(f"item {item_id!r}: no asset has a footprint; pass bbox_wgs84")
        bbox_wgs84 = _union_bbox(boxes)
    w, s, e, n = (float(v) for v in bbox_wgs84)
    geometry = {
        "type": "Polygon",
        "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]],
    }
    props: dict[str, Any] = {"processing:software": {"ftlcloud": __version__}}
    if start_datetime is not None:
        props["start_datetime"] = pystac.utils.datetime_to_str(start_datetime)
    if end_datetime is not None:
        props["end_datetime"] = pystac.utils.datetime_to_str(end_datetime)
    props.update(properties or {})
    if datetime is None and (start_datetime is None or end_datetime is None):
        raise InputError(f"item {item_id!r}: give a datetime or both start and end datetimes")
    item = pystac.Item(
        id=item_id,
        geometry=geometry,
        bbox=[w, s, e, n],
        datetime=datetime,
        properties=props,
    )
    for name, info in assets.items():
        asset_roles = (roles or {}).get(name, ("data",))
        item.add_asset(name, info.to_asset(roles=asset_roles, title=(titles or {}).get(name)))
    for href in derived_from:
        item.add_link(pystac.Link("derived_from", href, media_type=pystac.MediaType.JSON))
    return item


class StoreStacIO(StacIO):
    """pystac I/O through the store's fsspec filesystem, so ``s3://`` catalogs open too."""

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store

    def _fs_path(self, href: str) -> tuple[Any, str]:
        key = self.store.key_of(href)
        if key is not None:
            return self.store.fs, self.store._path(key)
        options = self.store.settings.storage_options() if href.startswith("s3://") else {}
        fs, path = fsspec.core.url_to_fs(href, **options)
        return fs, path

    def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
        href = str(source.href if isinstance(source, pystac.Link) else source)
        key = self.store.key_of(href)
        if key is not None:
            return self.store.read_text(key)
        fs, path = self._fs_path(href)
        with fs.open(path, "rt", encoding="utf-8") as fh:
            return str(fh.read())

    def write_text(self, dest: Any, txt: str, *args: Any, **kwargs: Any) -> None:
        href = str(dest.href if isinstance(dest, pystac.Link) else dest)
        key = self.store.key_of(href)
        if key is None:
            raise CatalogError(
                f"refusing to write {href!r}: it lies outside store {self.store.url}"
            )
        self.store.write_text(key, txt)


class Catalog:
    """The store's STAC catalog: open it (creating ``catalog.json`` if missing) and add items."""

    def __init__(self, store: Store, *, description: str | None = None) -> None:
        self.store = store
        if not store.exists(CATALOG_KEY):
            doc = {
                "type": "Catalog",
                "stac_version": STAC_VERSION,
                "id": CATALOG_ID,
                "title": "ftlcloud store",
                "description": description
                or "Inputs, factors, iterations and inventories of freeze-thaw landslide "
                "identification runs (ftlcloud).",
                "links": [{"rel": "root", "href": "./catalog.json", "type": "application/json"}],
            }
            self._write_json(CATALOG_KEY, doc)
            log.info("created STAC catalog %s", store.href(CATALOG_KEY))

    # -- keys ---------------------------------------------------------------------------------
    @staticmethod
    def collection_key(collection_id: str) -> str:
        """Store key of a collection's JSON."""
        return f"{collection_id}/collection.json"

    @staticmethod
    def item_key(collection_id: str, item_id: str) -> str:
        """Store key of an item's JSON."""
        if not item_id or "/" in item_id or item_id in (".", ".."):
            raise InputError(f"STAC item id {item_id!r} must be a non-empty name without '/'")
        return f"{collection_id}/{item_id}/{item_id}.json"

    def item_href(self, collection_id: str, item_id: str) -> str:
        """Absolute href of an item JSON (for ``derived_from`` links)."""
        return self.store.href(self.item_key(collection_id, item_id))

    # -- JSON helpers -------------------------------------------------------------------------
    def read_json(self, key: str) -> dict[str, Any]:
        """A catalog, collection or item JSON of the store (CatalogError if not valid JSON)."""
        try:
            doc: dict[str, Any] = json.loads(self.store.read_text(key))
        except json.JSONDecodeError as err:
            raise CatalogError(f"{self.store.href(key)} is not valid JSON: {err}") from err
        return doc

    def _write_json(self, key: str, doc: Mapping[str, Any]) -> None:
        self.store.write_text(key, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")

    # -- collections --------------------------------------------------------------------------
    def ensure_collection(self, collection_id: str) -> pystac.Collection:
        """The collection, created from its template (and linked from the root) if missing."""
        key = self.collection_key(collection_id)
        if not self.store.exists(key):
            doc = collection_template(collection_id)
            for provider in doc.get("providers", []):
                if "processing:software" in provider:
                    provider["processing:software"] = {"ftlcloud": __version__}
            doc["links"] = [
                {"rel": "root", "href": "../catalog.json", "type": "application/json"},
                {"rel": "parent", "href": "../catalog.json", "type": "application/json"},
            ]
            self._write_json(key, doc)
            self._link_child(collection_id)
            log.info("created STAC collection %s", self.store.href(key))
        return self.collection(collection_id)  # type: ignore[return-value]

    def collection(self, collection_id: str) -> pystac.Collection | None:
        """The collection as pystac reads it, or None if absent."""
        key = self.collection_key(collection_id)
        if not self.store.exists(key):
            return None
        return pystac.Collection.from_dict(self.read_json(key), href=self.store.href(key))

    def collection_ids(self) -> list[str]:
        """Ids of the collections linked from the root catalog."""
        doc = self.read_json(CATALOG_KEY)
        return sorted(
            link["href"].split("/")[-2]
            for link in doc.get("links", [])
            if link.get("rel") == "child"
        )

    def _link_child(self, collection_id: str) -> None:
        doc = self.read_json(CATALOG_KEY)
        href = f"./{collection_id}/collection.json"
        if not any(lk.get("rel") == "child" and lk.get("href") == href for lk in doc["links"]):
            doc["links"].append({"rel": "child", "href": href, "type": "application/json"})
            self._write_json(CATALOG_KEY, doc)

    # -- items --------------------------------------------------------------------------------
    def _relative(self, from_key: str, href: str, what: str) -> str:
        key = self.store.key_of(href)
        if key is None:
            return href
        return posixpath.relpath(key, posixpath.dirname(from_key))

    def add_item(self, item: pystac.Item, collection_id: str) -> str:
        """Publish an item: check its assets, write its JSON, link it. Returns the item href.

        Every asset must lie in this store, exist, and (if given) match its ``file:size``.
        An existing item with the same id is replaced.
        """
        self.ensure_collection(collection_id)
        key = self.item_key(collection_id, item.id)
        doc = item.to_dict(include_self_link=False, transform_hrefs=False)
        doc["collection"] = collection_id

        for name, asset in item.assets.items():
            href = asset.get_absolute_href() or asset.href
            asset_key = self.store.key_of(href)
            where = f"asset {name!r} of item {item.id!r} (collection {collection_id!r})"
            if asset_key is None:
                raise CatalogError(
                    f"{where}: {href!r} is not inside store {self.store.url}; write it with the "
                    "store's writers (write_cog / write_geoparquet) first"
                )
            if not self.store.exists(asset_key):
                raise CatalogError(
                    f"{where}: {href!r} does not exist; write the data before the item"
                )
            expected = asset.extra_fields.get("file:size")
            if expected is not None:
                actual = self.store.size(asset_key)
                if actual != expected:
                    raise CatalogError(
                        f"{where}: {href!r} has {actual} bytes but file:size says {expected}; "
                        "it was overwritten or truncated, rewrite the asset"
                    )
            doc["assets"][name]["href"] = posixpath.relpath(asset_key, posixpath.dirname(key))

        links = [
            {**lk, "href": self._relative(key, lk["href"], "link")}
            for lk in doc.get("links", [])
            if lk.get("rel") not in _STRUCTURAL_RELS
        ]
        doc["links"] = [
            {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": "../collection.json", "type": "application/json"},
            {"rel": "collection", "href": "../collection.json", "type": "application/json"},
            *links,
        ]
        exts = set(doc.get("stac_extensions", [])) | set(extensions_for(doc))
        doc["stac_extensions"] = sorted(exts)
        self._write_json(key, doc)
        self._link_item(collection_id, doc)
        log.info("published STAC item %s", self.store.href(key))
        return self.store.href(key)

    def _link_item(self, collection_id: str, item_doc: Mapping[str, Any]) -> None:
        ckey = self.collection_key(collection_id)
        coll = self.read_json(ckey)
        item_id = item_doc["id"]
        href = f"./{item_id}/{item_id}.json"
        item_links = [lk for lk in coll["links"] if lk.get("rel") == "item"]
        first = not item_links
        if not any(lk["href"] == href for lk in item_links):
            coll["links"].append({"rel": "item", "href": href, "type": "application/geo+json"})
        bbox = list(item_doc.get("bbox") or [])
        props = item_doc.get("properties", {})
        start = props.get("start_datetime") or props.get("datetime")
        end = props.get("end_datetime") or props.get("datetime")
        extent = coll["extent"]
        if first:
            if len(bbox) == 4:
                extent["spatial"]["bbox"] = [bbox]
            extent["temporal"]["interval"] = [[start, end]]
        else:
            if len(bbox) == 4:
                extent["spatial"]["bbox"] = [_union_bbox([extent["spatial"]["bbox"][0], bbox])]
            lo, hi = extent["temporal"]["interval"][0]
            # ISO 8601 UTC strings of one format compare correctly as text.
            extent["temporal"]["interval"] = [
                [
                    min(x for x in (lo, start) if x) if (lo or start) else None,
                    max(x for x in (hi, end) if x) if (hi or end) else None,
                ]
            ]
        self._write_json(ckey, coll)

    def has_item(self, collection_id: str, item_id: str) -> bool:
        """True if the item JSON exists."""
        return self.store.exists(self.item_key(collection_id, item_id))

    def get_item(self, collection_id: str, item_id: str) -> pystac.Item | None:
        """The item (asset hrefs resolvable with ``get_absolute_href``), or None."""
        key = self.item_key(collection_id, item_id)
        if not self.store.exists(key):
            return None
        return pystac.Item.from_dict(self.read_json(key), href=self.store.href(key))

    def item_keys(self, collection_id: str) -> list[str]:
        """Store keys of every item JSON of a collection (``<collection>/<id>/<id>.json``)."""
        keys = []
        for key in self.store.list(collection_id + "/"):
            parts = key.split("/")
            if len(parts) == 3 and parts[2] == parts[1] + ".json":
                keys.append(key)
        return keys

    def items(self, collection_id: str) -> list[pystac.Item]:
        """Every item of a collection, sorted by datetime then id (listed from the store)."""
        found = [
            pystac.Item.from_dict(self.read_json(key), href=self.store.href(key))
            for key in self.item_keys(collection_id)
        ]

        def order(it: pystac.Item) -> tuple[str, str]:
            when = it.datetime or pystac.utils.str_to_datetime(
                it.properties.get("start_datetime", "1970-01-01T00:00:00Z")
            )
            return (when.isoformat(), it.id)

        return sorted(found, key=order)

    def is_complete(self, collection_id: str, item_id: str) -> bool:
        """True if the item exists and each asset exists with its recorded ``file:size``."""
        item = self.get_item(collection_id, item_id)
        if item is None:
            return False
        for asset in item.assets.values():
            key = self.store.key_of(asset.get_absolute_href() or asset.href)
            if key is None or not self.store.exists(key):
                return False
            size = asset.extra_fields.get("file:size")
            if size is not None and self.store.size(key) != size:
                return False
        return True

    def pystac_catalog(self) -> pystac.Catalog:
        """The root as a pystac Catalog reading through the store (works for ``s3://``)."""
        stac_io = StoreStacIO(self.store)
        cat = pystac.Catalog.from_file(self.store.href(CATALOG_KEY), stac_io=stac_io)
        return cat
