"""The Python API a notebook user calls, and the CLI wraps: factors, one iteration, review.

Publish order everywhere: data objects first under the run's immutable keys, each validated, then
the STAC item last; a rerun skips an item that is complete (every asset present with its size).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd

from ftlcloud.errors import CatalogError, FtlError, InputError, RunError, StoreError
from ftlcloud.io.catalog import Catalog, build_item
from ftlcloud.io.cog import AssetInfo, multihash_sha256, validate_cog
from ftlcloud.io.geoparquet import read_geoparquet, write_geoparquet
from ftlcloud.io.settings import redact
from ftlcloud.io.store import Store, clear_gdal_http_cache
from ftlcloud.pipeline.cluster import ClusterSpec, connect
from ftlcloud.pipeline.factors import (
    FACTOR_NAMES,
    assemble_factor_cogs,
    compute_factor_tiles,
)
from ftlcloud.pipeline.grid import GridSpec
from ftlcloud.pipeline.iteration import mask_and_vectorise, sample_factors
from ftlcloud.pipeline.load import close_cached_datasets, discover_inputs, lazy_layers
from ftlcloud.pipeline.run import (
    FactorSettings,
    RunManifest,
    RunPaths,
    check_run_id,
    ensure_manifest,
    run_lock,
)
from ftlcloud.science.rules import Rules, Thresholds

log = logging.getLogger(__name__)

FACTORS_COLLECTION = "ftl-factors"
ITERATIONS_COLLECTION = "ftl-iterations"
INVENTORIES_COLLECTION = "ftl-inventories"
INPUT_INVENTORY_COLLECTION = "inventory"
JSON_MEDIA_TYPE = "application/json"


def factors_item_id(run_id: str) -> str:
    return f"{run_id}-factors"


def iteration_item_id(run_id: str, k: int) -> str:
    return f"{run_id}-it{k:02d}"


def inventory_item_id(run_id: str, k: int) -> str:
    return f"{run_id}-inventory-{k:02d}"


@dataclass(frozen=True)
class InventoryRef:
    """Where an inventory lives in the catalog."""

    collection: str
    item_id: str


@dataclass
class FactorsResult:
    """Summary of the factor stage."""

    run_id: str
    item_href: str
    tiles_total: int
    tiles_computed: int
    pixels: int
    fitted_pixels: int
    seconds: float
    skipped: bool = False


@dataclass
class IterationResult:
    """Summary of one iteration."""

    run_id: str
    iteration: int
    item_href: str
    thresholds: Thresholds
    n_candidates: int
    candidates: gpd.GeoDataFrame
    seconds: float
    skipped: bool = False
    counts: dict[str, int] = field(default_factory=dict)


def write_json_asset(store: Store, key: str, doc: Any) -> AssetInfo:
    """Write a JSON document and describe it as an asset."""
    data = json.dumps(doc, indent=2, sort_keys=True).encode()
    store.write_bytes(key, data)
    return AssetInfo(
        href=store.href(key),
        key=key,
        media_type=JSON_MEDIA_TYPE,
        checksum=multihash_sha256(data),
        size=len(data),
    )


def _check_cogs(store: Store, assets: Mapping[str, AssetInfo]) -> None:
    for name, info in assets.items():
        if info.media_type.startswith("image/tiff"):
            ok, errors, _ = validate_cog(store, info.key)
            if not ok:
                raise RunError(
                    f"asset {name!r} at {info.href} is not a valid COG ({'; '.join(errors)}); "
                    "nothing was published; rerun to rewrite it"
                )


@contextlib.contextmanager
def _stage(run_id: str, what: str) -> Iterator[None]:
    """Turn any failure of a stage into an ftlcloud error that says nothing was published.

    Data objects already written (finished tiles) stay: they are complete, since every store
    write is atomic, and a rerun skips them.
    """
    after = (
        f"{what} of run {run_id!r} stopped and published nothing; finished tiles are kept, so "
        "rerunning the same command resumes"
    )
    try:
        yield
    except StoreError as err:
        raise StoreError(f"{err} — {after} once the store is reachable again") from err
    except FtlError:
        raise
    except Exception as err:
        detail = redact(f"{type(err).__name__}: {err}")
        raise RunError(f"{after} after fixing the cause ({detail})") from err


def _forget_reads() -> None:
    close_cached_datasets()
    clear_gdal_http_cache()


def _fresh_gdal_cache(client: Any) -> None:
    """Close the datasets kept open and clear GDAL's HTTP cache, here and on every worker (a
    rerun after an outage must not see the failures cached while the store was down, nor a
    re-ingested input through a handle opened before)."""
    _forget_reads()
    client.run(_forget_reads)


def _manifest(store: Store, run_id: str) -> RunManifest:
    paths = RunPaths(run_id)
    if not store.exists(paths.manifest):
        raise RunError(
            f"run {run_id!r} has no factors in {store.url}; run `ftlcloud factors --run-id {run_id}` "
            "(or `ftlcloud iterate`) first"
        )
    return RunManifest.from_json(store.read_text(paths.manifest))


def compute_factors(
    store: Store,
    run_id: str,
    *,
    settings: FactorSettings | None = None,
    cluster: ClusterSpec | None = None,
    grid: GridSpec | None = None,
    progress: bool = True,
) -> FactorsResult:
    """Compute every factor once for a run, write the factor COGs, publish the factors item."""
    check_run_id(run_id)
    settings = settings or FactorSettings()
    with run_lock(store, run_id) as lock, _stage(run_id, "the factor stage"):
        return _compute_factors(store, run_id, settings, cluster, grid, progress, lock.verify)


def _compute_factors(
    store: Store,
    run_id: str,
    settings: FactorSettings,
    cluster: ClusterSpec | None,
    grid: GridSpec | None,
    progress: bool,
    verify_lock: Callable[[], None],
) -> FactorsResult:
    start = time.perf_counter()
    catalog = Catalog(store)
    inputs = discover_inputs(
        catalog, ndvi_years=settings.ndvi_years, grid=grid, min_dates=settings.min_valid_dates
    )
    manifest = ensure_manifest(store, RunManifest(run_id, settings, inputs.grid, inputs.item_refs))
    item_id = factors_item_id(run_id)
    if catalog.is_complete(FACTORS_COLLECTION, item_id):
        log.info("factors of run %s are complete; nothing to do", run_id)
        return FactorsResult(
            run_id, catalog.item_href(FACTORS_COLLECTION, item_id), 0, 0, 0, 0, 0.0, skipped=True
        )
    paths = RunPaths(run_id)
    grid = manifest.grid
    with connect(cluster) as client:
        _fresh_gdal_cache(client)
        layers = lazy_layers(inputs, settings.tile_size, store.gdal_env())
        stats = compute_factor_tiles(
            client, store, paths, grid, layers, inputs.dates, settings, progress=progress
        )
        cogs = assemble_factor_cogs(client, store, paths, grid, settings, progress=progress)
    _check_cogs(store, cogs)
    first, last = inputs.dates[0], inputs.dates[-1]
    item = build_item(
        item_id,
        cogs,
        start_datetime=dt.datetime.combine(first, dt.time(), dt.UTC),
        end_datetime=dt.datetime.combine(last, dt.time(), dt.UTC),
        properties={
            "ftl:run_id": run_id,
            "ftl:tile_size": settings.tile_size,
            "ftl:min_valid_dates": settings.min_valid_dates,
            "ftl:period_years": settings.period_years,
            "ftl:n_dates": len(inputs.dates),
            "ftl:factors": list(FACTOR_NAMES),
            "ftl:seasonal_amplitude": "peak-to-peak, A = 2*sqrt(c^2+d^2) (Eq. 2)",
        },
        derived_from=[catalog.item_href(c, i) for c, i in inputs.item_refs],
    )
    verify_lock()
    href = catalog.add_item(item, FACTORS_COLLECTION)
    tiles = grid.tiles(settings.tile_size)
    result = FactorsResult(
        run_id=run_id,
        item_href=href,
        tiles_total=len(tiles),
        tiles_computed=len(stats),
        pixels=grid.width * grid.height,
        fitted_pixels=sum(int(s["fitted_pixels"]) for s in stats),  # type: ignore[call-overload]
        seconds=time.perf_counter() - start,
    )
    log.info(
        "factor stage of run %s published: %d of %d tiles computed, %d pixels, %.1f s",
        run_id,
        result.tiles_computed,
        result.tiles_total,
        result.pixels,
        result.seconds,
        extra={"stage": "factors", **_log_fields(result)},
    )
    return result


def initial_inventory_ref(catalog: Catalog, name: str | None = None) -> InventoryRef:
    """The ingested inventory to start from: ``inventory-<name>``, or the only/newest one."""
    if name is not None:
        item_id = name if name.startswith("inventory-") else f"inventory-{name}"
        if not catalog.has_item(INPUT_INVENTORY_COLLECTION, item_id):
            raise CatalogError(
                f"no inventory item {item_id!r} in collection {INPUT_INVENTORY_COLLECTION!r}; "
                "ingest it with `ftlcloud ingest inventory`"
            )
        return InventoryRef(INPUT_INVENTORY_COLLECTION, item_id)
    items = catalog.items(INPUT_INVENTORY_COLLECTION)
    if not items:
        raise CatalogError(
            "the catalog has no inventory; ingest the known FTL inventory first "
            "(`ftlcloud ingest inventory PATH`)"
        )
    return InventoryRef(INPUT_INVENTORY_COLLECTION, items[-1].id)


def read_inventory(store: Store, catalog: Catalog, ref: InventoryRef) -> gpd.GeoDataFrame:
    """The inventory GeoDataFrame behind a catalog item."""
    item = catalog.get_item(ref.collection, ref.item_id)
    if item is None:
        raise CatalogError(f"inventory item {ref.item_id!r} is missing from {ref.collection!r}")
    asset = item.assets.get("inventory")
    if asset is None:
        raise CatalogError(f"inventory item {ref.item_id!r} has no 'inventory' asset")
    key = store.key_of(asset.get_absolute_href() or asset.href)
    if key is None:
        raise CatalogError(f"inventory item {ref.item_id!r}: asset outside the store")
    return read_geoparquet(store, key)


def inventory_for_iteration(
    store: Store, run_id: str, k: int, initial: InventoryRef
) -> InventoryRef:
    """Iteration 1 starts from the ingested inventory; iteration k from the run's inventory k."""
    if k == 1:
        return initial
    ref = InventoryRef(INVENTORIES_COLLECTION, inventory_item_id(run_id, k))
    if not Catalog(store).has_item(ref.collection, ref.item_id):
        raise RunError(
            f"iteration {k} of run {run_id!r} needs inventory {k} (the reviewed result of iteration "
            f"{k - 1}); apply the decisions of iteration {k - 1} first (`ftlcloud review apply`)"
        )
    return ref


