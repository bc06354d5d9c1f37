"""A realistic synthetic study area for the demo and the end-to-end tests.

`generate_scene` builds, from a seed and nothing else, a Qilian-like piece of permafrost mountain:
a DEM (3300-4800 m, UTM 47N, 30 m), a Sentinel-1-like LOS displacement time series in metres
(MintPy convention: relative to the first date and to a reference pixel), annual-max NDVI for 2017
and 2019 on a slightly different grid (25 m, shifted by half a pixel), freeze-thaw landslides
(FTLs) with their full truth, decoys that move fast but are not FTLs (subsidence on flat valley
floors, rock glaciers above the FTL belt, a fast south-facing slope), and a partial starting
inventory. `write_scene` writes the files a user would have: a MintPy ``geo_timeseries.h5``
(optionally also one GeoTIFF per date), ``dem.tif`` (optionally 2x2 tiles), ``ndvi_<year>.tif``,
``inventory.gpkg``, ``truth.parquet`` and ``scene.json``.

The fields are pure numpy/scipy; vector truth uses shapely/geopandas. Everything is drawn from one
``numpy.random.Generator`` seeded by ``SceneSpec.seed``, in a fixed order, so a spec always gives
identical arrays.

Velocities are LOS (positive = towards the satellite). A landslide's sign comes from projecting
downslope motion on a descending-track line of sight (heading 190 degrees, incidence 38 degrees):
on north- and north-west-facing slopes it is negative (away), on north-east/east-facing ones it
can be positive.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import h5py
import numpy as np
import pandas as pd
import rasterio
import rasterio.features
import shapely
from affine import Affine
from numpy.typing import NDArray
from scipy import ndimage

from ftlcloud.errors import ConfigError, InputError, StoreError

log = logging.getLogger(__name__)

FloatArray = NDArray[np.float32]

#: |velocity| thresholds (mm/a) of the paper's five iterations (Table 2).
ITERATION_VELOCITY_THRESHOLDS_MM_A: tuple[float, ...] = (50.0, 40.0, 30.0, 20.0, 10.0)

# Per iteration band: |velocity| range of the landslides that band k first finds, kept 2 mm/a
# clear of the thresholds so that noise does not move a landslide into a neighbouring band.
_BAND_SPEED_MM_A: tuple[tuple[float, float], ...] = (
    (52.0, 88.0),
    (42.0, 48.0),
    (32.0, 38.0),
    (22.0, 28.0),
    (12.0, 18.0),
)
# Share of the landslides per band (Table 2 found 9, 3, 26, 22, 38; the early bands get a little
# more so that a small scene still has new landslides in every iteration).
_BAND_SHARE: tuple[float, ...] = (0.15, 0.10, 0.25, 0.22, 0.28)

_HEADING_DEG = 190.0  # Sentinel-1 descending heading
_INCIDENCE_DEG = 38.0
_WAVELENGTH_M = 0.05546576
_SEASONAL_PEAK_DOY = 60.0  # frost heave peaks around early March; thaw settlement in September

_PRESETS: dict[str, dict[str, Any]] = {
    "small": {
        "width": 200,
        "height": 160,
        "n_landslides": 15,
        "n_subsidence": 1,
        "n_rock_glaciers": 1,
        "n_south_slopes": 1,
    },
    "default": {
        "width": 600,
        "height": 500,
        "n_landslides": 60,
        "n_subsidence": 3,
        "n_rock_glaciers": 3,
        "n_south_slopes": 2,
    },
    "large": {
        "width": 1200,
        "height": 1000,
        "n_landslides": 200,
        "n_subsidence": 8,
        "n_rock_glaciers": 8,
        "n_south_slopes": 5,
    },
}


@dataclass(frozen=True)
class SceneSpec:
    """Everything that determines a synthetic scene; the same spec always gives the same scene."""

    seed: int = 7
    """Seed of the single random generator every field is drawn from."""
    width: int = 600
    """Columns of the DEM/deformation grid."""
    height: int = 500
    """Rows of the DEM/deformation grid."""
    resolution_m: float = 30.0
    """Pixel size of the DEM/deformation grid (square pixels)."""
    crs: str = "EPSG:32647"
    """CRS of every raster and vector output (UTM 47N: the paper's area is near 100 deg E)."""
    origin_xy_m: tuple[float, float] = (570000.0, 4270000.0)
    """Upper-left corner (x, y) of the grid, in CRS units."""
    n_landslides: int = 60
    """Freeze-thaw landslides to place."""
    n_subsidence: int = 3
    """Decoys: fast subsidence on flat valley floors."""
    n_rock_glaciers: int = 3
    """Decoys: fast rock glaciers above the FTL belt."""
    n_south_slopes: int = 2
    """Decoys: fast south-facing slopes with a weak seasonal signal (not freeze-thaw)."""
    inventory_fraction: float = 0.35
    """Share of the landslides already in the starting inventory."""
    hidden_fraction: float = 0.2
    """Share of the landslides without NDVI loss (the paper's 'hidden' FTLs)."""
    first_date: dt.date = dt.date(2017, 3, 25)
    """First Sentinel-1 acquisition (the time origin of every displacement)."""
    revisit_days: int = 12
    """Days between acquisition slots."""
    n_slots: int = 85
    """12-day slots from the first to the last date (2017-03-25 .. 2019-12-28 is 85)."""
    missing_slots: tuple[int, ...] = (14, 45, 70)
    """Slots without an acquisition (fixed, so 85 slots give the paper's 82 scenes)."""
    ndvi_resolution_m: float = 25.0
    """Pixel size of the NDVI grid (differs from the DEM on purpose)."""
    ndvi_years: tuple[int, int] = (2017, 2019)
    """Years of the two annual-max NDVI composites (earlier, later)."""

    def __post_init__(self) -> None:
        if self.width < 120 or self.height < 100:
            raise ConfigError(
                f"SceneSpec width x height = {self.width} x {self.height} px is too small for a "
                "study area with a valley floor, the FTL belt and summits: use at least 120 x 100 "
                "(the 'small' preset is 200 x 160)"
            )
        if self.resolution_m <= 0 or self.ndvi_resolution_m <= 0:
            raise ConfigError("SceneSpec resolution_m and ndvi_resolution_m must be positive")
        if not 0.0 <= self.inventory_fraction < 1.0 or not 0.0 <= self.hidden_fraction <= 1.0:
            raise ConfigError(
                "SceneSpec inventory_fraction must be in [0, 1), hidden_fraction in [0, 1]"
            )
        if self.n_landslides < len(ITERATION_VELOCITY_THRESHOLDS_MM_A):
            raise ConfigError(
                f"SceneSpec n_landslides={self.n_landslides}: need at least "
                f"{len(ITERATION_VELOCITY_THRESHOLDS_MM_A)}, one per iteration band"
            )
        bad = [s for s in self.missing_slots if not 0 < s < self.n_slots - 1]
        if bad:
            raise ConfigError(
                f"SceneSpec missing_slots {bad}: the first and last slots must be acquired; "
                f"pick slots in 1..{self.n_slots - 2}"
            )

    @classmethod
    def preset(cls, name: str, seed: int = 7) -> SceneSpec:
        """The 'small' (tests, 200x160), 'default' (demo, 600x500) or 'large' (1200x1000) scene."""
        try:
            return cls(seed=seed, **_PRESETS[name])
        except KeyError as err:
            raise ConfigError(
                f"unknown scene preset {name!r}: choose one of {sorted(_PRESETS)}"
            ) from err

    @classmethod
    def sized(cls, size: float, seed: int = 7) -> SceneSpec:
        """The default scene with each side scaled by `size` (counts scale with the area)."""
        if size <= 0:
            raise ConfigError(f"scene size multiplier must be positive, got {size}")
        base = _PRESETS["default"]
        area = size * size

        def count(key: str, floor: int) -> int:
            return max(floor, round(base[key] * area))

        return cls(
            seed=seed,
            width=max(120, round(base["width"] * size)),
            height=max(100, round(base["height"] * size)),
            n_landslides=count("n_landslides", 12),
            n_subsidence=count("n_subsidence", 1),
            n_rock_glaciers=count("n_rock_glaciers", 1),
            n_south_slopes=count("n_south_slopes", 1),
        )

    @property
    def dates(self) -> tuple[dt.date, ...]:
        """Acquisition dates: every `revisit_days` from `first_date`, without `missing_slots`."""
        missing = set(self.missing_slots)
        return tuple(
            self.first_date + dt.timedelta(days=self.revisit_days * k)
            for k in range(self.n_slots)
            if k not in missing
        )

    @property
    def transform(self) -> Affine:
        """Affine transform of the DEM/deformation grid (north-up)."""
        x0, y0 = self.origin_xy_m
        return Affine(self.resolution_m, 0.0, x0, 0.0, -self.resolution_m, y0)

    @property
    def ndvi_transform(self) -> Affine:
        """NDVI grid: its own resolution, origin shifted by half an NDVI pixel up and left."""
        x0, y0 = self.origin_xy_m
        half = self.ndvi_resolution_m / 2.0
        return Affine(
            self.ndvi_resolution_m, 0.0, x0 - half, 0.0, -self.ndvi_resolution_m, y0 + half
        )

    @property
    def ndvi_shape(self) -> tuple[int, int]:
        """(rows, cols) of the NDVI grid; it covers the whole DEM grid."""
        extra = self.ndvi_resolution_m / 2.0
        rows = math.ceil((self.height * self.resolution_m + extra) / self.ndvi_resolution_m)
        cols = math.ceil((self.width * self.resolution_m + extra) / self.ndvi_resolution_m)
        return rows, cols

    def to_json_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready values (dates as ISO strings), with the derived dates."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.isoformat() if isinstance(value, dt.date) else value
        out["dates"] = [d.isoformat() for d in self.dates]
        return out


@dataclass(frozen=True, eq=False)
class Scene:
    """A generated study area: rasters as numpy arrays, truth and inventory as GeoDataFrames."""

    spec: SceneSpec
    dem_m: FloatArray
    """Elevation (y, x), metres."""
    displacement_m: FloatArray
    """LOS displacement (time, y, x), metres, relative to the first date and the reference pixel."""
    dates: tuple[dt.date, ...]
    transform: Affine
    """Transform of `dem_m` and `displacement_m`."""
    ndvi: dict[int, FloatArray]
    """Annual-max NDVI per year (y, x) on the NDVI grid."""
    ndvi_transform: Affine
    crs: str
    truth: gpd.GeoDataFrame
    """Every FTL polygon: id, kind='ftl', velocity_mm_a, seasonal_amplitude_mm, delta_ndvi, hidden,
    small, area_ha, elevation_m, slope_deg, aspect_deg, expected_iteration, in_inventory."""
    decoys: gpd.GeoDataFrame
    """Non-FTL movers: kind 'subsidence', 'rock_glacier' or 'south_slope', same columns."""
    inventory: gpd.GeoDataFrame
    """Starting inventory: id (= truth id) and kind 'point' or 'polygon'."""
    velocity_mm_a: FloatArray
    """The true LOS velocity field (y, x) the displacement was built from."""
    seasonal_amplitude_mm: FloatArray
    """The true peak-to-peak seasonal amplitude field (y, x), Eq. 2."""
    reference_yx: tuple[int, int]
    """Reference pixel (row, col): zero displacement on every date."""

    @property
    def ndvi_2017(self) -> FloatArray:
        """NDVI of the earlier year (2017 by default)."""
        return self.ndvi[self.spec.ndvi_years[0]]

    @property
    def ndvi_2019(self) -> FloatArray:
        """NDVI of the later year (2019 by default)."""
        return self.ndvi[self.spec.ndvi_years[1]]

    @property
    def times_years(self) -> NDArray[np.float64]:
        """Years since the first date, per acquisition (Eq. 1's t)."""
        return np.array([(d - self.dates[0]).days / 365.25 for d in self.dates])


@dataclass(frozen=True)
class ScenePaths:
    """Where `write_scene` put each file."""

    root: Path
    timeseries_h5: Path
    dem: tuple[Path, ...]
    """One DEM file, or four tiles (row-major) when written tiled."""
    ndvi: dict[int, Path]
    inventory: Path
    truth: Path
    scene_json: Path
    deformation_tifs: tuple[Path, ...] = field(default_factory=tuple)
    """One GeoTIFF per date (deformation/<YYYYMMDD>.tif), empty unless requested."""


# --------------------------------------------------------------------------- random fields


def _spectral_field(
    rng: np.random.Generator, shape: tuple[int, int], beta: float, outer_scale_px: float
) -> NDArray[np.float64]:
    """Zero-mean, unit-std field with power spectrum ~ k**-beta, flattened beyond `outer_scale_px`.

    Synthesised on a grid padded by a quarter so the FFT's wrap-around does not show at the edges.
    """
    ny, nx = shape
    py, px = ny + ny // 4 + 8, nx + nx // 4 + 8
    ky = np.fft.fftfreq(py)[:, None]
    kx = np.fft.rfftfreq(px)[None, :]
    k = np.maximum(np.hypot(ky, kx), 1.0 / outer_scale_px)
    amp = k ** (-beta / 2.0)
    amp[0, 0] = 0.0
    spec = (rng.standard_normal(amp.shape) + 1j * rng.standard_normal(amp.shape)) * amp
    f = np.fft.irfft2(spec, s=(py, px))[:ny, :nx]
    f -= f.mean()
    std = f.std()
    return f / std if std > 0 else f


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], corr_px: float
) -> NDArray[np.float64]:
    """Zero-mean, unit-std Gaussian-correlated field (correlation length ~ `corr_px`)."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), corr_px, mode="reflect")
    f -= f.mean()
    std = f.std()
    return f / std if std > 0 else f


# --------------------------------------------------------------------------- terrain


def _terrain_derivatives(
    dem_m: NDArray[np.floating[Any]], resolution_m: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Slope (deg) and aspect (deg, 0 = N, clockwise, downslope-facing) by central differences."""
    drow, dcol = np.gradient(dem_m.astype(np.float64), resolution_m)
    dz_east, dz_north = dcol, -drow  # rows run south
    slope = np.degrees(np.arctan(np.hypot(dz_east, dz_north)))
    aspect = np.degrees(np.arctan2(-dz_east, -dz_north)) % 360.0
    return slope, aspect


