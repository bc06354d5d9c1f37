"""Report figures (the paper's Fig. 3, 4, 6, 7 analogues) as PNG bytes.

Every figure is drawn on a bare ``matplotlib.figure.Figure`` (Agg canvas), never through pyplot:
no global state, so figures can be built in threads or Dask workers without touching the user's
backend. Each function takes data and returns PNG bytes; an empty input gives a figure that says
so instead of an exception.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import geopandas as gpd
import matplotlib as mpl
import numpy as np
import pyproj
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from rasterio.features import rasterize
from shapely.geometry.base import BaseGeometry

from ftlcloud.report.model import AreaRasters, IterationSummary

logger = logging.getLogger(__name__)

DPI = 150
#: |velocity| bin edges (mm/a) of the "share of FTLs per bin" panel; the last bin is open (≥ 50).
VELOCITY_BIN_EDGES_MM_A: tuple[float, ...] = (0.0, 10.0, 20.0, 30.0, 40.0, 50.0, math.inf)
VELOCITY_BIN_LABELS: tuple[str, ...] = ("0–10", "10–20", "20–30", "30–40", "40–50", "≥ 50")
#: 16 compass sectors of 22.5°, centred on N, NNE, … (sector 0 spans 348.75–11.25°).
N_ASPECT_SECTORS = 16
SECTOR_WIDTH_DEG = 360.0 / N_ASPECT_SECTORS
#: Displayed maps are decimated to at most this many pixels per side (keeps PNGs and memory small).
MAX_MAP_PIXELS = 1500

# Okabe–Ito colours: distinguishable with the common colour-vision deficiencies.
COLOR_INITIAL = "#999999"
COLOR_FOUND = "#D55E00"
COLOR_AREA = "#0072B2"
COLOR_CANDIDATES = "#56B4E9"
COLOR_ACCEPTED = "#009E73"
COLOR_NEW = "#D55E00"
ITERATION_COLORS = ("#E69F00", "#0072B2", "#009E73", "#CC79A7", "#F0E442", "#56B4E9", "#D55E00")

_STYLE: Any = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
}


# ---------------------------------------------------------------------------------------------
# Pure helpers (tested against hand-computed answers)
# ---------------------------------------------------------------------------------------------


def velocity_bin_shares_pct(velocity_abs_mm_a: np.ndarray) -> np.ndarray:
    """Percent of finite values in each |velocity| bin of VELOCITY_BIN_EDGES_MM_A (sums to 100).

    Values are made absolute first; all zeros when no finite value is given.
    """
    values = np.abs(np.asarray(velocity_abs_mm_a, dtype=float).ravel())
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.zeros(len(VELOCITY_BIN_LABELS))
    # Left-closed bins: 10 mm/a belongs to 10–20, as "≥ 10" does in Table 2.
    index = np.searchsorted(np.asarray(VELOCITY_BIN_EDGES_MM_A[1:-1]), values, side="right")
    counts = np.bincount(index, minlength=len(VELOCITY_BIN_LABELS))
    return 100.0 * counts / values.size


def aspect_sector_counts(aspect_deg: np.ndarray) -> np.ndarray:
    """Counts in 16 compass sectors centred on N, NNE, …; NaN and flat (< 0) aspects are skipped."""
    values = np.asarray(aspect_deg, dtype=float).ravel()
    values = values[np.isfinite(values) & (values >= 0)]
    index = np.floor(((values + SECTOR_WIDTH_DEG / 2) % 360.0) / SECTOR_WIDTH_DEG).astype(int)
    return np.bincount(index, minlength=N_ASPECT_SECTORS)[:N_ASPECT_SECTORS]


def polygon_rings(geometries: Sequence[BaseGeometry | None]) -> list[np.ndarray]:
    """Exterior and interior rings of (multi)polygons as (n, 2) arrays, for a LineCollection."""
    rings: list[np.ndarray] = []
    for geom in geometries:
        if geom is None or geom.is_empty:
            continue
        parts = getattr(geom, "geoms", [geom])
        for part in parts:
            if part.geom_type != "Polygon":
                continue
            rings.append(np.asarray(part.exterior.coords)[:, :2])
            rings.extend(np.asarray(r.coords)[:, :2] for r in part.interiors)
    return rings


def ftl_pixel_mask(rasters: AreaRasters, ftls: gpd.GeoDataFrame) -> np.ndarray:
    """Boolean FTL mask on the rasters' grid: the given mask, else the rasterised polygons."""
    if rasters.ftl_mask is not None:
        return np.asarray(rasters.ftl_mask, dtype=bool)
    geoms = [g for g in ftls.geometry if g is not None and not g.is_empty] if len(ftls) else []
    if not geoms:
        return np.zeros(rasters.shape, dtype=bool)
    burned = rasterize(
        ((g, 1) for g in geoms),
        out_shape=rasters.shape,
        transform=rasters.transform,
        fill=0,
        dtype="uint8",
        # Pixel-centre rule: the "inside FTLs" density is not inflated by edge pixels.
        all_touched=False,
    )
    return burned.astype(bool)


