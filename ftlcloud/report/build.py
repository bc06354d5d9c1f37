"""Build a report folder in memory, {relative file name: bytes}; the pipeline stores it."""

from __future__ import annotations

import dataclasses
import logging

import geopandas as gpd
import numpy as np
import pyproj

from ftlcloud.errors import InputError
from ftlcloud.report import figures
from ftlcloud.report.html import FigureEntry, render_index
from ftlcloud.report.model import ReportInputs

logger = logging.getLogger(__name__)

INDEX_KEY = "index.html"
FIG_GEOMETRY = "fig_geometry.png"
FIG_DEFORMATION_MAPS = "fig_deformation_maps.png"
FIG_DEFORMATION_DISTRIBUTIONS = "fig_deformation_distributions.png"
FIG_ITERATIONS = "fig_iterations.png"


def build_report(inputs: ReportInputs) -> dict[str, bytes]:
    """The whole-run report: ``index.html`` and its PNG figures, keyed by relative file name."""
    return _build(in_report_crs(inputs), iteration=None)


def build_iteration_report(inputs: ReportInputs, iteration: int) -> dict[str, bytes]:
    """The report of one iteration: restricted to what iterations ≤ ``iteration`` found."""
    return _build(restrict_to_iteration(in_report_crs(inputs), iteration), iteration=iteration)


def restrict_to_iteration(inputs: ReportInputs, iteration: int) -> ReportInputs:
    """Inputs as they stood after ``iteration``: the initial inventory, FTLs and candidates of
    iterations ≤ ``iteration`` and their Table 2 rows."""
    known = sorted(s.iteration for s in inputs.iterations)
    if iteration not in known:
        raise InputError(
            f"Report for run {inputs.run_id!r}: iteration {iteration} has no IterationSummary "
            f"(known: {known or 'none'}); build the report of an iteration that ran."
        )
    ftls = inputs.ftls
    if len(ftls):
        it = np.asarray(ftls["iteration"], dtype=float)
        ftls = ftls[~np.isfinite(it) | (it <= iteration)]
    candidates = inputs.candidates
    if len(candidates):
        candidates = candidates[np.asarray(candidates["iteration"], dtype=float) <= iteration]
    rasters = inputs.rasters
    if rasters is not None and rasters.ftl_mask is not None:
        # A given mask shows the final inventory; rasterise the restricted one instead.
        rasters = dataclasses.replace(rasters, ftl_mask=None)
    return dataclasses.replace(
        inputs,
        ftls=ftls,
        candidates=candidates,
        rasters=rasters,
        iterations=[s for s in inputs.iterations if s.iteration <= iteration],
    )


def in_report_crs(inputs: ReportInputs) -> ReportInputs:
    """Reproject the vector layers to ``inputs.crs`` when they carry another CRS."""
    try:
        target = pyproj.CRS.from_user_input(inputs.crs)
    except pyproj.exceptions.CRSError as err:
        raise InputError(
            f"Report for run {inputs.run_id!r}: ReportInputs.crs {inputs.crs!r} is not a CRS "
            "pyproj understands; give e.g. 'EPSG:4326' or 'EPSG:32647'."
        ) from err
    changed = {}
    for name in ("ftls", "candidates"):
        frame: gpd.GeoDataFrame = getattr(inputs, name)
        if len(frame) and frame.crs is not None and not target.equals(frame.crs):
            logger.info("report: reprojecting %s from %s to %s", name, frame.crs, inputs.crs)
            changed[name] = frame.to_crs(target)
    return dataclasses.replace(inputs, **changed) if changed else inputs


def _build(inputs: ReportInputs, iteration: int | None) -> dict[str, bytes]:
    scope = f"iteration {iteration}" if iteration is not None else f"run {inputs.run_id}"
    logger.info(
        "report: building %s (%d FTLs, %d candidates)",
        scope,
        len(inputs.ftls),
        len(inputs.candidates),
    )
    out: dict[str, bytes] = {
        FIG_GEOMETRY: figures.geometry_figure(inputs.ftls),
        FIG_DEFORMATION_MAPS: figures.deformation_maps_figure(
            inputs.rasters, inputs.ftls, inputs.crs
        ),
        FIG_DEFORMATION_DISTRIBUTIONS: figures.deformation_distributions_figure(
            inputs.rasters, inputs.ftls
        ),
        FIG_ITERATIONS: figures.iterations_figure(
            inputs.iterations, inputs.ftls, inputs.rasters, inputs.crs, inputs.candidates
        ),
    }
    entries = [
        FigureEntry(
            FIG_ITERATIONS,
            "Iterations (Fig. 3 analogue)",
            "(a) Candidates offered, candidates accepted and new FTLs added per iteration, with "
            "the |velocity| threshold of each; the line is object recall against the reference "
            "inventory when one was given. (b) FTLs of the inventory: white circles are the "
            "initial inventory, triangles and outlines are coloured by the iteration that found "
            "them.",
        ),
        FigureEntry(
            FIG_GEOMETRY,
            "Geometry, terrain and vegetation of the FTLs (Fig. 4 analogue)",
            "(a) Perimeter, (b) area, (c) aspect rose (16 sectors of 22.5° centred on the "
            "compass points, north up, clockwise; flat cells skipped), (d) mean elevation, "
            "(e) mean slope and (f) mean ΔNDVI of each FTL. Grey: initial inventory; orange: "
            "found by the iterations. Dashed lines mark the small (10 ha) and hidden (ΔNDVI "
            "−0.1) thresholds.",
        ),
        FigureEntry(
            FIG_DEFORMATION_MAPS,
            "Deformation over the area (Fig. 6 analogue)",
            "(a) Deformation rate (Eq. 1 trend, mm/a; colours saturate at the 98th percentile "
            "of |rate|) and (b) peak-to-peak seasonal amplitude (Eq. 2, mm) over hillshade, with "
            "FTL outlines in black. Titles give the full range.",
        ),
        FigureEntry(
            FIG_DEFORMATION_DISTRIBUTIONS,
            "Deformation inside FTLs vs the whole area (Fig. 7 analogue)",
            "Probability density of (a) deformation rate and (b) seasonal amplitude over all "
            "valid pixels (filled) and over pixels inside FTLs (line); axes span the central "
            "99.8 % of the area's values. (c) Share of the area's pixels and of the FTLs (by "
            "each FTL's mean |rate|) per |deformation rate| bin.",
        ),
    ]
    out[INDEX_KEY] = render_index(inputs, entries, iteration=iteration).encode("utf-8")
    return out
