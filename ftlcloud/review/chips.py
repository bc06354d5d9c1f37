"""Small PNG image chips around a candidate, for the review page.

Each layer is a 2-D array with its affine transform, in the candidates' CRS. Every chip of one
candidate covers the same square window (the candidate's bounds plus ``pad_px`` of context),
sampled nearest-neighbour at ``size_px`` × ``size_px`` and drawn with the candidate outline.
Only numpy, matplotlib's colormap tables and Pillow: no figure is built, so hundreds of
candidates render in about a second.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass

import matplotlib
import numpy as np
from affine import Affine
from PIL import Image, ImageDraw
from shapely.geometry.base import BaseGeometry

from ftlcloud.errors import InputError

#: One layer: a 2-D array (NaN = no data) and its affine transform.
Layer = tuple[np.ndarray, Affine]


@dataclass(frozen=True)
class ChipStyle:
    """How a layer is drawn."""

    cmap: str
    """A matplotlib colormap name."""
    symmetric: bool
    """Limits symmetric about 0 (diverging quantities)."""
    outline: str
    """Outline colour, chosen to stand out on the colormap."""
    label: str
    """Short caption with the unit."""


# Keyed by layer-name prefix, so both "velocity" and the factor name "velocity_mm_a" work.
# RdBu puts negative velocity (motion away from the satellite, typical of slope movement) in red;
# BrBG puts vegetation loss (negative ΔNDVI) in brown.
STYLES: dict[str, ChipStyle] = {
    "hillshade": ChipStyle("gray", False, "#ffd000", "hillshade"),
    "velocity": ChipStyle("RdBu", True, "#000000", "velocity mm/a"),
    "seasonal_amplitude": ChipStyle("viridis", False, "#ff2a2a", "amplitude mm"),
    "delta_ndvi": ChipStyle("BrBG", True, "#000000", "ΔNDVI"),
}
_DEFAULT_STYLE = ChipStyle("viridis", False, "#ff2a2a", "")

# A candidate of a few pixels still gets this many layer pixels of context on each side.
_MIN_HALF_WIDTH_PX = 6


def layer_style(name: str) -> ChipStyle:
    """The style of a layer, by name or factor name (``velocity_mm_a`` → velocity)."""
    for prefix, style in STYLES.items():
        if name.startswith(prefix):
            return style
    return ChipStyle(_DEFAULT_STYLE.cmap, False, _DEFAULT_STYLE.outline, name)


def robust_limits(values: np.ndarray, *, symmetric: bool, percentile: float = 98.0) -> tuple:
    """Display limits ignoring outliers: ±p(|v|) if symmetric, else (p(100−p), p(p))."""
    finite = np.asarray(values, dtype="float64")
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (-1.0, 1.0) if symmetric else (0.0, 1.0)
    if symmetric:
        half = float(np.percentile(np.abs(finite), percentile))
        half = half if half > 0 else 1.0
        return (-half, half)
    lo, hi = (float(v) for v in np.percentile(finite, [100.0 - percentile, percentile]))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return (lo, hi)


def layer_limits(
    layers: Mapping[str, Layer], *, percentile: float = 98.0
) -> dict[str, tuple[float, float]]:
    """Display limits per layer over the whole array, so chips of all candidates compare."""
    out: dict[str, tuple[float, float]] = {}
    for name, (array, _) in layers.items():
        style = layer_style(name)
        if name.startswith("hillshade"):
            out[name] = (0.0, 255.0)
            continue
        # A strided sample bounds the cost on big arrays; percentiles hardly change.
        step = max(1, int(math.sqrt(np.asarray(array).size / 1_000_000)))
        out[name] = robust_limits(
            np.asarray(array)[::step, ::step], symmetric=style.symmetric, percentile=percentile
        )
    return out


def hillshade(
    elevation_m: np.ndarray,
    transform: Affine,
    *,
    azimuth_deg: float = 315.0,
    altitude_deg: float = 45.0,
    z_factor: float = 1.0,
) -> np.ndarray:
    """Shaded relief 1..255 (0 = no data at edges and NaN), as ``gdaldem hillshade``.

    Horn's gradients; the sun's azimuth is clockwise from north. The transform must be in
    metres (a projected CRS), like the candidates.
    """
    z = np.asarray(elevation_m, dtype="float64")
    if z.ndim != 2:
        raise InputError(f"hillshade needs a 2-D elevation array, got shape {z.shape}.")
    res_x, res_y = abs(transform.a), abs(transform.e)
    p = np.pad(z, 1, constant_values=np.nan)
    a, b, c = p[:-2, :-2], p[:-2, 1:-1], p[:-2, 2:]
    d, f = p[1:-1, :-2], p[1:-1, 2:]
    g, h, i = p[2:, :-2], p[2:, 1:-1], p[2:, 2:]
    dz_dx = ((c + 2 * f + i) - (a + 2 * d + g)) / (8.0 * res_x) * z_factor  # towards east
    dz_dy = ((a + 2 * b + c) - (g + 2 * h + i)) / (8.0 * res_y) * z_factor  # towards north
    az, alt = math.radians(azimuth_deg), math.radians(altitude_deg)
    sun_e, sun_n, sun_u = math.sin(az) * math.cos(alt), math.cos(az) * math.cos(alt), math.sin(alt)
    cos_incidence = (-dz_dx * sun_e - dz_dy * sun_n + sun_u) / np.sqrt(1.0 + dz_dx**2 + dz_dy**2)
    shade = 1.0 + 254.0 * np.clip(cos_incidence, 0.0, None)
    return np.where(np.isfinite(shade), shade, 0.0)


def render_chips(
    candidate_geometry: BaseGeometry,
    layers: Mapping[str, Layer],
    *,
    size_px: int = 96,
    pad_px: int = 12,
    limits: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, bytes]:
    """PNG bytes per layer of a square chip around the candidate, outline drawn.

    Colours follow :data:`STYLES` (hillshade grey, velocity and ΔNDVI diverging with symmetric
    limits, seasonal amplitude sequential); ``limits`` (e.g. from :func:`layer_limits`) fixes
    the colour range per layer, otherwise it is taken from the chip itself. No-data pixels and
    pixels outside the layer are transparent.
    """
    if candidate_geometry is None or candidate_geometry.is_empty:
        raise InputError("render_chips needs a non-empty candidate geometry.")
    if size_px < 8 or not 0 <= 2 * pad_px < size_px:
        raise InputError(f"size_px={size_px}, pad_px={pad_px}: need size_px ≥ 8 and 2·pad < size.")
    if not layers:
        raise InputError("render_chips needs at least one layer.")
    first_transform = next(iter(layers.values()))[1]
    min_half = _MIN_HALF_WIDTH_PX * max(abs(first_transform.a), abs(first_transform.e))
    minx, miny, maxx, maxy = candidate_geometry.bounds
    cx, cy = (minx + maxx) / 2.0, (miny + maxy) / 2.0
    inner = (size_px - 2 * pad_px) / size_px
    half = max((maxx - minx) / 2.0, (maxy - miny) / 2.0, min_half) / inner
    res_out = 2.0 * half / size_px  # world units per chip pixel
    x0, y0 = cx - half, cy + half  # top-left corner of the chip
    centres = (np.arange(size_px) + 0.5) * res_out
    xs, ys = np.meshgrid(x0 + centres, y0 - centres)
    outline = _outline_pixels(candidate_geometry, x0, y0, res_out)

    chips: dict[str, bytes] = {}
    for name, (array, transform) in layers.items():
        values = _sample(np.asarray(array), transform, xs, ys, name)
        style = layer_style(name)
        if limits is not None and name in limits:
            lo, hi = limits[name]
        else:
            lo, hi = robust_limits(values, symmetric=style.symmetric)
        scaled = np.clip((values - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
        rgba = matplotlib.colormaps[style.cmap](scaled, bytes=True)
        rgba[~np.isfinite(values)] = (0, 0, 0, 0)
        image = Image.fromarray(rgba, mode="RGBA")
        draw = ImageDraw.Draw(image)
        width = max(1, size_px // 48)
        for ring in outline:
            draw.line([*ring, ring[0]], fill=style.outline, width=width, joint="curve")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=6)
        chips[name] = buffer.getvalue()
    return chips


def _sample(
    array: np.ndarray, transform: Affine, xs: np.ndarray, ys: np.ndarray, name: str
) -> np.ndarray:
    if array.ndim != 2:
        raise InputError(f"chip layer '{name}' must be a 2-D array, got shape {array.shape}.")
    inverse = ~transform
    cols, rows = inverse @ (xs, ys)
    cols = np.floor(cols).astype("int64")
    rows = np.floor(rows).astype("int64")
    inside = (rows >= 0) & (rows < array.shape[0]) & (cols >= 0) & (cols < array.shape[1])
    out = np.full(xs.shape, np.nan)
    out[inside] = array[rows[inside], cols[inside]]
    return out


def _outline_pixels(
    geometry: BaseGeometry, x0: float, y0: float, res_out: float
) -> list[list[tuple[float, float]]]:
    """Every ring (exteriors and holes) in chip pixel coordinates."""
    rings = []
    parts = getattr(geometry, "geoms", [geometry])
    for part in parts:
        if part.geom_type != "Polygon":
            continue
        for ring in (part.exterior, *part.interiors):
            rings.append([((x - x0) / res_out, (y0 - y) / res_out) for x, y in ring.coords])
    return rings
