"""Reviewer decisions on FTL candidates, and inventory k+1 = inventory k ∪ accepted (∪ added).

Pure and store-free: the functions here read and write local files only (decisions files, the
QGIS review GeoPackage); publishing inventories to the store and catalog is the pipeline's job.

A decisions table (what :func:`read_decisions`, :func:`validate_decisions` and
:func:`reference_decisions` return) is a GeoDataFrame with the columns

``candidate_id``  the candidate decided (``None`` for an ``add``),
``decision``      ``"accept"``, ``"reject"`` or ``"add"``,
``note``          the reviewer's free text (``""`` when none),
``row``           the 1-based data row in the source file (for error messages),
``geometry``      an edited boundary for ``accept`` (``None`` = keep the candidate's), the new
                  FTL for ``add`` (required), ignored for ``reject``.

Undecided candidates are simply absent (a row with an empty ``decision`` is undecided).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from ftlcloud.errors import InputError

logger = logging.getLogger(__name__)

#: Decisions on a candidate.
DECISIONS: tuple[str, ...] = ("accept", "reject")
#: Every decision value, including ``add`` for an FTL the method missed (geometry required).
ALL_DECISIONS: tuple[str, ...] = (*DECISIONS, "add")

# Friendly but strict: case and whitespace are ignored and the past tense is understood, because
# people type "Accepted"; single letters or yes/no are not, because "y"/"n" are ambiguous for add.
_ALIASES: dict[str, str] = {
    "accept": "accept",
    "accepted": "accept",
    "reject": "reject",
    "rejected": "reject",
    "add": "add",
    "added": "add",
}

#: Columns of a decisions table, in order.
DECISION_COLUMNS: tuple[str, ...] = ("candidate_id", "decision", "note", "row", "geometry")

#: Layer name of the review GeoPackage written by :func:`export_review_gpkg`.
REVIEW_LAYER = "candidates"

# How many individual problems one error message lists before summarising the rest.
_MAX_LISTED = 20

_POLYGONAL = ("Polygon", "MultiPolygon")


@dataclass(frozen=True)
class Decision:
    """One reviewer decision."""

    candidate_id: str | None
    """The candidate decided; ``None`` for ``add``."""
    decision: str
    """``accept``, ``reject`` or ``add``."""
    geometry: BaseGeometry | None = None
    """Edited boundary for ``accept`` (``None`` keeps the candidate's); required for ``add``."""
    note: str = ""
    """Free text: why, what was checked, the matched reference FTL."""


@dataclass(frozen=True)
class DecisionCounts:
    """What one round of decisions did (recorded in the iteration's STAC item)."""

    candidates: int
    """Candidates of the iteration."""
    accepted: int
    """Candidates accepted."""
    rejected: int
    """Candidates rejected."""
    added: int
    """FTLs added by the reviewer that were not candidates."""
    undecided: int
    """Candidates with no decision."""
    new_ftls: int
    """Rows appended to the inventory (accepted + added, minus those merged into known FTLs)."""

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict (for JSON / STAC properties)."""
        return asdict(self)


def decisions_frame(
    decisions: Iterable[Decision], *, crs: Any = None, source: str = "decisions"
) -> gpd.GeoDataFrame:
    """A decisions table from :class:`Decision` objects (rows numbered from 1)."""
    records = [
        {
            "candidate_id": d.candidate_id,
            "decision": d.decision,
            "note": d.note,
            "row": i,
            "geometry": d.geometry,
        }
        for i, d in enumerate(decisions, start=1)
    ]
    return _finish_frame(pd.DataFrame(records, columns=list(DECISION_COLUMNS)), crs, source)


def read_decisions(
    path: str | Path, *, layer: str | None = None, crs: Any = None
) -> gpd.GeoDataFrame:
    """Read a decisions file: CSV, GeoJSON, GeoPackage or GeoParquet (by suffix).

    Columns ``candidate_id`` and ``decision`` are required, ``note`` and a geometry are optional;
    a CSV may carry geometries as WKT in a ``wkt`` or ``geometry`` column, in the CRS given by
    ``crs`` (a CSV has no CRS of its own). Decision values are normalised (case, whitespace,
    past tense); a row with an empty decision is undecided and dropped. ``layer`` picks the
    GeoPackage layer (default: the review layer ``candidates`` if present, else the only layer).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"decisions file '{path}' does not exist; check the path.")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".txt"):
            frame = _read_csv(path, crs)
        elif suffix in (".geojson", ".json"):
            frame = gpd.read_file(path)
        elif suffix == ".gpkg":
            frame = gpd.read_file(path, layer=_pick_layer(path, layer))
        elif suffix in (".parquet", ".geoparquet"):
            frame = _read_parquet(path)
        else:
            raise InputError(
                f"decisions file '{path}' has an unknown suffix '{path.suffix}'; use .csv, "
                ".geojson, .gpkg or .parquet."
            )
    except InputError:
        raise
    except Exception as err:
        raise InputError(
            f"decisions file '{path}' cannot be read as {suffix.lstrip('.')}: {err}"
        ) from err
    return _normalise(frame, str(path))