# ---------------------------------------------------------------------------------------------
# Figure plumbing
# ---------------------------------------------------------------------------------------------


@contextmanager
def _style() -> Iterator[None]:
    with mpl.rc_context(_STYLE):
        yield


def _new_figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # No "Software"/date metadata varies between runs, so a rerun writes identical bytes.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _say_empty(ax: Axes, text: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_color("#cccccc")
    ax.text(
        0.5,
        0.5,
        text,
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=12,
        color="#555555",
    )


def _num(value: float) -> str:
    """Whole number with a typographic minus sign, as matplotlib's tick labels have."""
    return f"{value:.0f}".replace("-", "\N{MINUS SIGN}")


def _finite(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def _crs_axis_labels(crs: str) -> tuple[str, str, bool]:
    """Map axis labels with units, and whether the CRS is geographic."""
    try:
        parsed = pyproj.CRS.from_user_input(crs)
    except pyproj.exceptions.CRSError:
        logger.warning("report: cannot parse CRS %r; map axes are labelled x / y", crs)
        return "x", "y", False
    if parsed.is_geographic:
        return "Longitude (°)", "Latitude (°)", True
    unit = parsed.axis_info[0].unit_name if parsed.axis_info else ""
    unit = {"metre": "m", "meter": "m", "foot": "ft", "US survey foot": "ftUS"}.get(unit, unit)
    return f"Easting ({unit})", f"Northing ({unit})", False


def _setup_map(ax: Axes, crs: str, bounds: tuple[float, float, float, float]) -> None:
    """Label axes with units, fix the extent, and keep ground distances square."""
    xlabel, ylabel, geographic = _crs_axis_labels(crs)
    left, right, bottom, top = bounds
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(False)
    if geographic:
        # A degree of longitude is cos(latitude) of a degree of latitude on the ground.
        mid_lat = math.radians(max(-89.0, min(89.0, (bottom + top) / 2)))
        ax.set_aspect(1.0 / math.cos(mid_lat))
    else:
        ax.set_aspect("equal")
    ax.ticklabel_format(useOffset=False, style="plain")


def _map_figure_height(rasters: AreaRasters | None, crs: str, map_width_in: float) -> float:
    """Figure height (in) that fits a map of the given width, so maps do not float in white."""
    if rasters is None:
        return 5.0
    left, right, bottom, top = rasters.extent
    ratio = (top - bottom) / max(right - left, 1e-12)
    if _crs_axis_labels(crs)[2]:
        ratio /= math.cos(math.radians(max(-89.0, min(89.0, (bottom + top) / 2))))
    # 1.3 in for the title and the axis labels.
    return float(min(9.0, max(3.5, map_width_in * ratio + 1.3)))


def _decimate(arr: np.ndarray) -> np.ndarray:
    step = max(1, math.ceil(max(arr.shape) / MAX_MAP_PIXELS))
    return arr[::step, ::step]


def _draw_hillshade(ax: Axes, rasters: AreaRasters, alpha: float = 1.0) -> bool:
    if rasters.hillshade is None:
        return False
    shade = _decimate(np.asarray(rasters.hillshade, dtype=float))
    finite = _finite(shade)
    if finite.size == 0:
        return False
    lo, hi = np.percentile(finite, [1, 99])
    ax.imshow(
        shade,
        extent=rasters.extent,
        cmap="gray",
        vmin=lo,
        vmax=hi if hi > lo else lo + 1,
        interpolation="nearest",
        origin="upper",
        alpha=alpha,
    )
    return True


def _draw_outlines(
    ax: Axes, geometries: Sequence[BaseGeometry | None], color: str = "black", width: float = 0.8
) -> None:
    rings = polygon_rings(geometries)
    if rings:
        ax.add_collection(LineCollection(rings, colors=color, linewidths=width, zorder=3))


def _bounds_of(frames: Sequence[gpd.GeoDataFrame]) -> tuple[float, float, float, float] | None:
    boxes = [f.total_bounds for f in frames if len(f) and not f.geometry.is_empty.all()]
    if not boxes:
        return None
    stacked = np.vstack(boxes)
    minx, miny = np.nanmin(stacked[:, 0]), np.nanmin(stacked[:, 1])
    maxx, maxy = np.nanmax(stacked[:, 2]), np.nanmax(stacked[:, 3])
    pad = 0.05 * max(maxx - minx, maxy - miny, 1e-9)
    return (minx - pad, maxx + pad, miny - pad, maxy + pad)


def _split_initial_found(ftls: gpd.GeoDataFrame) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """The initial inventory (iteration NaN) and the FTLs the iterations found."""
    if len(ftls) == 0:
        return ftls, ftls
    iteration = np.asarray(ftls["iteration"], dtype=float)
    initial = ~np.isfinite(iteration)
    return ftls[initial], ftls[~initial]


# ---------------------------------------------------------------------------------------------
# Fig. 4 analogue: geometry, terrain and vegetation of the FTLs
# ---------------------------------------------------------------------------------------------


def _stacked_hist(
    ax: Axes,
    groups: Sequence[tuple[np.ndarray, str, str]],
    *,
    xlabel: str,
    lower: float | None = None,
    max_bins: int = 30,
) -> None:
    data = [(v, lab, col) for v, lab, col in groups if v.size]
    everything = np.concatenate([v for v, _, _ in data])
    lo = float(everything.min()) if lower is None else min(lower, float(everything.min()))
    hi = float(everything.max())
    if hi <= lo:
        hi = lo + 1.0
    n_bins = int(min(max_bins, max(5, np.histogram_bin_edges(everything, bins="auto").size - 1)))
    edges = np.linspace(lo, hi, n_bins + 1)
    ax.hist(
        [v for v, _, _ in data],
        bins=edges.tolist(),
        stacked=True,
        label=[lab for _, lab, _ in data],
        color=[col for _, _, col in data],
        edgecolor="white",
        linewidth=0.5,
    )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Number of FTLs")


def geometry_figure(ftls: gpd.GeoDataFrame) -> bytes:
    """Fig. 4 analogue: perimeter, area, aspect rose, elevation, slope and ΔNDVI of the FTLs."""
    initial, found = _split_initial_found(ftls)
    with _style():
        fig = _new_figure(13.0, 8.0)
        grid = fig.add_gridspec(2, 3)
        axes = [
            fig.add_subplot(grid[0, 0]),
            fig.add_subplot(grid[0, 1]),
            fig.add_subplot(grid[0, 2], projection="polar"),
            fig.add_subplot(grid[1, 0]),
            fig.add_subplot(grid[1, 1]),
            fig.add_subplot(grid[1, 2]),
        ]
        n_total = len(ftls)
        fig.suptitle(
            f"Geometry, terrain and vegetation of the FTLs (n = {n_total})",
            fontsize=12,
        )
        if n_total == 0:
            for ax, title in zip(axes, _GEOMETRY_TITLES, strict=True):
                ax.set_title(title)
                _say_empty(ax, "no FTLs yet")
            return _to_png(fig)

        def groups(column: str) -> list[tuple[np.ndarray, str, str]]:
            return [
                (_finite(initial[column]), "initial inventory", COLOR_INITIAL),
                (_finite(found[column]), "found by iterations", COLOR_FOUND),
            ]

        specs: list[tuple[int, str, str, float | None]] = [
            (0, "perimeter_km", "Perimeter (km)", 0.0),
            (1, "area_ha", "Area (ha)", 0.0),
            (3, "elevation_mean_m", "Mean elevation (m)", None),
            (4, "slope_mean_deg", "Mean slope (°)", 0.0),
            (5, "delta_ndvi_mean", "Mean ΔNDVI (later − earlier)", None),
        ]
        for index, column, xlabel, lower in specs:
            ax = axes[index]
            ax.set_title(_GEOMETRY_TITLES[index])
            values = _finite(ftls[column])
            if values.size == 0:
                _say_empty(ax, f"no finite {column}")
                continue
            _stacked_hist(ax, groups(column), xlabel=xlabel, lower=lower)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        _annotate_share(axes[0], _finite(ftls["perimeter_km"]), 1.0, "< 1 km", "below")
        _annotate_share(axes[1], _finite(ftls["area_ha"]), 10.0, "< 10 ha (small)", "below")
        _annotate_share(axes[5], _finite(ftls["delta_ndvi_mean"]), -0.1, "> −0.1 (hidden)", "above")
        handles = [
            Patch(color=COLOR_INITIAL, label=f"initial inventory ({len(initial)})"),
            Patch(color=COLOR_FOUND, label=f"found by the iterations ({len(found)})"),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=2)
        _aspect_rose(axes[2], initial, found)
        return _to_png(fig)


_GEOMETRY_TITLES = (
    "(a) Perimeter",
    "(b) Area",
    "(c) Aspect",
    "(d) Elevation",
    "(e) Slope",
    "(f) ΔNDVI",
)


def _annotate_share(ax: Axes, values: np.ndarray, threshold: float, label: str, side: str) -> None:
    """Dashed line at a threshold; the share of FTLs on the named side goes into the title."""
    if values.size == 0 or not ax.has_data():
        return
    share = np.mean(values < threshold) if side == "below" else np.mean(values > threshold)
    lo, hi = ax.get_xlim()
    if lo <= threshold <= hi:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1.0)
    ax.set_title(f"{ax.get_title()}: {100 * share:.0f} % {label}")


