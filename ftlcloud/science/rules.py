"""Masking thresholds per iteration: Table 2's preset, ranges derived from known FTLs, a schedule.

Thresholds are data: they round-trip through JSON so that an iteration's thresholds can be published
next to its mask and replayed later. All ranges are inclusive at both ends (Table 2's convention).
Aspect ranges live in [0, 360], so flat cells (``FLAT_ASPECT`` = -1) are never inside any of them.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ftlcloud.errors import ConfigError, InputError
from ftlcloud.science.terrain import FLAT_ASPECT

logger = logging.getLogger(__name__)

#: |velocity| threshold per iteration (Table 2); iterations past the fifth keep the last value.
VELOCITY_SCHEDULE_MM_A: tuple[float, ...] = (50.0, 40.0, 30.0, 20.0, 10.0)
#: Half-width of the stable permafrost band (paper: -10..10 mm/a); the loop stops here.
STABLE_BAND_MM_A = 10.0
#: Fewest valid samples per factor derive_thresholds accepts; fewer give unstable percentiles.
MIN_DERIVE_SAMPLES = 30
#: Share below which an aspect sector is dropped as sparse (uniform over 16 sectors: 6.25 %).
DEFAULT_MIN_SECTOR_SHARE = 0.02
#: Accepted values of Thresholds.source.
SOURCES = ("table2", "derived", "explicit")

_FORMAT_VERSION = 1
_THRESHOLD_KEYS = frozenset(
    {
        "version",
        "iteration",
        "elevation_m",
        "slope_deg",
        "aspect_deg",
        "velocity_abs_min_mm_a",
        "source",
        "details",
    }
)


def _fmt(value: float) -> str:
    """Format a bound without a trailing '.0' (112.5 stays, 315.0 becomes 315)."""
    v = float(value)
    return str(int(v)) if v.is_integer() else repr(v)


@dataclass(frozen=True)
class Range:
    """An inclusive interval [low, high] of a factor's values."""

    low: float
    """Lower bound, inclusive."""
    high: float
    """Upper bound, inclusive."""

    def __post_init__(self) -> None:
        try:
            low, high = float(self.low), float(self.high)
        except (TypeError, ValueError) as err:
            raise ConfigError(
                f"Range bounds must be numbers, got low={self.low!r}, high={self.high!r}"
            ) from err
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ConfigError(f"Range bounds must be finite, got [{low}, {high}]")
        if low > high:
            raise ConfigError(f"Range low must be <= high, got [{low}, {high}]; swap the bounds")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def contains(self, values: np.ndarray | float) -> np.ndarray:
        """Elementwise low <= values <= high; NaN is outside."""
        v = np.asarray(values, dtype=np.float64)
        return (v >= self.low) & (v <= self.high)

    @property
    def label(self) -> str:
        """Human label like '3600–4000'."""
        return f"{_fmt(self.low)}–{_fmt(self.high)}"

    def to_list(self) -> list[float]:
        """[low, high], the JSON form."""
        return [self.low, self.high]

    @classmethod
    def parse(cls, value: Any, field_name: str) -> Range:
        """Build from [low, high], {"low": .., "high": ..} or a Range; errors name the field."""
        if isinstance(value, Range):
            return value
        try:
            if isinstance(value, Mapping):
                return cls(float(value["low"]), float(value["high"]))
            if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
                return cls(float(value[0]), float(value[1]))
        except ConfigError as err:
            raise ConfigError(f"thresholds field '{field_name}': {err}") from err
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(
                f"thresholds field '{field_name}' must be [low, high] numbers, got {value!r}"
            ) from err
        raise ConfigError(
            f"thresholds field '{field_name}' must be [low, high] or {{'low':..,'high':..}}, "
            f"got {value!r}"
        )


