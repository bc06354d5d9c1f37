"""Tests of ftlcloud.science.ndvi (ΔNDVI and the hidden / small classes of the paper)."""

from __future__ import annotations

import numpy as np
import pytest

from ftlcloud.errors import InputError
from ftlcloud.science.ndvi import (
    HIDDEN_DELTA_NDVI,
    SMALL_AREA_HA,
    delta_ndvi,
    is_hidden,
    is_small,
)


def test_constants_follow_the_paper():
    assert HIDDEN_DELTA_NDVI == -0.1
    assert SMALL_AREA_HA == 10.0


def test_delta_ndvi_is_later_minus_earlier_with_nan():
    later = np.array([[0.5, 0.2], [np.nan, 0.7]], dtype=np.float32)
    earlier = np.array([[0.3, 0.4], [0.1, np.nan]], dtype=np.float32)
    out = delta_ndvi(later, earlier)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], [0.2, -0.2], atol=1e-7)
    assert np.isnan(out[1]).all()


def test_delta_ndvi_shape_mismatch():
    with pytest.raises(InputError, match="shape"):
        delta_ndvi(np.zeros((2, 3)), np.zeros((3, 2)))


def test_is_hidden_threshold_and_nan():
    values = np.array([-0.5, -0.1, -0.0999, 0.0, 0.3, np.nan])
    assert is_hidden(values).tolist() == [False, False, True, True, True, False]
    assert is_hidden(values).dtype == bool
    assert bool(is_hidden(0.0)) is True


def test_is_small_threshold_and_nan():
    areas = np.array([0.5, 9.99, 10.0, 250.0, np.nan])
    assert is_small(areas).tolist() == [True, True, False, False, False]
