"""A run: its id, its settings, its keys in the store, and its manifest."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ftlcloud.errors import InputError, RunError
from ftlcloud.io.store import Store
from ftlcloud.pipeline.grid import DEFAULT_TILE_SIZE, GridSpec, Tile

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_run_id(run_id: str) -> str:
    """A run id becomes part of store keys: letters, digits, ``.``, ``_``, ``-`` only."""
    if not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise InputError(
            f"run id {run_id!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return run_id


@dataclass(frozen=True)
class FactorSettings:
    """Settings that change the factors; a run id is bound to one set of them."""

    tile_size: int = DEFAULT_TILE_SIZE
    """Tile edge in pixels: the unit of work and of memory per worker."""
    min_valid_dates: int = 10
    """Pixels with fewer valid dates are left NaN by the seasonal fit."""
    period_years: float = 1.0
    """Seasonal period T of Eq. 1 (the freeze-thaw cycle)."""
    ndvi_years: tuple[int, int] | None = None
    """(earlier, later) NDVI years for ΔNDVI; default: the first and last in the catalog."""

    def __post_init__(self) -> None:
        if not 16 <= self.tile_size <= 8192:
            raise InputError(f"tile_size {self.tile_size} is outside 16..8192 pixels")
        if self.min_valid_dates < 5:
            raise InputError(
                f"min_valid_dates {self.min_valid_dates} is too small: Eq. 1 has 4 unknowns"
                " and needs at least 5 dates to estimate its uncertainty"
            )
        if self.period_years <= 0:
            raise InputError(f"period_years must be positive, got {self.period_years}")


@dataclass(frozen=True)
class RunPaths:
    """Store keys of one run; all under ``runs/<run_id>/`` (immutable run keys)."""

    run_id: str

    @property
    def prefix(self) -> str:
        return f"runs/{self.run_id}"

    @property
    def manifest(self) -> str:
        return f"{self.prefix}/run.json"

    @property
    def lock(self) -> str:
        return f"{self.prefix}/run.lock"

    def factor_tile(self, tile: Tile) -> str:
        return f"{self.prefix}/factors/tiles/{tile.tile_id}.tif"

    def factor_cog(self, name: str) -> str:
        return f"{self.prefix}/factors/{name}.tif"

    def iteration(self, k: int, name: str) -> str:
        return f"{self.prefix}/iterations/{k:02d}/{name}"

    def mask_tile(self, k: int, tile: Tile) -> str:
        return self.iteration(k, f"tiles/{tile.tile_id}.tif")

    def inventory(self, k: int) -> str:
        return f"{self.prefix}/inventories/inventory-{k:02d}.parquet"


@dataclass(frozen=True)
class RunManifest:
    """What a run was started with; a rerun with other settings under the same id is refused."""

    run_id: str
    settings: FactorSettings
    grid: GridSpec
    inputs: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> str:
        d: dict[str, Any] = {
            "run_id": self.run_id,
            "settings": asdict(self.settings),
            "grid": self.grid.to_dict(),
            "inputs": [list(r) for r in self.inputs],
        }
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunManifest:
        d = json.loads(text)
        s = d["settings"]
        if s.get("ndvi_years") is not None:
            s["ndvi_years"] = tuple(s["ndvi_years"])
        return cls(
            run_id=d["run_id"],
            settings=FactorSettings(**s),
            grid=GridSpec.from_dict(d["grid"]),
            inputs=[tuple(r) for r in d["inputs"]],
        )


def ensure_manifest(store: Store, manifest: RunManifest) -> RunManifest:
    """Write the manifest of a new run, or check that an existing run has the same settings."""
    paths = RunPaths(manifest.run_id)
    if store.exists(paths.manifest):
        existing = RunManifest.from_json(store.read_text(paths.manifest))
        if existing.to_json() != manifest.to_json():
            raise RunError(
                f"run {manifest.run_id!r} already exists in {store.url} with other settings or inputs; "
                "resume it with the same settings or start a new run with another --run-id"
            )
        return existing
    store.write_text(paths.manifest, manifest.to_json())
    return manifest
