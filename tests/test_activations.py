"""The Numba kernels' own exp, σ and tanh (_numba_math) against NumPy in long double: exp and
σ within two ulps of their values, tanh within two ulps of 1 (its form (1 - e²)/(1 + e²) loses
the relative accuracy of values near 0, as the reference's does), exact limits at the ends, NaN
through."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from grukern._backends._numba_math import exp_nonpositive, sigmoid, tanh


@numba.njit
def _apply(name, x, out):
    for i in range(x.shape[0]):
        if name == 0:
            out[i] = exp_nonpositive(x[i])
        elif name == 1:
            out[i] = sigmoid(x[i])
        else:
            out[i] = tanh(x[i])


def _ours(name: int, x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    _apply(name, x, out)
    return out


def _error(name: int, ours: np.ndarray, exact: np.ndarray, dtype) -> float:
    """Largest |ours - exact| in ulps: of exact for exp and σ (of the smallest normal number
    near zero), of 1 for tanh."""
    info = np.finfo(dtype)
    scale = 1.0 if name == 2 else np.maximum(np.abs(exact), info.smallest_normal)
    return float(np.max(np.abs(ours.astype(np.longdouble) - exact) / (scale * info.eps)))


EXACT = {
    0: np.exp,
    1: lambda a: 1 / (1 + np.exp(-a)),
    2: np.tanh,
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("name", "low", "high"), [(0, -80.0, 0.0), (1, -80.0, 80.0), (2, -40.0, 40.0)]
)
def test_activations_are_accurate(dtype, name, low, high):
    x = np.linspace(low, high, 400_001, dtype=dtype)
    exact = EXACT[name](x.astype(np.longdouble))
    assert _error(name, _ours(name, x), exact, dtype) <= 2.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_underflows_to_zero_and_the_limits_are_exact(dtype):
    lowest = {np.float32: -88.0, np.float64: -709.0}[dtype]
    tiny = np.array([lowest, lowest - 1, -1e4, -np.inf], dtype=dtype)
    assert (_ours(0, tiny) == 0).all()
    ends = np.array([-np.inf, -1e4, 1e4, np.inf], dtype=dtype)
    assert _ours(1, ends).tolist() == [0, 0, 1, 1]
    assert _ours(2, ends).tolist() == [-1, -1, 1, 1]
    assert _ours(0, np.zeros(1, dtype=dtype))[0] == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", [0, 1, 2])
def test_nan_goes_through(dtype, name):
    assert np.isnan(_ours(name, np.array([np.nan], dtype=dtype))).all()