def _pick_layer(path: Path, layer: str | None) -> str:
    import pyogrio

    names = [str(row[0]) for row in pyogrio.list_layers(path)]
    if layer is not None:
        if layer not in names:
            raise InputError(
                f"decisions file '{path}' has no layer '{layer}' (layers: {', '.join(names)})."
            )
        return layer
    if REVIEW_LAYER in names:
        return REVIEW_LAYER
    if len(names) == 1:
        return names[0]
    raise InputError(
        f"decisions file '{path}' has several layers ({', '.join(names)}); name one with layer=."
    )


def _read_csv(path: Path, crs: Any) -> pd.DataFrame:
    # Everything as text: ids like "0007" must not become numbers, empty cells must stay "".
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    frame.columns = [str(c).strip() for c in frame.columns]
    wkt_cols = [c for c in ("wkt", "geometry", "WKT") if c in frame.columns]
    geoms: list[BaseGeometry | None] = [None] * len(frame)
    if wkt_cols:
        col = wkt_cols[0]
        for i, text in enumerate(frame[col].tolist()):
            text = text.strip()
            if not text:
                continue
            try:
                geoms[i] = shapely.from_wkt(text)
            except shapely.errors.GEOSException as err:
                raise InputError(
                    f"decisions file '{path}' row {i + 1} (line {i + 2}): column '{col}' is not "
                    f"valid WKT ({err}); write e.g. 'POLYGON ((x0 y0, x1 y1, x2 y2, x0 y0))'."
                ) from err
        frame = frame.drop(columns=wkt_cols)
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geoms, index=frame.index), crs=crs)


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return gpd.read_parquet(path)
    except ValueError:
        # A plain Parquet table without GeoParquet metadata: decisions without geometry.
        return pd.read_parquet(path)