@dataclass(frozen=True)
class Thresholds:
    """The four single-factor masks of one iteration (a row of Table 2)."""

    iteration: int
    """Iteration number, 1-based."""
    elevation_m: Range
    """Elevation range in metres."""
    slope_deg: Range
    """Slope range in degrees (0..90)."""
    aspect_deg: tuple[Range, ...]
    """Union of aspect ranges in degrees, each within [0, 360]; 0 = north, clockwise."""
    velocity_abs_min_mm_a: float
    """Minimum |velocity| in mm/a (inclusive)."""
    source: str = "explicit"
    """How they were made: 'table2', 'derived' or 'explicit'."""
    details: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """JSON-serialisable provenance (percentiles, sample sizes, dropped aspect sectors, ...)."""

    def __post_init__(self) -> None:
        if isinstance(self.iteration, bool) or not isinstance(self.iteration, int | np.integer):
            raise ConfigError(
                f"thresholds field 'iteration' must be an integer, got {self.iteration!r}"
            )
        if self.iteration < 1:
            raise ConfigError(f"thresholds field 'iteration' must be >= 1, got {self.iteration}")
        object.__setattr__(self, "iteration", int(self.iteration))
        if not isinstance(self.elevation_m, Range):
            raise ConfigError("thresholds field 'elevation_m' must be a Range")
        if not isinstance(self.slope_deg, Range):
            raise ConfigError("thresholds field 'slope_deg' must be a Range")
        if self.slope_deg.low < 0 or self.slope_deg.high > 90:
            raise ConfigError(
                f"thresholds field 'slope_deg' must lie within [0, 90], got {self.slope_deg.label}"
            )
        aspect = tuple(self.aspect_deg)
        if not aspect or not all(isinstance(r, Range) for r in aspect):
            raise ConfigError("thresholds field 'aspect_deg' must be a non-empty list of ranges")
        for r in aspect:
            if r.low < 0 or r.high > 360:
                raise ConfigError(
                    f"thresholds field 'aspect_deg' ranges must lie within [0, 360], got "
                    f"{r.label}; "
                    "split a range crossing north into two (e.g. 315–360 and 0–45)"
                )
        object.__setattr__(self, "aspect_deg", aspect)
        try:
            vmin = float(self.velocity_abs_min_mm_a)
        except (TypeError, ValueError) as err:
            raise ConfigError(
                "thresholds field 'velocity_abs_min_mm_a' must be a number, "
                f"got {self.velocity_abs_min_mm_a!r}"
            ) from err
        if not math.isfinite(vmin) or vmin < 0:
            raise ConfigError(
                f"thresholds field 'velocity_abs_min_mm_a' must be finite and >= 0, got {vmin}"
            )
        object.__setattr__(self, "velocity_abs_min_mm_a", vmin)
        if self.source not in SOURCES:
            raise ConfigError(
                f"thresholds field 'source' must be one of {SOURCES}, got {self.source!r}"
            )
        if not isinstance(self.details, Mapping):
            raise ConfigError(f"thresholds field 'details' must be a mapping, got {self.details!r}")

    # -- membership -------------------------------------------------------------------------
    def aspect_contains(self, aspect_deg: np.ndarray | float) -> np.ndarray:
        """Elementwise: aspect inside the union of ranges. Flat cells (-1) and NaN are outside."""
        a = np.asarray(aspect_deg, dtype=np.float64)
        inside = np.zeros(a.shape, dtype=bool)
        for r in self.aspect_deg:
            inside |= r.contains(a)
        return inside

    def velocity_passes(self, velocity_mm_a: np.ndarray | float) -> np.ndarray:
        """Elementwise |velocity| >= velocity_abs_min_mm_a; NaN fails."""
        v = np.asarray(velocity_mm_a, dtype=np.float64)
        return np.abs(v) >= self.velocity_abs_min_mm_a

    # -- labels -----------------------------------------------------------------------------
    @property
    def aspect_label(self) -> str:
        """Human label like '0–112.5 & 135–360'."""
        return " & ".join(r.label for r in self.aspect_deg)

    def describe(self) -> str:
        """One line in Table 2's columns."""
        return (
            f"iteration {self.iteration}: elevation {self.elevation_m.label} m, "
            f"slope {self.slope_deg.label}°, aspect {self.aspect_label}°, "
            f"|velocity| ≥ {_fmt(self.velocity_abs_min_mm_a)} mm/a ({self.source})"
        )

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ranges as [low, high]."""
        return {
            "version": _FORMAT_VERSION,
            "iteration": self.iteration,
            "elevation_m": self.elevation_m.to_list(),
            "slope_deg": self.slope_deg.to_list(),
            "aspect_deg": [r.to_list() for r in self.aspect_deg],
            "velocity_abs_min_mm_a": self.velocity_abs_min_mm_a,
            "source": self.source,
            "details": _jsonable(dict(self.details)),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Thresholds:
        """Inverse of to_dict. 'source' defaults to 'explicit' and 'details' to {}."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"thresholds must be a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - _THRESHOLD_KEYS)
        if unknown:
            raise ConfigError(
                f"thresholds has unknown field(s) {unknown}; allowed: {sorted(_THRESHOLD_KEYS)}"
            )
        version = d.get("version", _FORMAT_VERSION)
        if version != _FORMAT_VERSION:
            raise ConfigError(
                f"thresholds field 'version' is {version!r}; this ftlcloud reads version "
                f"{_FORMAT_VERSION}"
            )
        for key in ("iteration", "elevation_m", "slope_deg", "aspect_deg", "velocity_abs_min_mm_a"):
            if key not in d:
                raise ConfigError(f"thresholds is missing field '{key}'")
        aspect_raw = d["aspect_deg"]
        if (
            isinstance(aspect_raw, Sequence)
            and not isinstance(aspect_raw, str)
            and len(aspect_raw) == 2
            and all(isinstance(v, int | float) for v in aspect_raw)
        ):
            aspect_raw = [aspect_raw]  # a single [low, high] is accepted as a one-range union
        if not isinstance(aspect_raw, Sequence) or isinstance(aspect_raw, str):
            raise ConfigError(
                f"thresholds field 'aspect_deg' must be a list of [low, high], got {aspect_raw!r}"
            )
        aspect = tuple(Range.parse(r, f"aspect_deg[{i}]") for i, r in enumerate(aspect_raw))
        iteration = d["iteration"]
        if isinstance(iteration, float) and iteration.is_integer():
            iteration = int(iteration)
        details = d.get("details", {})
        return cls(
            iteration=iteration,
            elevation_m=Range.parse(d["elevation_m"], "elevation_m"),
            slope_deg=Range.parse(d["slope_deg"], "slope_deg"),
            aspect_deg=aspect,
            velocity_abs_min_mm_a=d["velocity_abs_min_mm_a"],
            source=d.get("source", "explicit"),
            details=dict(details) if isinstance(details, Mapping) else details,
        )

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text of to_dict()."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Thresholds:
        """Inverse of to_json."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"thresholds JSON is malformed: {err}") from err
        return cls.from_dict(data)


def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays and tuples to JSON-native values, so round trips compare equal."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def velocity_threshold_for(iteration: int) -> float:
    """|velocity| threshold of the schedule for an iteration; past the fifth, the last value."""
    if iteration < 1:
        raise ConfigError(f"iteration must be >= 1, got {iteration}")
    return VELOCITY_SCHEDULE_MM_A[min(iteration, len(VELOCITY_SCHEDULE_MM_A)) - 1]


def _table2_row(
    iteration: int, elev_high: float, slope_high: float, aspect: tuple[tuple[float, float], ...]
) -> Thresholds:
    return Thresholds(
        iteration=iteration,
        elevation_m=Range(3600.0, elev_high),
        slope_deg=Range(1.0, slope_high),
        aspect_deg=tuple(Range(lo, hi) for lo, hi in aspect),
        velocity_abs_min_mm_a=VELOCITY_SCHEDULE_MM_A[iteration - 1],
        source="table2",
        details={"reference": "Wei et al. (2025), Table 2"},
    )


#: The paper's Table 2, iterations 1..5.
TABLE2: tuple[Thresholds, ...] = (
    _table2_row(1, 4000.0, 30.0, ((0.0, 315.0),)),
    _table2_row(2, 4100.0, 35.0, ((0.0, 315.0),)),
    _table2_row(3, 4200.0, 35.0, ((0.0, 315.0),)),
    _table2_row(4, 4300.0, 35.0, ((0.0, 315.0),)),
    _table2_row(5, 4400.0, 40.0, ((0.0, 112.5), (135.0, 360.0))),
)


def table2_thresholds(iteration: int) -> Thresholds:
    """The paper's Table 2 row for iteration 1..5."""
    if not 1 <= iteration <= len(TABLE2):
        raise ConfigError(
            f"Table 2 defines iterations 1–{len(TABLE2)}, got iteration {iteration}; "
            "use the 'derived' rules or an explicit schedule for more iterations"
        )
    return TABLE2[iteration - 1]