def _aspect_rose(ax: Axes, initial: gpd.GeoDataFrame, found: gpd.GeoDataFrame) -> None:
    ax.set_title(_GEOMETRY_TITLES[2], pad=18)
    ax.set_theta_zero_location("N")  # type: ignore[attr-defined]
    ax.set_theta_direction(-1)  # type: ignore[attr-defined]
    counts_initial = aspect_sector_counts(np.asarray(initial["aspect_circmean_deg"], dtype=float))
    counts_found = aspect_sector_counts(np.asarray(found["aspect_circmean_deg"], dtype=float))
    theta = np.deg2rad(np.arange(N_ASPECT_SECTORS) * SECTOR_WIDTH_DEG)
    width = np.deg2rad(SECTOR_WIDTH_DEG) * 0.92
    ax.bar(theta, counts_initial, width=width, color=COLOR_INITIAL, edgecolor="white")
    ax.bar(
        theta,
        counts_found,
        width=width,
        bottom=counts_initial,
        color=COLOR_FOUND,
        edgecolor="white",
    )
    ax.set_xticks(np.deg2rad(np.arange(0, 360, 45)))
    ax.set_xticklabels(["N", "NE", "E", "SE", "S", "SW", "W", "NW"])
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(axis="y", labelsize=8, labelcolor="#555555")
    ax.set_rlabel_position(112.5)  # type: ignore[attr-defined]
    if counts_initial.sum() + counts_found.sum() == 0:
        ax.text(0.5, 0.5, "no aspect values", transform=ax.transAxes, ha="center", va="center")