def _normalise(frame: pd.DataFrame, source: str) -> gpd.GeoDataFrame:
    frame = frame.rename(columns={c: str(c).strip() for c in frame.columns})
    missing = [c for c in ("candidate_id", "decision") if c not in frame.columns]
    if missing:
        raise InputError(
            f"decisions file '{source}' has no column {' or '.join(repr(m) for m in missing)} "
            f"(columns: {', '.join(map(str, frame.columns))}); the file needs candidate_id and "
            "decision, optionally note and a geometry."
        )
    n = len(frame)
    ids = [_clean_text(v) for v in frame["candidate_id"].tolist()]
    notes = [_clean_text(v) for v in frame["note"].tolist()] if "note" in frame else [""] * n
    raw = frame["decision"].tolist()
    geoms: list[Any]
    if isinstance(frame, gpd.GeoDataFrame) and frame.geometry.name in frame.columns:
        geoms = list(frame.geometry.values)
        crs = frame.crs
    else:
        geoms, crs = [None] * n, None
    records = []
    for i in range(n):
        text = _clean_text(raw[i]).lower()
        if not text:
            continue  # undecided
        decision = _ALIASES.get(text)
        if decision is None:
            raise InputError(
                f"decisions file '{source}' row {i + 1}: decision {raw[i]!r} is not one of "
                f"{', '.join(ALL_DECISIONS)} (case and spaces do not matter; leave it empty "
                "for undecided)."
            )
        geom = geoms[i]
        if geom is not None and (not isinstance(geom, BaseGeometry) or geom.is_empty):
            geom = None
        records.append(
            {
                "candidate_id": ids[i] or None,
                "decision": decision,
                "note": notes[i],
                "row": i + 1,
                "geometry": geom,
            }
        )
    dropped = n - len(records)
    if dropped:
        logger.info("decisions file %s: %d row(s) with no decision (undecided)", source, dropped)
    return _finish_frame(pd.DataFrame(records, columns=list(DECISION_COLUMNS)), crs, source)


def _clean_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _finish_frame(frame: pd.DataFrame, crs: Any, source: str) -> gpd.GeoDataFrame:
    frame["row"] = frame["row"].astype("int64")
    frame["note"] = frame["note"].fillna("").astype(str)
    frame["candidate_id"] = frame["candidate_id"].astype(object)
    out = gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(frame["geometry"].values), crs=crs)
    out.attrs["source"] = source
    return out