def _valid_samples(samples: Mapping[str, np.ndarray], key: str, min_samples: int) -> np.ndarray:
    if key not in samples:
        raise InputError(
            f"derive_thresholds needs samples of '{key}' at known FTL pixels; got keys "
            f"{sorted(samples)}"
        )
    values = np.asarray(samples[key], dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if key == "aspect_deg":
        # flat cells carry no direction; gdaldem's -1 (and any other out-of-range code) is dropped
        values = values[(values != FLAT_ASPECT) & (values >= 0.0) & (values <= 360.0)]
    if values.size < min_samples:
        raise InputError(
            f"derive_thresholds needs at least {min_samples} valid '{key}' samples at known FTL "
            f"pixels, got {values.size}; grow the inventory or use the 'table2' preset "
            "(rules='table2')"
        )
    return values


def _outward(
    values: np.ndarray, percentiles: tuple[float, float], step: float
) -> tuple[Range, list[float]]:
    p_lo, p_hi = (float(v) for v in np.percentile(values, percentiles))
    low = math.floor(p_lo / step) * step
    high = math.ceil(p_hi / step) * step
    return Range(low, high), [p_lo, p_hi]


def aspect_sector_ranges(
    aspect_deg: np.ndarray, sectors: int = 16, min_sector_share: float = DEFAULT_MIN_SECTOR_SHARE
) -> tuple[tuple[Range, ...], list[float], list[list[float]]]:
    """Kept aspect ranges, per-sector shares and dropped sectors from valid aspect samples.

    Sectors start at north (0°) and are 360/sectors wide. Adjacent kept sectors merge into one
    range; ranges stay within [0, 360], so kept sectors on both sides of north remain two ranges
    (e.g. '0–112.5 & 135–360'). The most populated sector is always kept.
    """
    width = 360.0 / sectors
    a = np.asarray(aspect_deg, dtype=np.float64)
    idx = np.clip(np.floor(a / width).astype(np.int64), 0, sectors - 1)
    counts = np.bincount(idx, minlength=sectors)
    shares = counts / max(int(counts.sum()), 1)
    keep = shares >= min_sector_share
    keep[int(np.argmax(counts))] = True
    ranges: list[Range] = []
    dropped: list[list[float]] = []
    start: int | None = None
    for i in range(sectors + 1):
        kept = i < sectors and bool(keep[i])
        if kept and start is None:
            start = i
        elif not kept and start is not None:
            ranges.append(Range(start * width, i * width))
            start = None
        if i < sectors and not keep[i]:
            dropped.append([i * width, (i + 1) * width])
    return tuple(ranges), [float(s) for s in shares], dropped


def derive_thresholds(
    samples: Mapping[str, np.ndarray],
    iteration: int,
    *,
    velocity_abs_min_mm_a: float | None = None,
    percentiles: tuple[float, float] = (5.0, 95.0),
    elevation_step_m: float = 100.0,
    slope_step_deg: float = 5.0,
    aspect_sectors: int = 16,
    min_sector_share: float = DEFAULT_MIN_SECTOR_SHARE,
    min_samples: int = MIN_DERIVE_SAMPLES,
) -> Thresholds:
    """Thresholds from the factor values at known FTL pixels (elevation_m, slope_deg, aspect_deg).

    Elevation and slope: the [p_low, p_high] percentile range rounded outward to the step.
    Aspect: sectors of 360/aspect_sectors degrees whose share of samples is below
    min_sector_share are dropped; flat cells and NaN are ignored. |velocity| comes from
    VELOCITY_SCHEDULE_MM_A unless velocity_abs_min_mm_a is given.
    """
    p_lo, p_hi = (float(p) for p in percentiles)
    if not 0.0 <= p_lo < p_hi <= 100.0:
        raise ConfigError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    if elevation_step_m <= 0 or slope_step_deg <= 0:
        raise ConfigError(
            f"elevation_step_m and slope_step_deg must be > 0, got {elevation_step_m}, "
            f"{slope_step_deg}"
        )
    if aspect_sectors < 1 or not 0.0 <= min_sector_share < 1.0:
        raise ConfigError(
            f"aspect_sectors must be >= 1 and min_sector_share in [0, 1), got {aspect_sectors}, "
            f"{min_sector_share}"
        )
    elevation = _valid_samples(samples, "elevation_m", min_samples)
    slope = _valid_samples(samples, "slope_deg", min_samples)
    aspect = _valid_samples(samples, "aspect_deg", min_samples)

    elev_range, elev_p = _outward(elevation, (p_lo, p_hi), elevation_step_m)
    slope_range, slope_p = _outward(slope, (p_lo, p_hi), slope_step_deg)
    slope_range = Range(max(slope_range.low, 0.0), min(slope_range.high, 90.0))
    aspect_ranges, shares, dropped = aspect_sector_ranges(aspect, aspect_sectors, min_sector_share)
    if velocity_abs_min_mm_a is None:
        vmin = velocity_threshold_for(iteration)
        velocity_from = "schedule"
    else:
        vmin = float(velocity_abs_min_mm_a)
        velocity_from = "argument"
    details = {
        "percentiles": [p_lo, p_hi],
        "n_samples": {
            "elevation_m": int(elevation.size),
            "slope_deg": int(slope.size),
            "aspect_deg": int(aspect.size),
        },
        "elevation_m_percentile_values": elev_p,
        "slope_deg_percentile_values": slope_p,
        "elevation_step_m": float(elevation_step_m),
        "slope_step_deg": float(slope_step_deg),
        "aspect_sectors": int(aspect_sectors),
        "min_sector_share": float(min_sector_share),
        "aspect_sector_shares": shares,
        "dropped_aspect_sectors": dropped,
        "velocity_from": velocity_from,
    }
    thresholds = Thresholds(
        iteration=iteration,
        elevation_m=elev_range,
        slope_deg=slope_range,
        aspect_deg=aspect_ranges,
        velocity_abs_min_mm_a=vmin,
        source="derived",
        details=details,
    )
    logger.info("derived %s", thresholds.describe())
    return thresholds


@dataclass(frozen=True)
class Rules:
    """How each iteration gets its thresholds: 'table2', 'derived' or an 'explicit' schedule."""

    mode: str
    """'table2', 'derived' or 'explicit'."""
    schedule: tuple[Thresholds, ...] = ()
    """The explicit schedule (mode 'explicit'), one entry per iteration."""
    derive_options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """Keyword arguments for derive_thresholds (mode 'derived')."""

    @property
    def max_iteration(self) -> int | None:
        """Last iteration these rules define (None: unbounded)."""
        if self.mode == "table2":
            return len(TABLE2)
        if self.mode == "explicit":
            return max(t.iteration for t in self.schedule)
        return None

    def thresholds_for(
        self, iteration: int, samples: Mapping[str, np.ndarray] | None = None
    ) -> Thresholds:
        """Thresholds of an iteration; samples (factor values at known FTLs) for 'derived'."""
        if self.mode == "table2":
            return table2_thresholds(iteration)
        if self.mode == "explicit":
            for t in self.schedule:
                if t.iteration == iteration:
                    return t
            raise ConfigError(
                f"the explicit rules schedule defines iterations "
                f"{sorted(t.iteration for t in self.schedule)}, not {iteration}; add it to the "
                "schedule file"
            )
        if samples is None:
            raise InputError(
                "derived rules need samples (factor values at the inventory's pixels); "
                "pass samples=... or use the 'table2' preset"
            )
        return derive_thresholds(samples, iteration, **dict(self.derive_options))

    __call__ = thresholds_for


def _schedule_from(data: Any, origin: str) -> Rules:
    if isinstance(data, Mapping) and "schedule" in data:
        data = data["schedule"]
    if isinstance(data, Mapping | Thresholds):
        data = [data]
    if not isinstance(data, Sequence) or isinstance(data, str) or not data:
        raise ConfigError(f"rules {origin} must be a non-empty list of thresholds objects")
    schedule: list[Thresholds] = []
    for i, entry in enumerate(data):
        if isinstance(entry, Thresholds):
            schedule.append(entry)
            continue
        try:
            schedule.append(Thresholds.from_dict(entry))
        except ConfigError as err:
            raise ConfigError(f"rules {origin}, entry {i}: {err}") from err
    iterations = [t.iteration for t in schedule]
    if len(set(iterations)) != len(iterations):
        raise ConfigError(f"rules {origin} repeats an iteration: {iterations}")
    return Rules("explicit", tuple(sorted(schedule, key=lambda t: t.iteration)))


def parse_rules(
    spec: str | Path | Rules | Sequence[Any] | Mapping[str, Any],
    *,
    derive_options: Mapping[str, Any] | None = None,
) -> Rules:
    """Rules from 'table2', 'derived', a local JSON file path, JSON text, or a list of thresholds.

    A schedule is a JSON list of thresholds objects (or {"schedule": [...]}); a missing 'source'
    is 'explicit'. Read remote files through the store first and pass the parsed list.
    """
    if isinstance(spec, Rules):
        return spec
    if isinstance(spec, Path | str):
        text = str(spec).strip()
        if text.lower() == "table2":
            return Rules("table2")
        if text.lower() == "derived":
            return Rules("derived", derive_options=dict(derive_options or {}))
        if text.startswith(("[", "{")):
            try:
                return _schedule_from(json.loads(text), "JSON text")
            except json.JSONDecodeError as err:
                raise ConfigError(f"rules JSON text is malformed: {err}") from err
        if "://" in text:
            raise ConfigError(
                f"rules {text!r}: only local paths are read here; load the file from the store "
                "and pass its parsed content"
            )
        path = Path(text)
        if not path.is_file():
            raise ConfigError(
                f"rules {text!r} is not 'table2', 'derived', JSON text or an existing JSON file"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"rules file {path} cannot be read as JSON: {err}") from err
        return _schedule_from(data, f"file {path}")
    return _schedule_from(spec, "argument")