# ---------------------------------------------------------------------------------------------
# Fig. 6 analogue: maps of deformation rate and seasonal amplitude
# ---------------------------------------------------------------------------------------------


def deformation_maps_figure(rasters: AreaRasters | None, ftls: gpd.GeoDataFrame, crs: str) -> bytes:
    """Fig. 6 analogue: deformation rate and seasonal amplitude maps with FTL outlines."""
    with _style():
        fig = _new_figure(13.0, _map_figure_height(rasters, crs, map_width_in=5.0))
        ax_v, ax_a = fig.subplots(1, 2)
        if rasters is None:
            for ax, title in ((ax_v, "(a) Deformation rate"), (ax_a, "(b) Seasonal amplitude")):
                ax.set_title(title)
                _say_empty(ax, "no area rasters in this report")
            return _to_png(fig)
        velocity = np.asarray(rasters.velocity_mm_a, dtype=float)
        amplitude = np.asarray(rasters.seasonal_amplitude_mm, dtype=float)
        v_fin, a_fin = _finite(velocity), _finite(amplitude)
        # Symmetric limits around 0 so that the colour of 0 is white; 98th percentile so a few
        # outliers do not wash out the map; never below the ±10 mm/a stable band.
        v_lim = max(10.0, float(np.percentile(np.abs(v_fin), 98))) if v_fin.size else 10.0
        a_max = max(1.0, float(np.percentile(a_fin, 98))) if a_fin.size else 1.0
        panels = [
            (ax_v, velocity, v_fin, "RdBu", -v_lim, v_lim, "Deformation rate (mm/a)", "(a)"),
            (ax_a, amplitude, a_fin, "viridis", 0.0, a_max, "Seasonal amplitude (mm, p-p)", "(b)"),
        ]
        for ax, arr, fin, cmap, vmin, vmax, label, letter in panels:
            has_shade = _draw_hillshade(ax, rasters)
            image = ax.imshow(
                np.ma.masked_invalid(_decimate(arr)),
                extent=rasters.extent,
                cmap=cmap,
                vmin=vmin,
                vmax=vmax,
                alpha=0.75 if has_shade else 1.0,
                interpolation="nearest",
                origin="upper",
            )
            _draw_outlines(ax, list(ftls.geometry) if len(ftls) else [])
            _setup_map(ax, crs, rasters.extent)
            span = f"{_num(fin.min())} to {_num(fin.max())}" if fin.size else "no valid pixels"
            unit = "mm/a" if letter == "(a)" else "mm"
            ax.set_title(f"{letter} {label.split(' (')[0]}: {span} {unit if fin.size else ''}")
            extend = "both" if letter == "(a)" else "max"
            # An inset in axes coordinates matches the map's height whatever the raster's aspect.
            cax = ax.inset_axes((1.03, 0.0, 0.035, 1.0))
            fig.colorbar(image, cax=cax, label=label, extend=extend)
        if len(ftls):
            handle = Line2D([], [], color="black", linewidth=0.8, label=f"FTLs (n = {len(ftls)})")
            ax_v.legend(handles=[handle], loc="lower left", frameon=True)
        return _to_png(fig)