def run_iteration(
    store: Store,
    run_id: str,
    k: int,
    *,
    rules: Rules,
    inventory: InventoryRef,
    cluster: ClusterSpec | None = None,
    min_area_ha: float = 0.0,
    progress: bool = True,
) -> IterationResult:
    """Thresholds from the rules and inventory k, masks per tile, candidates; publish the item."""
    check_run_id(run_id)
    if k < 1:
        raise InputError(f"iteration numbers start at 1, got {k}")
    with run_lock(store, run_id) as lock, _stage(run_id, f"iteration {k}"):
        return _run_iteration(
            store, run_id, k, rules, inventory, cluster, min_area_ha, progress, lock.verify
        )


def _run_iteration(
    store: Store,
    run_id: str,
    k: int,
    rules: Rules,
    inventory: InventoryRef,
    cluster: ClusterSpec | None,
    min_area_ha: float,
    progress: bool,
    verify_lock: Callable[[], None],
) -> IterationResult:
    start = time.perf_counter()
    catalog = Catalog(store)
    manifest = _manifest(store, run_id)
    if not catalog.is_complete(FACTORS_COLLECTION, factors_item_id(run_id)):
        raise RunError(f"the factors of run {run_id!r} are incomplete; rerun the factor stage")
    item_id = iteration_item_id(run_id, k)
    paths = RunPaths(run_id)
    if catalog.is_complete(ITERATIONS_COLLECTION, item_id):
        item = catalog.get_item(ITERATIONS_COLLECTION, item_id)
        assert item is not None
        cands = read_geoparquet(store, paths.iteration(k, "candidates.parquet"))
        return IterationResult(
            run_id,
            k,
            catalog.item_href(ITERATIONS_COLLECTION, item_id),
            Thresholds.from_dict(item.properties["ftl:thresholds"]),
            len(cands),
            cands,
            0.0,
            skipped=True,
        )
    inv = read_inventory(store, catalog, inventory)
    grid = manifest.grid
    with connect(cluster) as client:
        _fresh_gdal_cache(client)
        tile_size = manifest.settings.tile_size
        samples = (
            sample_factors(client, store, paths, grid, tile_size, inv)
            if rules.mode == "derived"
            else None
        )
        thresholds = rules.thresholds_for(k, samples)
        log.info("iteration %d thresholds: %s", k, thresholds.describe())
        out = mask_and_vectorise(
            client,
            store,
            paths,
            k,
            grid,
            manifest.settings.tile_size,
            thresholds,
            inv,
            min_area_ha=min_area_ha,
            progress=progress,
        )
    assets: dict[str, AssetInfo] = {"mask": out.mask}
    assets["candidates"] = write_geoparquet(
        store, paths.iteration(k, "candidates.parquet"), out.candidates
    )
    assets["thresholds"] = write_json_asset(
        store, paths.iteration(k, "thresholds.json"), thresholds.to_dict()
    )
    _check_cogs(store, assets)
    item = build_item(
        item_id,
        assets,
        datetime=dt.datetime.now(dt.UTC).replace(microsecond=0),
        properties={
            "ftl:run_id": run_id,
            "ftl:iteration": k,
            "ftl:thresholds": thresholds.to_dict(),
            "ftl:thresholds_label": thresholds.describe(),
            "ftl:n_candidates": len(out.candidates),
            "ftl:n_candidate_pixels": out.pixels_in_overlap,
            "ftl:inventory": inventory.item_id,
            "ftl:status": "awaiting-review",
        },
        roles={"mask": ("data",), "candidates": ("data",), "thresholds": ("metadata",)},
        derived_from=[
            catalog.item_href(FACTORS_COLLECTION, factors_item_id(run_id)),
            catalog.item_href(inventory.collection, inventory.item_id),
        ],
    )
    verify_lock()
    href = catalog.add_item(item, ITERATIONS_COLLECTION)
    result = IterationResult(
        run_id,
        k,
        href,
        thresholds,
        len(out.candidates),
        out.candidates,
        time.perf_counter() - start,
    )
    log.info(
        "iteration %d of run %s published: %d candidates, %.1f s",
        k,
        run_id,
        result.n_candidates,
        result.seconds,
        extra={"stage": "iteration", **_log_fields(result)},
    )
    return result