def validate_decisions(
    decisions: gpd.GeoDataFrame, candidates: gpd.GeoDataFrame
) -> gpd.GeoDataFrame:
    """Check decisions against the candidates; return them in the candidates' CRS.

    Every problem is collected and raised together as one :class:`InputError` naming the file,
    row and candidate: unknown ids, duplicate ids, an accept/reject without id, invalid values,
    an ``add`` without geometry or naming an existing candidate, invalid or non-polygonal
    boundaries (with shapely's reason), a missing CRS. Candidates not decided are undecided.
    """
    source = str(decisions.attrs.get("source", "decisions"))
    for col in ("candidate_id", "decision"):
        if col not in decisions.columns:
            raise InputError(f"decisions '{source}' have no column '{col}'.")
    frame = decisions.copy()
    if "row" not in frame.columns:
        frame["row"] = np.arange(1, len(frame) + 1)
    if "note" not in frame.columns:
        frame["note"] = ""
    if not isinstance(frame, gpd.GeoDataFrame) or frame.geometry.name not in frame.columns:
        frame = gpd.GeoDataFrame(frame, geometry=[None] * len(frame), crs=candidates.crs)

    problems: list[str] = []
    has_geom = frame.geometry.notna() & ~frame.geometry.is_empty.fillna(True)
    if has_geom.any():
        if frame.crs is None:
            raise InputError(
                f"decisions '{source}' carry geometries but no CRS; give the CSV's CRS with "
                "read_decisions(..., crs=...) or use GeoJSON / GeoPackage / GeoParquet."
            )
        if candidates.crs is None:
            raise InputError("the candidates have no CRS; cannot place decision geometries.")
        if not frame.crs.equals(candidates.crs):
            logger.info(
                "decisions %s: reprojecting from %s to %s", source, frame.crs, candidates.crs
            )
            frame = frame.to_crs(candidates.crs)
    else:
        frame = frame.set_crs(candidates.crs, allow_override=True)

    known = set(candidates["candidate_id"].astype(str))
    first_row: dict[str, int] = {}
    for rec in frame.itertuples(index=False):
        row = int(rec.row)
        where = f"row {row}"
        cid = _clean_text(rec.candidate_id) or None
        decision = _ALIASES.get(_clean_text(rec.decision).lower())
        geom = rec.geometry if isinstance(rec.geometry, BaseGeometry) else None
        if geom is not None and geom.is_empty:
            geom = None
        if decision is None:
            problems.append(
                f"{where}: decision {rec.decision!r} is not one of {', '.join(ALL_DECISIONS)}"
            )
            continue
        if decision == "add":
            if cid is not None and cid in known:
                problems.append(
                    f"{where}: 'add' names candidate '{cid}'; to change a candidate's boundary "
                    "accept it with the edited geometry"
                )
            if geom is None:
                problems.append(
                    f"{where}: 'add' needs a geometry (the missed FTL's boundary or point)"
                )
        else:
            if cid is None:
                problems.append(f"{where}: '{decision}' without candidate_id")
                continue
            if cid not in known:
                problems.append(
                    f"{where}: unknown candidate_id '{cid}' (not among the {len(known)} "
                    "candidates; is the file from another iteration?)"
                )
            elif cid in first_row:
                problems.append(
                    f"{where}: duplicate decision for candidate '{cid}' (also row "
                    f"{first_row[cid]}); keep one"
                )
            else:
                first_row[cid] = row
        if geom is not None and decision != "reject":
            allowed = _POLYGONAL + (("Point",) if decision == "add" else ())
            if geom.geom_type not in allowed:
                problems.append(
                    f"{where}: {decision} geometry is a {geom.geom_type}; expected "
                    f"{' or '.join(allowed)}"
                )
            elif not shapely.is_valid(geom):
                problems.append(
                    f"{where} ({cid or 'add'}): invalid geometry: {shapely.is_valid_reason(geom)}"
                    " (fix it in QGIS with 'Fix geometries' or redraw it)"
                )
    if problems:
        listed = problems[:_MAX_LISTED]
        more = len(problems) - len(listed)
        raise InputError(
            f"decisions '{source}': {len(problems)} problem(s):\n  "
            + "\n  ".join(listed)
            + (f"\n  … and {more} more" if more else "")
        )

    frame["candidate_id"] = [_clean_text(c) or None for c in frame["candidate_id"]]
    frame["decision"] = [_ALIASES[_clean_text(d).lower()] for d in frame["decision"]]
    frame["note"] = [_clean_text(n) for n in frame["note"]]
    geoms = [
        None if (g is None or g.is_empty or d == "reject") else g
        for g, d in zip(frame.geometry, frame["decision"], strict=True)
    ]
    out = _finish_frame(
        pd.DataFrame(
            {
                "candidate_id": frame["candidate_id"].to_numpy(),
                "decision": frame["decision"].to_numpy(),
                "note": frame["note"].to_numpy(),
                "row": frame["row"].to_numpy(),
                "geometry": geoms,
            }
        ),
        candidates.crs,
        source,
    )
    n_decided = len(first_row)
    logger.info(
        "decisions %s: %d of %d candidates decided, %d undecided, %d added",
        source,
        n_decided,
        len(known),
        len(known) - n_decided,
        int((out["decision"] == "add").sum()),
    )
    return out