# ---------------------------------------------------------------------------------------------
# Fig. 7 analogue: distributions, area vs FTLs, and the share of FTLs per |velocity| bin
# ---------------------------------------------------------------------------------------------


def deformation_distributions_figure(rasters: AreaRasters | None, ftls: gpd.GeoDataFrame) -> bytes:
    """Fig. 7 analogue: rate and amplitude densities (area vs FTLs) and FTL share per |v| bin."""
    with _style():
        fig = _new_figure(15.0, 4.8)
        ax_v, ax_a, ax_bins = fig.subplots(1, 3)
        ftl_velocity = _finite(ftls["velocity_mean_abs_mm_a"]) if len(ftls) else np.array([])
        if rasters is None:
            for ax, title in ((ax_v, "(a) Deformation rate"), (ax_a, "(b) Seasonal amplitude")):
                ax.set_title(title)
                _say_empty(ax, "no area rasters in this report")
            _velocity_bins_panel(ax_bins, ftl_velocity, None)
            return _to_png(fig)
        inside = ftl_pixel_mask(rasters, ftls)
        velocity = np.asarray(rasters.velocity_mm_a, dtype=float)
        amplitude = np.asarray(rasters.seasonal_amplitude_mm, dtype=float)
        _density_panel(
            ax_v, velocity, inside, "Deformation rate (mm/a)", "(a) Deformation rate", band=10.0
        )
        _density_panel(
            ax_a,
            amplitude,
            inside,
            "Seasonal amplitude (mm, peak-to-peak)",
            "(b) Seasonal amplitude",
        )
        _velocity_bins_panel(ax_bins, ftl_velocity, _finite(velocity))
        return _to_png(fig)