_ROUGH_GRADIENT = 0.27  # RMS tan(slope) of the fractal relief
_RIDGE_GRADIENT = 0.2  # RMS tan(slope) of the ridge-and-gully relief


def _unit_gradient(f: NDArray[np.float64], resolution_m: float) -> NDArray[np.float64]:
    """`f` rescaled (metres) so that its RMS gradient magnitude is 1 m/m."""
    drow, dcol = np.gradient(f, resolution_m)
    rms = float(np.sqrt(np.mean(drow**2 + dcol**2)))
    return f / rms if rms > 0 else f


def _make_dem(rng: np.random.Generator, spec: SceneSpec) -> NDArray[np.float64]:
    """Qilian-like terrain: a WNW-ESE range whose long north flank falls to a flat main valley.

    Fractal relief on a macro profile, rescaled to 3300-4800 m; the lowest ground is filled flat
    (alluvial valley floor, slope < 1 deg) and a perched intermontane basin inside the FTL belt
    is filled flat too, so that flat subsidence can sit at FTL elevations.
    """
    ny, nx = spec.height, spec.width
    res = spec.resolution_m
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    # Crest line runs ~ WNW-ESE across the southern quarter (wavy), like the Qilian ranges; its
    # long north flank is concave (steep high up, gentle near the valley) and ends in the valley.
    phase = rng.uniform(0.0, 2.0 * np.pi)
    crest = ny * (0.74 + 0.04 * np.sin(2.0 * np.pi * xx / nx + phase)) + np.tan(np.radians(8.0)) * (
        xx - nx / 2.0
    )
    dist_n = (crest - yy) / ny  # > 0 north of the crest
    north = np.clip(1.0 - dist_n / 0.62, 0.0, 1.0) ** 1.5
    south = 1.0 - 0.45 * np.clip(-dist_n / 0.26, 0.0, 1.5)
    macro = np.where(dist_n > 0, north, south)
    # Fractal relief; outer scale ~ 6 km in ground units.
    outer_px = 6000.0 / res
    # Relief fields are scaled by their RMS gradient, so the slope distribution does not depend
    # on the grid size or resolution; spectral slope 3.6 keeps them rough but not pixel-noisy.
    rough = _unit_gradient(_spectral_field(rng, (ny, nx), beta=3.6, outer_scale_px=outer_px), res)
    ridged = 1.0 - np.abs(_spectral_field(rng, (ny, nx), beta=3.8, outer_scale_px=2500.0 / res))
    ridges = _unit_gradient(ndimage.gaussian_filter(ridged, 1.0), res)
    raw = 1350.0 * macro + _ROUGH_GRADIENT * rough + _RIDGE_GRADIENT * ridges
    dem = 3300.0 + (raw - raw.min()) / (raw.max() - raw.min()) * 1500.0
    # Main valley floor: fill everything below the 9th percentile (tilted 0.15 deg to the east).
    tilt = np.tan(np.radians(0.15)) * res * (xx - nx / 2.0)
    floor = np.percentile(dem, 9.0) + tilt
    dem = np.maximum(dem, floor)
    dem = 3300.0 + (dem - dem.min()) / (dem.max() - dem.min()) * 1500.0
    # Perched basin in the belt: fill a disc around a pixel at ~3750 m up to its local level.
    radius_px = 0.11 * min(nx, ny) + 300.0 / res
    r = np.hypot(yy - ny * 0.5, xx - nx * 0.5)
    interior = (dem > 3700) & (dem < 3800) & (r < 0.4 * min(nx, ny))
    if interior.any():
        cand = np.flatnonzero(interior)
        cy, cx = np.unravel_index(cand[rng.integers(cand.size)], (ny, nx))
        rb = np.hypot(yy - cy, xx - cx) / radius_px
        level = float(np.percentile(dem[rb < 1.0], 55.0))
        weight = np.clip((1.0 - rb) / 0.3, 0.0, 1.0)
        dem = dem + weight * np.maximum(level + 0.5 * tilt - dem, 0.0)
    # SRTM-like sub-metre noise; small enough to keep filled floors below 1 deg.
    dem += 0.15 * rng.standard_normal(dem.shape)
    return np.clip(dem, 3300.0, 4800.0)