def reference_decisions(
    candidates: gpd.GeoDataFrame,
    reference: gpd.GeoDataFrame,
    *,
    rule: Literal["intersects", "overlap_fraction", "iou"] = "intersects",
    min_fraction: float = 0.1,
    boundary: Literal["candidate", "reference"] = "reference",
) -> gpd.GeoDataFrame:
    """The simulated reviewer: accept candidates matching a reference FTL, reject the rest.

    Rules: ``intersects`` (any contact with a reference feature); ``overlap_fraction``
    (intersection area / candidate area ≥ ``min_fraction``); ``iou`` (intersection / union ≥
    ``min_fraction``). A reference *point* has no area: it matches a candidate it falls in under
    every rule. With ``boundary="reference"`` the accepted geometry is the union of the matched
    reference polygons (a reviewer drawing the true boundary); point matches keep the
    candidate's. The note names the matched reference ``ftl_id``\\ s (or index) and the measure.
    """
    if rule not in ("intersects", "overlap_fraction", "iou"):
        raise InputError(f"rule {rule!r} is not one of intersects, overlap_fraction, iou.")
    if boundary not in ("candidate", "reference"):
        raise InputError(f"boundary {boundary!r} is not one of candidate, reference.")
    if not 0.0 <= min_fraction <= 1.0:
        raise InputError(f"min_fraction {min_fraction} must be between 0 and 1.")
    if candidates.crs is None or (len(reference) and reference.crs is None):
        raise InputError(
            "reference_decisions needs a CRS on both the candidates and the reference inventory."
        )
    ref = reference.to_crs(candidates.crs) if len(reference) else reference
    ref_ids = ref["ftl_id"].astype(str).tolist() if "ftl_id" in ref else [str(i) for i in ref.index]
    ref_geoms = list(ref.geometry.values)
    tree = shapely.STRtree(ref_geoms) if ref_geoms else None

    records = []
    for i, rec in enumerate(candidates.itertuples(index=False), start=1):
        cand: BaseGeometry = rec.geometry
        cid = str(rec.candidate_id)
        matched: list[tuple[str, BaseGeometry, float]] = []
        hits = tree.query(cand, predicate="intersects") if tree is not None else []
        for j in hits:
            g = ref_geoms[int(j)]
            if g.geom_type in _POLYGONAL:
                inter = cand.intersection(g).area
                if rule == "intersects":
                    measure, ok = inter / cand.area if cand.area else 0.0, True
                elif rule == "overlap_fraction":
                    measure = inter / cand.area if cand.area else 0.0
                    ok = measure >= min_fraction
                else:
                    union = cand.area + g.area - inter
                    measure = inter / union if union else 0.0
                    ok = measure >= min_fraction
            else:
                measure, ok = math.nan, True  # a point (or line) in the candidate
            if ok:
                matched.append((ref_ids[int(j)], g, measure))
        if matched:
            polys = [g for _, g, _ in matched if g.geom_type in _POLYGONAL]
            geom = shapely.union_all(polys) if boundary == "reference" and polys else cand
            label = "overlap" if rule == "intersects" else rule
            parts = [
                f"{rid}" + ("" if math.isnan(m) else f" ({label} {m:.2f})")
                for rid, _, m in sorted(matched, key=lambda t: -np.nan_to_num(t[2], nan=2.0))
            ]
            records.append(
                {
                    "candidate_id": cid,
                    "decision": "accept",
                    "note": "reference " + ", ".join(parts),
                    "row": i,
                    "geometry": geom,
                }
            )
        else:
            records.append(
                {
                    "candidate_id": cid,
                    "decision": "reject",
                    "note": f"no reference FTL matches ({rule})",
                    "row": i,
                    "geometry": None,
                }
            )
    return _finish_frame(
        pd.DataFrame(records, columns=list(DECISION_COLUMNS)),
        candidates.crs,
        f"reference reviewer ({rule}, min_fraction={min_fraction})",
    )