def _log_fields(result: FactorsResult | IterationResult) -> dict[str, Any]:
    """The scalar fields of a stage result, for structured (``--log-format json``) log lines."""
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    return {k: v for k, v in fields.items() if isinstance(v, str | int | float | bool)}


def read_candidates(store: Store, run_id: str, k: int) -> gpd.GeoDataFrame:
    """The candidates of a published iteration."""
    catalog = Catalog(store)
    if not catalog.is_complete(ITERATIONS_COLLECTION, iteration_item_id(run_id, k)):
        raise RunError(f"iteration {k} of run {run_id!r} is not published; run it first")
    return read_geoparquet(store, RunPaths(run_id).iteration(k, "candidates.parquet"))


def publish_review(
    store: Store,
    run_id: str,
    k: int,
    decisions: gpd.GeoDataFrame,
    *,
    initial: InventoryRef,
    extra_properties: Mapping[str, Any] | None = None,
) -> tuple[InventoryRef, dict[str, int]]:
    """Apply decisions to iteration k: publish inventory k+1 = inventory k ∪ accepted.

    The decisions and inventory GeoParquet are written first, then inventory k+1's item, then the
    iteration item is republished with the review counts and a link to its decisions.
    """
    with run_lock(store, run_id) as lock, _stage(run_id, f"the review of iteration {k}"):
        return _publish_review(store, run_id, k, decisions, initial, extra_properties, lock.verify)