# --------------------------------------------------------------------------- objects


def _los_unit() -> NDArray[np.float64]:
    """Ground-to-satellite unit vector (east, north, up) of a descending right-looking track."""
    inc = math.radians(_INCIDENCE_DEG)
    az = math.radians(_HEADING_DEG - 90.0)  # horizontal direction towards the satellite
    return np.array([math.sin(inc) * math.sin(az), math.sin(inc) * math.cos(az), math.cos(inc)])


def _los_sign(aspect_deg: float, slope_deg: float) -> float:
    """Sign of the LOS velocity of downslope motion (negative = away from the satellite)."""
    a, s = math.radians(aspect_deg), math.radians(slope_deg)
    down = np.array([math.sin(a) * math.cos(s), math.cos(a) * math.cos(s), -math.sin(s)])
    proj = float(down @ _los_unit())
    # Nearly perpendicular motion shows mainly its settlement: away from the satellite.
    return 1.0 if proj > 0.05 else -1.0


def _blob(
    rng: np.random.Generator,
    center_xy: tuple[float, float],
    azimuth_deg: float,
    area_ha: float,
    elongation: float,
    roughness: float,
) -> shapely.Polygon:
    """An irregular blob of `area_ha`, its long axis along `azimuth_deg` (clockwise from north)."""
    n = 64
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    b = 1.0
    a = elongation
    r = a * b / np.sqrt((b * np.cos(t)) ** 2 + (a * np.sin(t)) ** 2)
    for k in range(1, 6):
        eps = rng.uniform(0.0, roughness / k)
        r = r * (1.0 + eps * np.cos(k * t + rng.uniform(0.0, 2.0 * np.pi)))
    u, v = r * np.cos(t), r * np.sin(t)  # u along the long axis
    az = math.radians(azimuth_deg)
    along = np.array([math.sin(az), math.cos(az)])
    across = np.array([math.cos(az), -math.sin(az)])
    x = center_xy[0] + u * along[0] + v * across[0]
    y = center_xy[1] + u * along[1] + v * across[1]
    poly = shapely.make_valid(shapely.Polygon(np.column_stack([x, y])))
    if not isinstance(poly, shapely.Polygon):
        parts = [g for g in getattr(poly, "geoms", []) if isinstance(g, shapely.Polygon)]
        poly = max(parts, key=lambda g: g.area)
    scale = math.sqrt(area_ha * 1e4 / poly.area)
    return shapely.affinity.scale(poly, scale, scale, origin=center_xy)