def apply_decisions(
    inventory: gpd.GeoDataFrame,
    candidates: gpd.GeoDataFrame,
    decisions: gpd.GeoDataFrame,
    *,
    iteration: int,
) -> tuple[gpd.GeoDataFrame, DecisionCounts]:
    """inventory_{k+1} = inventory_k ∪ accepted ∪ added, without duplicates.

    The decisions are validated first. An accepted candidate takes its edited boundary if the
    decision has one, else the candidate's geometry. Merge rule: a new FTL that overlaps a
    known inventory feature (shares positive area with a polygon, or contains a point) *is*
    that FTL and adds no row; the known row is kept unchanged. New FTLs that overlap each other
    (positive area) are dissolved into one row whose ``candidate_id`` lists them (``;``).
    Touching edges do not merge: adjacent landslides stay distinct. New rows get ``ftl_id``
    ``it{k}-ftl{n:04d}``, ``kind`` (``polygon``, or ``point`` for an added point),
    ``source=f"iteration-{k}"``, ``candidate_id`` and ``note``; the result is in the
    inventory's CRS (the candidates' when the inventory is empty and has none).
    """
    checked = validate_decisions(decisions, candidates)
    crs = inventory.crs if inventory.crs is not None else candidates.crs
    if inventory.crs is None and len(inventory):
        raise InputError("the inventory has no CRS; cannot merge accepted FTLs into it.")
    by_id = dict(
        zip(candidates["candidate_id"].astype(str), candidates.geometry.values, strict=True)
    )

    new_geoms: list[BaseGeometry] = []
    new_ids: list[str | None] = []
    new_notes: list[str] = []
    for rec in checked.itertuples(index=False):
        if rec.decision == "reject":
            continue
        geom = rec.geometry if rec.geometry is not None else by_id[rec.candidate_id]
        new_geoms.append(geom)
        new_ids.append(rec.candidate_id if rec.decision == "accept" else None)
        new_notes.append(rec.note)
    counts_accept = int((checked["decision"] == "accept").sum())
    counts_reject = int((checked["decision"] == "reject").sum())
    counts_add = int((checked["decision"] == "add").sum())

    if new_geoms:
        new = gpd.GeoSeries(new_geoms, crs=candidates.crs)
        new = new.to_crs(crs) if crs is not None and not new.crs.equals(crs) else new
        new_geoms = list(new.values)
    keep = _not_known(new_geoms, list(inventory.geometry.values) if len(inventory) else [])
    groups = _overlap_groups([new_geoms[i] for i in keep])

    known_ids = set(inventory["ftl_id"].astype(str)) if "ftl_id" in inventory else set()
    rows = []
    serial = 0
    for group in groups:
        members = [keep[i] for i in group]
        geom = (
            new_geoms[members[0]]
            if len(members) == 1
            else shapely.union_all([new_geoms[m] for m in members])
        )
        serial += 1
        ftl_id = f"it{iteration}-ftl{serial:04d}"
        while ftl_id in known_ids:
            serial += 1
            ftl_id = f"it{iteration}-ftl{serial:04d}"
        cids = [new_ids[m] for m in members if new_ids[m] is not None]
        rows.append(
            {
                "ftl_id": ftl_id,
                "kind": "point" if geom.geom_type == "Point" else "polygon",
                "source": f"iteration-{iteration}",
                "candidate_id": ";".join(c for c in cids if c) or None,
                "note": " | ".join(new_notes[m] for m in members if new_notes[m]),
                "geometry": geom,
            }
        )
    added = gpd.GeoDataFrame(
        pd.DataFrame(
            rows, columns=["ftl_id", "kind", "source", "candidate_id", "note", "geometry"]
        ),
        geometry="geometry",
        crs=crs,
    )
    base = inventory.copy()
    if base.crs is None:
        base = base.set_crs(crs, allow_override=True) if crs is not None else base
    for col in ("candidate_id", "note"):
        if col not in base.columns:
            base[col] = None if col == "candidate_id" else ""
    if len(added) == 0:
        result = base
    elif len(base) == 0:
        result = added
    else:
        result = gpd.GeoDataFrame(pd.concat([base, added], ignore_index=True), crs=crs)
    result = result.reset_index(drop=True)
    decided = int(checked["candidate_id"].isin(list(by_id)).sum())
    counts = DecisionCounts(
        candidates=len(candidates),
        accepted=counts_accept,
        rejected=counts_reject,
        added=counts_add,
        undecided=len(candidates) - decided,
        new_ftls=len(added),
    )
    logger.info("iteration %d decisions applied: %s", iteration, counts.as_dict())
    return result, counts


