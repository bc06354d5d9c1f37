"""Single-factor masks and their overlap, as one uint8 bit field per pixel.

Everything here is elementwise, so masking a tile gives exactly the window of the whole-raster
mask. NaN never sets a bit. Aspect ranges live in [0, 360], so flat cells (aspect == FLAT_ASPECT,
-1) are never inside any aspect range and never reach the overlap.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import numpy as np

from ftlcloud.errors import InputError
from ftlcloud.science.rules import Thresholds

#: Factors compute_masks reads.
MASK_FACTORS = ("elevation_m", "slope_deg", "aspect_deg", "velocity_mm_a")


class MaskBit(enum.IntFlag):
    """One bit per single-factor mask, plus OVERLAP where all four hold."""

    ELEVATION = 1
    SLOPE = 2
    ASPECT = 4
    VELOCITY = 8
    OVERLAP = 16


#: The four factor bits; OVERLAP is set exactly where all of them are.
FACTOR_BITS = MaskBit.ELEVATION | MaskBit.SLOPE | MaskBit.ASPECT | MaskBit.VELOCITY


def _factor(factors: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    if name not in factors:
        raise InputError(
            f"compute_masks needs factor '{name}'; got {sorted(factors)}. Compute the factors "
            "first (velocity_mm_a, elevation_m, slope_deg, aspect_deg)"
        )
    arr = np.asarray(factors[name], dtype=np.float64)
    if arr.ndim != 2:
        raise InputError(f"factor '{name}' must be a 2-D array, got shape {arr.shape}")
    return arr


def compute_masks(factors: Mapping[str, np.ndarray], thresholds: Thresholds) -> np.ndarray:
    """uint8 MaskBit field: elevation/slope within range, aspect in the union, |velocity| >= min."""
    arrays = {name: _factor(factors, name) for name in MASK_FACTORS}
    shapes = {name: a.shape for name, a in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise InputError(f"factor arrays must share one grid, got shapes {shapes}")
    bits = np.zeros(arrays["elevation_m"].shape, dtype=np.uint8)
    bits |= thresholds.elevation_m.contains(arrays["elevation_m"]).astype(np.uint8) * np.uint8(
        MaskBit.ELEVATION
    )
    bits |= thresholds.slope_deg.contains(arrays["slope_deg"]).astype(np.uint8) * np.uint8(
        MaskBit.SLOPE
    )
    bits |= thresholds.aspect_contains(arrays["aspect_deg"]).astype(np.uint8) * np.uint8(
        MaskBit.ASPECT
    )
    bits |= thresholds.velocity_passes(arrays["velocity_mm_a"]).astype(np.uint8) * np.uint8(
        MaskBit.VELOCITY
    )
    all_four = (bits & np.uint8(FACTOR_BITS)) == np.uint8(FACTOR_BITS)
    bits |= all_four.astype(np.uint8) * np.uint8(MaskBit.OVERLAP)
    return bits


def overlap(mask_bits: np.ndarray) -> np.ndarray:
    """Boolean overlap mask (all four factor masks hold) from a MaskBit field."""
    return (np.asarray(mask_bits).astype(np.uint8) & np.uint8(MaskBit.OVERLAP)) != 0


def mask_pixel_counts(mask_bits: np.ndarray) -> dict[str, int]:
    """Number of pixels with each bit set, keyed by bit name (for reports)."""
    bits = np.asarray(mask_bits).astype(np.uint8)
    return {str(bit.name).lower(): int(np.count_nonzero(bits & np.uint8(bit))) for bit in MaskBit}