@dataclass
class _Placer:
    """Places non-overlapping objects on the grid, each checked against a pixel criterion."""

    rng: np.random.Generator
    spec: SceneSpec
    occupied: NDArray[np.bool_]
    aspect_smooth: NDArray[np.float64]

    def place(
        self,
        kind: str,
        seeds: NDArray[np.float64],
        ok_pixels: NDArray[np.bool_],
        area_ha: float,
        elongation: float,
        roughness: float,
        min_ok: float = 0.85,
        attempts: int = 120,
    ) -> tuple[shapely.Polygon, NDArray[np.bool_]] | None:
        """Draw seeds (weights `seeds`) until a blob fits: inside, free, mostly on `ok_pixels`."""
        spec = self.spec
        res = spec.resolution_m
        tr = spec.transform
        margin_px = 3
        for attempt in range(attempts):
            weights = np.where(self.occupied, 0.0, seeds).ravel()
            total = weights.sum()
            if total <= 0:
                return None
            idx = int(self.rng.choice(weights.size, p=weights / total))
            row, col = divmod(idx, spec.width)
            cx, cy = tr @ (col + 0.5, row + 0.5)
            area = max(area_ha * (0.8 ** (attempt // 20)), 2.0)
            poly = _blob(
                self.rng, (cx, cy), float(self.aspect_smooth[row, col]), area, elongation, roughness
            )
            minx, miny, maxx, maxy = poly.bounds
            c0, r0 = ~tr @ (minx, maxy)
            c1, r1 = ~tr @ (maxx, miny)
            if (
                c0 < margin_px
                or r0 < margin_px
                or c1 > spec.width - margin_px
                or r1 > spec.height - margin_px
            ):
                continue
            mask = rasterio.features.rasterize(
                [(poly, 1)], out_shape=(spec.height, spec.width), transform=tr, dtype="uint8"
            ).astype(bool)
            n = int(mask.sum())
            if n < 10 or (mask & self.occupied).any():
                continue
            if (ok_pixels[mask]).mean() < min_ok:
                continue
            # Keep two pixels of free ground between objects so they stay separate regions.
            gap = max(2, round(60.0 / res))
            self.occupied |= ndimage.binary_dilation(mask, iterations=gap)
            log.debug("placed %s of %.1f ha after %d attempts", kind, area, attempt + 1)
            return poly, mask
        return None


def _aspect_weight(aspect: NDArray[np.float64]) -> NDArray[np.float64]:
    """Relative FTL frequency by aspect: highest NW, then N, NE; SE lowest (paper, Fig. 4c)."""
    w = np.full(aspect.shape, 0.0)
    w[(aspect >= 290) & (aspect < 345)] = 1.0
    w[((aspect >= 270) & (aspect < 290)) | (aspect >= 345)] = 0.75
    w[aspect < 30] = 0.55
    w[(aspect >= 30) & (aspect < 60)] = 0.3
    return w


def _assign_bands(n: int) -> list[int]:
    """Band (1..5) per landslide by largest remainder of `_BAND_SHARE`, at least 2 per band."""
    raw = np.array(_BAND_SHARE) * n
    counts = np.maximum(np.floor(raw).astype(int), 2 if n >= 10 else 1)
    order = np.argsort(-(raw - np.floor(raw)))
    i = 0
    while counts.sum() < n:
        counts[order[i % len(order)]] += 1
        i += 1
    while counts.sum() > n:
        counts[int(np.argmax(counts))] -= 1
    return [band + 1 for band, c in enumerate(counts) for _ in range(int(c))]


# --------------------------------------------------------------------------- the generator


def generate_scene(spec: SceneSpec | None = None) -> Scene:
    """Generate the synthetic study area described by `spec` (default: `SceneSpec()`)."""
    spec = spec or SceneSpec()
    rng = np.random.default_rng(spec.seed)
    ny, nx = spec.height, spec.width
    res = spec.resolution_m
    tr = spec.transform

    dem = _make_dem(rng, spec)
    slope, aspect = _terrain_derivatives(dem, res)
    _, aspect_smooth = _terrain_derivatives(ndimage.gaussian_filter(dem, 3.0), res)

    # Incoherent: layover/shadow on very steep ground, and snow/ice on the summits.
    snow_noise = _smooth_field(rng, (ny, nx), 6.0)
    incoherent = (slope > 40.0) | (dem > 4680.0 + 60.0 * snow_noise)
    incoherent = ndimage.binary_opening(incoherent, iterations=1) | (slope > 45.0)
    coherent = ~incoherent

    placer = _Placer(rng, spec, occupied=incoherent.copy(), aspect_smooth=aspect_smooth)
    records: list[dict[str, Any]] = []
    masks: list[NDArray[np.bool_]] = []

    # ---- freeze-thaw landslides
    belt = (dem >= 3600) & (dem <= 4400)
    ftl_ok = belt & (slope >= 3.0) & (slope <= 32.0) & coherent
    seedable = belt & (slope >= 5.0) & (slope <= 30.0) & coherent
    elev_w = np.exp(-0.5 * ((dem - 3880.0) / 260.0) ** 2)
    primary = seedable * _aspect_weight(aspect_smooth) * elev_w
    # A few FTLs face east or south-west; due south is left to the 'south_slope' decoys.
    secondary_aspect = ((aspect_smooth >= 60) & (aspect_smooth < 112.5)) | (
        (aspect_smooth >= 225) & (aspect_smooth < 270)
    )
    secondary = seedable * secondary_aspect * elev_w
    bands = _assign_bands(spec.n_landslides)
    rng.shuffle(bands)
    for i in range(spec.n_landslides):
        area = float(np.clip(np.exp(rng.normal(math.log(6.0), 0.8)), 2.0, 60.0))
        seeds = secondary if rng.random() < 0.12 else primary
        placed = (
            placer.place("ftl", seeds, ftl_ok, area, rng.uniform(1.6, 3.2), roughness=0.22)
            or placer.place("ftl", primary, ftl_ok, area, rng.uniform(1.6, 3.2), roughness=0.22)
            # Crowded scene: a small one anywhere in the belt rather than no scene at all.
            or placer.place("ftl", seedable * elev_w, ftl_ok, 2.0, 1.8, 0.15, min_ok=0.7)
        )
        if placed is None:
            raise InputError(
                f"could not place landslide {i + 1} of {spec.n_landslides} in a "
                f"{spec.width} x {spec.height} px scene (seed {spec.seed}): lower n_landslides "
                "or use a larger size"
            )
        poly, mask = placed
        band = bands[i]
        lo, hi = _BAND_SPEED_MM_A[band - 1]
        speed = rng.uniform(lo, hi)
        hidden = rng.random() < spec.hidden_fraction
        records.append(
            {
                "id": f"FTL-{i + 1:03d}",
                "kind": "ftl",
                "geometry": poly,
                "speed": speed,
                "seasonal_amplitude_mm": rng.uniform(9.0, 21.0),
                "peak_doy": _SEASONAL_PEAK_DOY + rng.normal(0.0, 12.0),
                "delta_ndvi": rng.uniform(-0.04, 0.03) if hidden else -rng.uniform(0.12, 0.3),
                "expected_iteration": band,
            }
        )
        masks.append(mask)

    # ---- decoys
    flat = (slope < 0.7) & coherent
    for j in range(spec.n_subsidence):
        flat_dist = ndimage.distance_transform_edt(flat & ~placer.occupied) * res
        # Every other one on the perched basin, so that only the slope factor rejects it.
        prefer_high = j % 2 == 0 and bool((flat_dist[dem >= 3600] > 150.0).any())
        zone = (dem >= 3600) if prefer_high else np.ones_like(flat)
        r_max_m = (float(flat_dist[zone].max()) - res) / 1.35
        area = max(min(rng.uniform(6.0, 20.0), math.pi * r_max_m**2 / 1e4), 2.0)
        need = 1.35 * math.sqrt(area * 1e4 / math.pi) + res
        seeds = ((flat_dist >= need) & zone).astype(float)
        elong = rng.uniform(1.0, 1.4)
        placed = placer.place("subsidence", seeds, flat, area, elong, 0.1, 0.95) or placer.place(
            "subsidence", (flat_dist >= 3 * res).astype(float), flat, 3.0, 1.0, 0.05, 0.9
        )
        if placed is None:
            raise InputError(
                f"could not place subsidence decoy {j + 1} on a flat valley floor (seed "
                f"{spec.seed}): lower n_subsidence or use a larger size"
            )
        records.append(
            {
                "id": f"SUB-{j + 1:02d}",
                "kind": "subsidence",
                "geometry": placed[0],
                "speed": rng.uniform(30.0, 80.0),
                "sign": -1.0,
                "seasonal_amplitude_mm": rng.uniform(4.0, 9.0),
                "peak_doy": _SEASONAL_PEAK_DOY + rng.normal(0.0, 12.0),
                "delta_ndvi": rng.uniform(-0.03, 0.03),
                "expected_iteration": 0,
            }
        )
        masks.append(placed[1])
    rg_ok = (dem > 4480) & (slope >= 3) & (slope <= 38) & coherent
    for j in range(spec.n_rock_glaciers):
        seeds = ((dem > 4520) & (slope >= 8) & (slope <= 30) & coherent).astype(float)
        placed = placer.place(
            "rock_glacier", seeds, rg_ok, rng.uniform(4.0, 12.0), rng.uniform(1.4, 2.4), 0.15, 0.85
        )
        if placed is None:
            raise InputError(
                f"could not place rock-glacier decoy {j + 1} above 4500 m (seed {spec.seed}): "
                "lower n_rock_glaciers or use a larger size"
            )
        records.append(
            {
                "id": f"RG-{j + 1:02d}",
                "kind": "rock_glacier",
                "geometry": placed[0],
                "speed": rng.uniform(30.0, 100.0),
                "seasonal_amplitude_mm": rng.uniform(5.0, 12.0),
                "peak_doy": _SEASONAL_PEAK_DOY + rng.normal(0.0, 12.0),
                "delta_ndvi": rng.uniform(-0.02, 0.02),
                "expected_iteration": 0,
            }
        )
        masks.append(placed[1])
    south = (aspect_smooth >= 150) & (aspect_smooth <= 210)
    for j in range(spec.n_south_slopes):
        seeds = (seedable & south).astype(float)
        placed = placer.place(
            "south_slope", seeds, ftl_ok & south, rng.uniform(5.0, 20.0), 2.0, 0.2, 0.75
        )
        if placed is None:
            raise InputError(
                f"could not place south-slope decoy {j + 1} (seed {spec.seed}): lower "
                "n_south_slopes or use a larger size"
            )
        records.append(
            {
                "id": f"SS-{j + 1:02d}",
                "kind": "south_slope",
                "geometry": placed[0],
                "speed": rng.uniform(30.0, 60.0),
                "seasonal_amplitude_mm": rng.uniform(2.0, 5.0),
                "peak_doy": _SEASONAL_PEAK_DOY + rng.normal(0.0, 12.0),
                "delta_ndvi": -rng.uniform(0.0, 0.15),
                "expected_iteration": 0,
            }
        )
        masks.append(placed[1])

    # ---- per-object terrain statistics and the signed LOS velocity
    for rec, mask in zip(records, masks, strict=True):
        rad = np.radians(aspect[mask])
        mean_aspect = float(np.degrees(np.arctan2(np.sin(rad).mean(), np.cos(rad).mean())) % 360)
        mean_slope = float(slope[mask].mean())
        sign = rec.pop("sign", None) or _los_sign(mean_aspect, mean_slope)
        rec["velocity_mm_a"] = sign * rec.pop("speed")
        rec["area_ha"] = rec["geometry"].area / 1e4
        rec["elevation_m"] = float(dem[mask].mean())
        rec["slope_deg"] = mean_slope
        rec["aspect_deg"] = mean_aspect
        rec["hidden"] = rec["delta_ndvi"] > -0.1
        rec["small"] = rec["area_ha"] < 10.0

    objects = np.zeros((ny, nx), bool)
    for m in masks:
        objects |= m

    # ---- reference pixel: stable, coherent, far from every mover, nearest the centre
    free = coherent & (slope < 15.0) & ~ndimage.binary_dilation(objects, iterations=10)
    if not free.any():
        raise InputError(
            f"no stable reference pixel in the scene (seed {spec.seed}); use a larger size"
        )
    rows, cols = np.nonzero(free)
    k = int(np.argmin((rows - ny / 2) ** 2 + (cols - nx / 2) ** 2))
    ref_y, ref_x = int(rows[k]), int(cols[k])

    # ---- velocity (mm/a) and seasonal (mm) fields, relative to the reference pixel as MintPy's
    # are, so that the landslides' attributes are exactly what a fit of the data returns.
    v_bg = 1.8 * _smooth_field(rng, (ny, nx), 25.0) + 0.6 * _smooth_field(rng, (ny, nx), 4.0)
    # Background seasonal terms of random phase: peak-to-peak mostly 2-6 mm after referencing.
    c_bg = 1.1 * _smooth_field(rng, (ny, nx), 20.0)
    d_bg = 1.1 * _smooth_field(rng, (ny, nx), 20.0)
    v_bg -= v_bg[ref_y, ref_x]
    c_bg -= c_bg[ref_y, ref_x]
    d_bg -= d_bg[ref_y, ref_x]
    velocity, c, d = v_bg.copy(), c_bg.copy(), d_bg.copy()
    # Rim pixels move at ~85 % of the core, as the margins of a real slide do.
    core = ndimage.distance_transform_edt(objects) >= 1.5
    weight = np.where(core, 1.0, 0.85)
    doy0 = spec.dates[0].timetuple().tm_yday
    for rec, m in zip(records, masks, strict=True):
        w = weight[m]
        # Eq. 1 with the seasonal maximum on `peak_doy`: c = A/2 cos(phi), d = A/2 sin(phi).
        phi = 2 * np.pi * (rec["peak_doy"] - doy0) / 365.25
        half = rec["seasonal_amplitude_mm"] / 2.0
        velocity[m] = w * rec["velocity_mm_a"] + (1 - w) * v_bg[m]
        c[m] = w * half * np.cos(phi) + (1 - w) * c_bg[m]
        d[m] = w * half * np.sin(phi) + (1 - w) * d_bg[m]
    amplitude = 2.0 * np.hypot(c, d)

    # ---- displacement time series
    dates = spec.dates
    t_years = np.array([(day - dates[0]).days / 365.25 for day in dates])
    z_rel_km = (dem - dem[ref_y, ref_x]) / 1000.0
    gap_p = 0.02 + 0.03 * (0.5 + 0.5 * np.tanh(_smooth_field(rng, (ny, nx), 15.0)))
    outer_atmo_px = 20000.0 / res
    disp = np.empty((len(dates), ny, nx), np.float32)
    first = np.zeros((ny, nx))
    for i, t in enumerate(t_years):
        atmo = rng.uniform(1.5, 4.0) * _spectral_field(rng, (ny, nx), 8.0 / 3.0, outer_atmo_px)
        strat = rng.normal(0.0, 3.0) * z_rel_km  # residual stratified delay, mm per km
        white = 1.0 * rng.standard_normal((ny, nx))
        seasonal = c * np.cos(2 * np.pi * t) + d * np.sin(2 * np.pi * t)
        mm = velocity * t + seasonal + atmo + strat + white
        if i == 0:
            first = mm
        mm = mm - first  # MintPy: every date relative to the first (reference) date
        mm -= mm[ref_y, ref_x]  # and to the reference pixel
        if i > 0:
            gaps = rng.random((ny, nx)) < gap_p
            gaps[ref_y, ref_x] = False
            mm[gaps] = np.nan
        mm[incoherent] = np.nan
        disp[i] = (mm / 1000.0).astype(np.float32)

    # ---- NDVI on its own grid
    ndvi = _make_ndvi(rng, spec, dem, records)

    # ---- vectors
    gdf = gpd.GeoDataFrame(records, geometry="geometry", crs=spec.crs).drop(columns=["peak_doy"])
    truth = gdf[gdf["kind"] == "ftl"].reset_index(drop=True)
    decoys = gdf[gdf["kind"] != "ftl"].reset_index(drop=True)
    truth, inventory = _make_inventory(rng, spec, truth)
    cols_order = [
        "id",
        "kind",
        "velocity_mm_a",
        "seasonal_amplitude_mm",
        "delta_ndvi",
        "hidden",
        "small",
        "area_ha",
        "elevation_m",
        "slope_deg",
        "aspect_deg",
        "expected_iteration",
        "in_inventory",
        "geometry",
    ]
    decoys["in_inventory"] = False
    return Scene(
        spec=spec,
        dem_m=dem.astype(np.float32),
        displacement_m=disp,
        dates=dates,
        transform=tr,
        ndvi=ndvi,
        ndvi_transform=spec.ndvi_transform,
        crs=spec.crs,
        truth=truth[cols_order],
        decoys=decoys[cols_order],
        inventory=inventory,
        velocity_mm_a=velocity.astype(np.float32),
        seasonal_amplitude_mm=amplitude.astype(np.float32),
        reference_yx=(ref_y, ref_x),
    )


def _make_ndvi(
    rng: np.random.Generator,
    spec: SceneSpec,
    dem: NDArray[np.float64],
    records: Sequence[dict[str, Any]],
) -> dict[int, FloatArray]:
    """Annual-max NDVI: alpine meadow thinning with elevation, plus the landslides' loss."""
    shape = spec.ndvi_shape
    ntr = spec.ndvi_transform
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    xs, ys = ntr @ (cols + 0.5, rows + 0.5)
    dem_col, dem_row = ~spec.transform @ (xs, ys)
    z = ndimage.map_coordinates(dem, [dem_row - 0.5, dem_col - 0.5], order=1, mode="nearest")
    meadow = 0.12 + 0.48 / (1.0 + np.exp((z - 4250.0) / 140.0))
    ndvi_early = meadow + 0.05 * _smooth_field(rng, shape, 6.0) + 0.02 * rng.standard_normal(shape)
    change = 0.015 * _smooth_field(rng, shape, 20.0) + 0.015 * rng.standard_normal(shape)
    loss = rasterio.features.rasterize(
        [(rec["geometry"], float(rec["delta_ndvi"])) for rec in records],
        out_shape=shape,
        transform=ntr,
        fill=0.0,
        dtype="float32",
    )
    ndvi_late = ndvi_early + change + loss
    early, late = spec.ndvi_years
    return {
        early: np.clip(ndvi_early, -0.1, 0.95).astype(np.float32),
        late: np.clip(ndvi_late, -0.1, 0.95).astype(np.float32),
    }


def _make_inventory(
    rng: np.random.Generator, spec: SceneSpec, truth: gpd.GeoDataFrame
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Pick the starting inventory: ~`inventory_fraction` per band, favouring the lower belt.

    Known landslides lie mostly below 4100 m (near roads), so thresholds learnt from them must
    widen as iterations accept higher ones, as in Table 2. At least one landslide per band stays
    out of the inventory so each iteration has something new to find.
    """
    chosen: list[int] = []
    for band in range(1, len(_BAND_SPEED_MM_A) + 1):
        members = np.flatnonzero(truth["expected_iteration"].to_numpy() == band)
        n_pick = min(round(spec.inventory_fraction * len(members)), len(members) - 1)
        if n_pick <= 0:
            continue
        elev = truth["elevation_m"].to_numpy()[members]
        w = np.where(elev < 4100.0, 1.0, 0.25)
        chosen.extend(rng.choice(members, size=n_pick, replace=False, p=w / w.sum()).tolist())
    chosen.sort()
    truth = truth.copy()
    truth["in_inventory"] = False
    truth.loc[chosen, "in_inventory"] = True
    # Half points, half polygons, in a seeded order (both kinds present from two entries on).
    as_point = np.arange(len(chosen)) % 2 == 0
    rng.shuffle(as_point)
    geoms, kinds, ids = [], [], []
    for i, point in zip(chosen, as_point, strict=True):
        poly = truth.geometry.iloc[i]
        if point:
            geoms.append(poly.representative_point())
            kinds.append("point")
        else:
            # A digitised boundary is coarser than the truth.
            geoms.append(poly.simplify(0.5 * spec.resolution_m))
            kinds.append("polygon")
        ids.append(truth["id"].iloc[i])
    inventory = gpd.GeoDataFrame({"id": ids, "kind": kinds}, geometry=geoms, crs=spec.crs)
    return truth, inventory


def scene_summary(scene: Scene) -> dict[str, Any]:
    """Counts for the demo to print: landslides (hidden, small, in inventory), decoys, dates."""
    truth = scene.truth
    per_band = truth.groupby("expected_iteration").size()
    return {
        "size_px": (scene.spec.width, scene.spec.height),
        "resolution_m": scene.spec.resolution_m,
        "area_km2": scene.spec.width * scene.spec.height * scene.spec.resolution_m**2 / 1e6,
        "n_dates": len(scene.dates),
        "first_date": scene.dates[0].isoformat(),
        "last_date": scene.dates[-1].isoformat(),
        "n_landslides": len(truth),
        "n_hidden": int(truth["hidden"].sum()),
        "n_small": int(truth["small"].sum()),
        "n_in_inventory": int(truth["in_inventory"].sum()),
        "n_inventory_points": int((scene.inventory["kind"] == "point").sum()),
        "n_inventory_polygons": int((scene.inventory["kind"] == "polygon").sum()),
        "n_missing_from_inventory": int((~truth["in_inventory"]).sum()),
        "landslides_per_expected_iteration": {int(k): int(v) for k, v in per_band.items()},
        "decoys": {str(k): int(v) for k, v in scene.decoys.groupby("kind").size().items()},
        "elevation_range_m": (float(np.nanmin(scene.dem_m)), float(np.nanmax(scene.dem_m))),
    }


# --------------------------------------------------------------------------- the writer


def _write_tif(
    path: Path,
    array: NDArray[Any],
    transform: Affine,
    crs: str,
    description: str,
    tags: dict[str, str] | None = None,
) -> None:
    profile = {
        "driver": "GTiff",
        "height": array.shape[0],
        "width": array.shape[1],
        "count": 1,
        "dtype": str(array.dtype),
        "crs": crs,
        "transform": transform,
        "nodata": float("nan"),
        "compress": "deflate",
        "predictor": 3,  # floating-point predictor: several times smaller for smooth fields
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    try:
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(array, 1)
            dst.set_band_description(1, description)
            if tags:
                dst.update_tags(**tags)
    except (OSError, rasterio.errors.RasterioError) as err:
        raise StoreError(
            f"cannot write {path}: {err}; check the output directory is writable"
        ) from err


def write_scene(
    scene: Scene,
    out_dir: str | Path,
    *,
    per_date_geotiffs: bool = False,
    dem_tiles: bool = False,
) -> ScenePaths:
    """Write `scene` as the files a user would have, under `out_dir` (created if needed).

    - ``geo_timeseries.h5``: MintPy layout (datasets ``timeseries`` (time, y, x) float32
      metres, ``date`` YYYYMMDD bytes, ``bperp``; string attributes as MintPy writes them,
      X_FIRST/Y_FIRST the upper-left corner, Y_STEP negative, REF_DATE the first date,
      REF_Y/REF_X the reference pixel).
    - ``deformation/<YYYYMMDD>.tif`` per date when `per_date_geotiffs` (float32 metres, NaN nodata).
    - ``dem.tif``, or with `dem_tiles` four tiles ``dem/dem_r<i>_c<j>.tif`` (2 x 2, no overlap).
    - ``ndvi_<year>.tif`` for both years, on the NDVI grid.
    - ``inventory.gpkg``: ONE layer ``inventory`` with mixed Point/Polygon geometry and columns
      ``id``, ``kind`` ('point'/'polygon'); ``geopandas.read_file`` reads it back as is.
    - ``truth.parquet``: GeoParquet 1.1 of every landslide and decoy (column ``kind``).
    - ``scene.json``: the spec, the dates and the file list.
    """
    root = Path(out_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(f"cannot create scene directory {root}: {err}") from err
    spec = scene.spec
    crs = scene.crs
    tr = scene.transform
    ny, nx = scene.dem_m.shape
    date_strs = [d.strftime("%Y%m%d") for d in scene.dates]

    h5_path = root / "geo_timeseries.h5"
    epsg = crs.split(":")[-1]
    attrs = {
        "FILE_TYPE": "timeseries",
        "UNIT": "m",
        "DATA_TYPE": "float32",
        "LENGTH": str(ny),
        "WIDTH": str(nx),
        "X_FIRST": repr(float(tr.c)),
        "Y_FIRST": repr(float(tr.f)),
        "X_STEP": repr(float(tr.a)),
        "Y_STEP": repr(float(tr.e)),
        "X_UNIT": "meters",
        "Y_UNIT": "meters",
        "EPSG": epsg,
        "UTM_ZONE": "47N" if epsg == "32647" else "",
        "REF_DATE": date_strs[0],
        "REF_Y": str(scene.reference_yx[0]),
        "REF_X": str(scene.reference_yx[1]),
        "START_DATE": date_strs[0],
        "END_DATE": date_strs[-1],
        "ORBIT_DIRECTION": "DESCENDING",
        "HEADING": repr(_HEADING_DEG - 360.0),
        "CENTER_INCIDENCE_ANGLE": repr(_INCIDENCE_DEG),
        "WAVELENGTH": repr(_WAVELENGTH_M),
        "PLATFORM": "Sen",
        "PROCESSOR": "ftlcloud-demo-scene",
        "FTLCLOUD_SCENE_SEED": str(spec.seed),
    }
    try:
        with h5py.File(h5_path, "w") as f:
            f.create_dataset("timeseries", data=scene.displacement_m, dtype="float32")
            f.create_dataset("date", data=np.array(date_strs, dtype="S8"))
            f.create_dataset("bperp", data=np.zeros(len(date_strs), dtype="float32"))
            for key, value in attrs.items():
                f.attrs[key] = value
    except OSError as err:
        raise StoreError(f"cannot write {h5_path}: {err}") from err

    tifs: list[Path] = []
    if per_date_geotiffs:
        ddir = root / "deformation"
        ddir.mkdir(exist_ok=True)
        for i, ds in enumerate(date_strs):
            p = ddir / f"{ds}.tif"
            tags = {"UNIT": "m", "DATE": ds, "REF_DATE": date_strs[0]}
            _write_tif(p, scene.displacement_m[i], tr, crs, "displacement_m", tags)
            tifs.append(p)

    dem_paths: list[Path] = []
    if dem_tiles:
        (root / "dem").mkdir(exist_ok=True)
        row_edges = [0, ny // 2, ny]
        col_edges = [0, nx // 2, nx]
        for i in range(2):
            for j in range(2):
                sub = scene.dem_m[row_edges[i] : row_edges[i + 1], col_edges[j] : col_edges[j + 1]]
                tile_tr = tr @ Affine.translation(col_edges[j], row_edges[i])
                p = root / "dem" / f"dem_r{i}_c{j}.tif"
                _write_tif(p, sub, tile_tr, crs, "elevation_m")
                dem_paths.append(p)
    else:
        p = root / "dem.tif"
        _write_tif(p, scene.dem_m, tr, crs, "elevation_m")
        dem_paths.append(p)

    ndvi_paths: dict[int, Path] = {}
    for year, arr in scene.ndvi.items():
        p = root / f"ndvi_{year}.tif"
        _write_tif(
            p, arr, scene.ndvi_transform, crs, f"ndvi_annual_max_{year}", {"YEAR": str(year)}
        )
        ndvi_paths[year] = p

    inv_path = root / "inventory.gpkg"
    truth_path = root / "truth.parquet"
    try:
        if inv_path.exists():
            inv_path.unlink()  # a GeoPackage is appended to otherwise
        scene.inventory.to_file(inv_path, layer="inventory", driver="GPKG")
        all_truth = pd.concat([scene.truth, scene.decoys], ignore_index=True)
        gpd.GeoDataFrame(all_truth, geometry="geometry", crs=crs).to_parquet(
            truth_path,
            compression="zstd",
            geometry_encoding="WKB",
            write_covering_bbox=True,
            schema_version="1.1.0",
        )
    except OSError as err:
        raise StoreError(f"cannot write the scene vectors under {root}: {err}") from err

    json_path = root / "scene.json"
    files = [h5_path, *tifs, *dem_paths, *ndvi_paths.values(), inv_path, truth_path]
    doc = {
        "spec": spec.to_json_dict(),
        "summary": _jsonable(scene_summary(scene)),
        "reference_yx": list(scene.reference_yx),
        "files": [str(p.relative_to(root)) for p in files],
    }
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    log.info("wrote scene (seed %d) to %s: %d files", spec.seed, root, len(files) + 1)
    return ScenePaths(
        root=root,
        timeseries_h5=h5_path,
        dem=tuple(dem_paths),
        ndvi=ndvi_paths,
        inventory=inv_path,
        truth=truth_path,
        scene_json=json_path,
        deformation_tifs=tuple(tifs),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