def _overlaps(a: BaseGeometry, b: BaseGeometry) -> bool:
    """Same FTL: positive shared area, or a point inside/on a polygon (or equal points)."""
    if not a.intersects(b):
        return False
    if a.geom_type in _POLYGONAL and b.geom_type in _POLYGONAL:
        return bool(a.intersection(b).area > 0.0)
    return True


def _not_known(new: list[BaseGeometry], known: list[BaseGeometry]) -> list[int]:
    """Indices of ``new`` that overlap no known feature."""
    if not known:
        return list(range(len(new)))
    tree = shapely.STRtree(known)
    keep = []
    for i, g in enumerate(new):
        hits = tree.query(g, predicate="intersects")
        if not any(_overlaps(g, known[int(j)]) for j in hits):
            keep.append(i)
    return keep


def _overlap_groups(geoms: list[BaseGeometry]) -> list[list[int]]:
    """Connected groups of mutually overlapping geometries, in first-seen order."""
    parent = list(range(len(geoms)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if geoms:
        tree = shapely.STRtree(geoms)
        for i, g in enumerate(geoms):
            for j in tree.query(g, predicate="intersects"):
                j = int(j)
                if j > i and _overlaps(g, geoms[j]):
                    parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(geoms)):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda m: m[0])


def export_review_gpkg(candidates: gpd.GeoDataFrame, path: str | Path) -> None:
    """Write the candidates as a GeoPackage for QGIS, sorted by score, with empty
    ``decision`` and ``note`` text fields first; read it back with :func:`read_review_gpkg`.

    In QGIS: type accept / reject in ``decision`` (edit the polygon to correct a boundary),
    draw a new feature with decision ``add`` for an FTL the method missed.
    """
    path = Path(path)
    if "candidate_id" not in candidates.columns:
        raise InputError("the candidates have no 'candidate_id' column; cannot export them.")
    frame = candidates.copy()
    if "score" in frame.columns:
        frame = frame.sort_values("score", ascending=False, kind="stable")
    frame.insert(0, "decision", "")
    frame.insert(1, "note", "")
    frame.insert(2, "candidate_id", frame.pop("candidate_id").astype(str))
    # Mixed Polygon/MultiPolygon in one layer: promote so QGIS sees one geometry type.
    if set(frame.geom_type.dropna()) <= set(_POLYGONAL):
        frame = frame.set_geometry(
            gpd.GeoSeries(
                [
                    shapely.MultiPolygon([g]) if g is not None and g.geom_type == "Polygon" else g
                    for g in frame.geometry
                ],
                index=frame.index,
                crs=frame.crs,
            )
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    try:
        frame.reset_index(drop=True).to_file(path, layer=REVIEW_LAYER, driver="GPKG")
    except Exception as err:
        raise InputError(f"cannot write the review GeoPackage '{path}': {err}") from err
    logger.info("review GeoPackage %s: %d candidates", path, len(frame))


def read_review_gpkg(path: str | Path) -> gpd.GeoDataFrame:
    """Read back a review GeoPackage filled in QGIS as a decisions table.

    Rows with an empty decision are undecided, except a feature the reviewer drew (no
    ``candidate_id``) with an empty decision, which is read as ``add``. The geometry of an
    accepted row is its (possibly edited) boundary.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"review GeoPackage '{path}' does not exist; check the path.")
    try:
        frame = gpd.read_file(path, layer=_pick_layer(path, None))
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"review GeoPackage '{path}' cannot be read: {err}") from err
    if "decision" in frame.columns and "candidate_id" in frame.columns:
        drawn = frame["candidate_id"].map(_clean_text).eq("") & frame["decision"].map(
            _clean_text
        ).eq("")
        drawn &= frame.geometry.notna()
        if drawn.any():
            logger.info("review GeoPackage %s: %d drawn feature(s) read as add", path, drawn.sum())
            frame.loc[drawn, "decision"] = "add"
    return _normalise(frame, str(path))