def _density_panel(
    ax: Axes,
    values: np.ndarray,
    inside: np.ndarray,
    xlabel: str,
    title: str,
    band: float | None = None,
) -> None:
    area = _finite(values)
    ftl = _finite(values[inside])
    ax.set_title(title)
    if area.size == 0:
        _say_empty(ax, "no valid pixels")
        return
    # Clip the axis to the central 99.8 % so a handful of outliers do not squash the densities.
    lo, hi = np.percentile(area, [0.1, 99.9])
    if hi <= lo:
        lo, hi = lo - 1.0, hi + 1.0
    edges = np.linspace(lo, hi, 61)
    ax.hist(
        area,
        bins=edges.tolist(),
        density=True,
        color=COLOR_AREA,
        alpha=0.35,
        label=f"whole area ({area.size:,} px)",
    )
    if ftl.size:
        ax.hist(
            ftl,
            bins=edges.tolist(),
            density=True,
            histtype="step",
            color=COLOR_FTL,
            linewidth=1.8,
            label=f"inside FTLs ({ftl.size:,} px)",
        )
    else:
        ax.text(
            0.98, 0.6, "no FTLs yet", transform=ax.transAxes, ha="right", va="top", color="#555555"
        )
    if band is not None:
        share = 100.0 * np.mean(np.abs(area) <= band)
        ax.axvspan(-band, band, color="#cccccc", alpha=0.35, zorder=0)
        ax.text(
            0.02,
            0.97,
            f"{share:.0f} % of area within ±{band:g} mm/a",
            transform=ax.transAxes,
            va="top",
            fontsize=9,
        )
    ax.set_xlim(lo, hi)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Probability density")
    ax.legend(loc="upper right")


COLOR_FTL = COLOR_FOUND


def _velocity_bins_panel(
    ax: Axes, ftl_velocity: np.ndarray, area_velocity: np.ndarray | None
) -> None:
    ax.set_title("(c) Share per |deformation rate| bin")
    x = np.arange(len(VELOCITY_BIN_LABELS))
    width = 0.4
    if area_velocity is not None and area_velocity.size:
        area_pct = velocity_bin_shares_pct(area_velocity)
        bars = ax.bar(
            x - width / 2, area_pct, width, color=COLOR_AREA, alpha=0.6, label="area (pixels)"
        )
        ax.bar_label(bars, fmt="%.0f", fontsize=8, padding=1)
    if ftl_velocity.size:
        ftl_pct = velocity_bin_shares_pct(ftl_velocity)
        bars = ax.bar(
            x + width / 2,
            ftl_pct,
            width,
            color=COLOR_FTL,
            label=f"FTLs by mean |rate| (n = {ftl_velocity.size})",
        )
        ax.bar_label(bars, fmt="%.0f", fontsize=8, padding=1)
    else:
        ax.text(0.5, 0.6, "no FTLs yet", transform=ax.transAxes, ha="center", color="#555555")
    ax.set_xticks(x)
    ax.set_xticklabels(VELOCITY_BIN_LABELS)
    ax.set_xlabel("|Deformation rate| (mm/a)")
    ax.set_ylabel("Share (%)")
    ax.set_ylim(0, 110)
    ax.grid(axis="x", visible=False)
    if ax.has_data():
        ax.legend(loc="upper center")


# ---------------------------------------------------------------------------------------------
# Fig. 3 / Table 2 analogue: iterations
# ---------------------------------------------------------------------------------------------


def iterations_figure(
    iterations: Sequence[IterationSummary],
    ftls: gpd.GeoDataFrame,
    rasters: AreaRasters | None,
    crs: str,
    candidates: gpd.GeoDataFrame | None = None,
) -> bytes:
    """Fig. 3 / Table 2 analogue: counts per iteration and a map of FTLs by finding iteration."""
    with _style():
        fig = _new_figure(13.0, 5.8)
        ax_bars, ax_map = fig.subplots(1, 2, width_ratios=[1.0, 1.15])
        _iteration_bars(ax_bars, iterations)
        _iteration_map(ax_map, iterations, ftls, rasters, crs, candidates)
        return _to_png(fig)


