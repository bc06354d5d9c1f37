"""ΔNDVI and the paper's `hidden` / `small` freeze-thaw landslide classes (section 3.3)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ftlcloud.errors import InputError

HIDDEN_DELTA_NDVI: float = -0.1
"""A landslide is `hidden` when its ΔNDVI is above this (vegetation not clearly lost)."""
SMALL_AREA_HA: float = 10.0
"""A landslide is `small` when its area is below this many hectares."""


def delta_ndvi(ndvi_later: npt.ArrayLike, ndvi_earlier: npt.ArrayLike) -> np.ndarray:
    """ΔNDVI = later − earlier (2019 − 2017 in the paper); NaN in either input stays NaN."""
    later = np.asarray(ndvi_later, dtype=np.float64)
    earlier = np.asarray(ndvi_earlier, dtype=np.float64)
    if later.shape != earlier.shape:
        raise InputError(
            f"NDVI rasters differ in shape: later {later.shape}, earlier {earlier.shape}; "
            "resample both years onto the same grid first"
        )
    out_dtype = np.result_type(np.asarray(ndvi_later).dtype, np.asarray(ndvi_earlier).dtype)
    if not np.issubdtype(out_dtype, np.floating):
        out_dtype = np.dtype(np.float32)
    return (later - earlier).astype(out_dtype)


def is_hidden(delta_ndvi_value: npt.ArrayLike) -> np.ndarray:
    """True where ΔNDVI > HIDDEN_DELTA_NDVI (−0.1); NaN gives False."""
    values = np.asarray(delta_ndvi_value, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.asarray(values > HIDDEN_DELTA_NDVI)


def is_small(area_ha: npt.ArrayLike) -> np.ndarray:
    """True where the area is below SMALL_AREA_HA (10 ha); NaN gives False."""
    values = np.asarray(area_ha, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.asarray(values < SMALL_AREA_HA)