def _publish_review(
    store: Store,
    run_id: str,
    k: int,
    decisions: gpd.GeoDataFrame,
    initial: InventoryRef,
    extra_properties: Mapping[str, Any] | None,
    verify_lock: Callable[[], None],
) -> tuple[InventoryRef, dict[str, int]]:
    from ftlcloud.review.decisions import apply_decisions, validate_decisions

    catalog = Catalog(store)
    paths = RunPaths(run_id)
    candidates = read_candidates(store, run_id, k)
    inv_ref = inventory_for_iteration(store, run_id, k, initial)
    inventory = read_inventory(store, catalog, inv_ref)
    decisions = validate_decisions(decisions, candidates)
    new_inventory, counts = apply_decisions(inventory, candidates, decisions, iteration=k)
    decisions_info = write_geoparquet(store, paths.iteration(k, "decisions.parquet"), decisions)
    inv_info = write_geoparquet(store, paths.inventory(k + 1), new_inventory)
    next_ref = InventoryRef(INVENTORIES_COLLECTION, inventory_item_id(run_id, k + 1))
    inv_item = build_item(
        next_ref.item_id,
        {"inventory": inv_info},
        datetime=dt.datetime.now(dt.UTC).replace(microsecond=0),
        properties={
            "ftl:run_id": run_id,
            "ftl:iteration": k + 1,
            "ftl:n_ftls": len(new_inventory),
            "ftl:new_ftls": counts.new_ftls,
        },
        derived_from=[
            catalog.item_href(inv_ref.collection, inv_ref.item_id),
            catalog.item_href(ITERATIONS_COLLECTION, iteration_item_id(run_id, k)),
        ],
    )
    verify_lock()
    catalog.add_item(inv_item, INVENTORIES_COLLECTION)
    it_item = catalog.get_item(ITERATIONS_COLLECTION, iteration_item_id(run_id, k))
    assert it_item is not None
    it_item.make_asset_hrefs_absolute()
    it_item.add_asset(
        "decisions", decisions_info.to_asset(roles=("metadata",), title="review decisions")
    )
    it_item.properties.update(
        {
            "ftl:status": "reviewed",
            "ftl:n_accepted": counts.accepted,
            "ftl:n_rejected": counts.rejected,
            "ftl:n_added": counts.added,
            "ftl:n_undecided": counts.undecided,
            "ftl:new_ftls": counts.new_ftls,
            "ftl:next_inventory": next_ref.item_id,
            **(extra_properties or {}),
        }
    )
    catalog.add_item(it_item, ITERATIONS_COLLECTION)
    return next_ref, counts.as_dict()