def _iteration_bars(ax: Axes, iterations: Sequence[IterationSummary]) -> None:
    ax.set_title("(a) Candidates and accepted FTLs per iteration")
    if not iterations:
        _say_empty(ax, "no iterations yet")
        return
    ordered = sorted(iterations, key=lambda s: s.iteration)
    x = np.arange(len(ordered))
    width = 0.27
    series = [
        ([s.n_candidates for s in ordered], "candidates", COLOR_CANDIDATES, -width),
        ([s.n_accepted for s in ordered], "accepted", COLOR_ACCEPTED, 0.0),
        ([s.n_new_ftls for s in ordered], "new FTLs", COLOR_NEW, width),
    ]
    for values, label, color, offset in series:
        bars = ax.bar(x + offset, values, width, color=color, label=label)
        ax.bar_label(bars, fontsize=8, padding=1)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{s.iteration}\n|v| {s.thresholds.get('velocity', '?')}" for s in ordered])
    # At least three slots wide, so one or two iterations do not give bars a page wide.
    half_width = max(len(ordered) / 2, 1.5)
    centre = (len(ordered) - 1) / 2
    ax.set_xlim(centre - half_width, centre + half_width)
    ax.set_xlabel("Iteration (|velocity| threshold, mm/a)")
    ax.set_ylabel("Count")
    ax.grid(axis="x", visible=False)
    top = max(max(v) for v, *_ in series)
    ax.set_ylim(0, max(1.0, top) * 1.18)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = ax.get_legend_handles_labels()
    recalls = [(i, s.recall) for i, s in enumerate(ordered) if s.recall is not None]
    if recalls:
        twin = ax.twinx()
        twin.plot(
            [i for i, _ in recalls],
            [100.0 * r for _, r in recalls if r is not None],
            color="black",
            marker="o",
            linewidth=1.5,
            label="object recall",
        )
        twin.set_ylim(0, 105)
        twin.set_ylabel("Object recall (%)")
        twin.grid(False)
        twin.spines["right"].set_visible(True)
        h2, l2 = twin.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="upper left", ncols=2)


def _iteration_map(
    ax: Axes,
    iterations: Sequence[IterationSummary],
    ftls: gpd.GeoDataFrame,
    rasters: AreaRasters | None,
    crs: str,
    candidates: gpd.GeoDataFrame | None,
) -> None:
    ax.set_title("(b) FTLs by the iteration that found them")
    frames = [f for f in (ftls, candidates) if f is not None]
    bounds = rasters.extent if rasters is not None else _bounds_of(frames)
    if bounds is None:
        _say_empty(ax, "no FTLs yet")
        return
    if rasters is not None:
        # Faint, so that the coloured markers stand out on dark slopes.
        _draw_hillshade(ax, rasters, alpha=0.45)
    if len(ftls) == 0:
        _setup_map(ax, crs, bounds)
        ax.text(0.5, 0.5, "no FTLs yet", transform=ax.transAxes, ha="center", fontsize=12)
        return
    initial, found = _split_initial_found(ftls)
    numbers = sorted(
        {int(s.iteration) for s in iterations}
        | {int(i) for i in np.asarray(found["iteration"], dtype=float)}
    )
    palette = [ITERATION_COLORS[i % len(ITERATION_COLORS)] for i in range(len(numbers))]
    handles: list[Line2D] = []
    if len(initial):
        points = initial.geometry.representative_point()
        _draw_outlines(ax, list(initial.geometry), color="#444444", width=0.6)
        ax.scatter(
            points.x, points.y, s=18, marker="o", facecolor="white", edgecolor="#444444", zorder=4
        )
        handles.append(
            Line2D(
                [],
                [],
                marker="o",
                linestyle="",
                markerfacecolor="white",
                markeredgecolor="#444444",
                label=f"initial inventory ({len(initial)})",
            )
        )
    if len(found) and numbers:
        cmap = ListedColormap(palette)
        norm = BoundaryNorm(np.arange(len(numbers) + 1) - 0.5, len(numbers))
        index_of = {n: i for i, n in enumerate(numbers)}
        codes = np.array([index_of[int(i)] for i in np.asarray(found["iteration"], dtype=float)])
        points = found.geometry.representative_point()
        for code, color in enumerate(palette):
            chosen = codes == code
            if chosen.any():
                _draw_outlines(ax, list(found.geometry[chosen]), color=color, width=1.0)
        ax.scatter(
            points.x,
            points.y,
            c=codes,
            cmap=cmap,
            norm=norm,
            s=34,
            marker="^",
            edgecolor="black",
            linewidth=0.5,
            zorder=5,
        )
        for number, color in zip(numbers, palette, strict=True):
            count = int(np.sum(codes == index_of[number]))
            handles.append(
                Line2D(
                    [],
                    [],
                    marker="^",
                    linestyle="",
                    markerfacecolor=color,
                    markeredgecolor="black",
                    label=f"iteration {number} ({count})",
                )
            )
    _setup_map(ax, crs, bounds)
    ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        frameon=False,
        title="Found in",
    )
