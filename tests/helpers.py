"""Test helpers: seeded random problems, the tolerance table, comparisons."""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import pytest

import grukern


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


# For the tests that use a peer: each such test is marked, so the others still run without it.
needs_torch = pytest.mark.skipif(
    not _importable("torch"), reason="needs torch (pip install torch==2.13.0)"
)

# Tolerance table: (rtol, atol) by dtype and quantity. Weight and bias gradients are sums over
# all T·B steps and rows, so their absolute tolerance grows with that count (see `tolerance`).
TOLERANCES = {
    (np.float64, "output"): (1e-12, 1e-12),
    (np.float64, "grad"): (1e-11, 1e-11),
    (np.float64, "weight_grad"): (1e-11, 1e-12),
    (np.float32, "output"): (1e-5, 1e-5),
    (np.float32, "grad"): (1e-4, 1e-5),
    (np.float32, "weight_grad"): (1e-4, 1e-6),
}


def tolerance(dtype, quantity: str, reduction_length: int = 1) -> dict:
    """rtol/atol for assert_allclose; `reduction_length` is T·B for weight gradients."""
    rtol, atol = TOLERANCES[(np.dtype(dtype).type, quantity)]
    return {"rtol": rtol, "atol": atol * max(1, reduction_length)}


@dataclasses.dataclass
class Problem:
    params: grukern.GRUParams
    x: np.ndarray  # (T, B, I)
    h0: np.ndarray  # (B, H)
    dy: np.ndarray  # (T, B, H)
    dh_n: np.ndarray  # (B, H)


def make_problem(rng, T, B, I, H, *, dtype=np.float64, reset_after=True) -> Problem:
    """Random params, input, initial state and upstream gradients (all non-zero), time-major."""
    params = grukern.init_params(
        I, H, dtype=dtype, seed=int(rng.integers(2**31)), reset_after=reset_after
    )

    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)

    return Problem(params, normal(T, B, I), normal(B, H), normal(T, B, H), normal(B, H))


# What a padded buffer may hold at the steps past a sequence's length; none of it may be read.
PADDING_GARBAGE = (np.nan, np.inf, -np.inf, 1e30)


def fill_padding(a: np.ndarray, lengths, value, *, batch_first: bool = False) -> np.ndarray:
    """A copy of the sequence array a, (T, B, k) or (B, T, k) with batch_first, whose padded
    steps t ≥ lengths[b] all hold `value`."""
    filled = a.copy()
    time_major = filled.swapaxes(0, 1) if batch_first else filled  # a view of `filled`
    padded = np.arange(time_major.shape[0])[:, None] >= np.asarray(lengths)[None, :]  # (T, B)
    time_major[padded] = value
    return filled


def assert_same_bits(actual, expected, name: str = "") -> None:
    """Two results (arrays, Gradients, LayerGradients, tuples of them) are bitwise identical."""
    if isinstance(expected, (tuple, list)):
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same_bits(a, e, f"{name}[{i}]")
    elif dataclasses.is_dataclass(expected):
        for field in dataclasses.fields(expected):
            assert_same_bits(getattr(actual, field.name), getattr(expected, field.name),
                             f"{name}.{field.name}")  # fmt: skip
    elif isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(actual, expected, err_msg=name, strict=True)
    else:
        assert actual == expected, name


def assert_grads_close(actual, expected, dtype, T, B):
    """Compare two Gradients (or objects with x, h0, params) under the tolerance table."""
    np.testing.assert_allclose(actual.x, expected.x, **tolerance(dtype, "grad"), err_msg="grad x")
    np.testing.assert_allclose(
        actual.h0, expected.h0, **tolerance(dtype, "grad"), err_msg="grad h0"
    )
    for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
        np.testing.assert_allclose(
            getattr(actual.params, name),
            getattr(expected.params, name),
            **tolerance(dtype, "weight_grad", T * B),
            err_msg=f"grad {name}",
        )


def numerical_gradient(f, array: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() with respect to every element of `array`, which is
    perturbed in place and restored."""
    grad = np.empty_like(array)
    for index in np.ndindex(array.shape):
        original = array[index]
        array[index] = original + eps
        upper = f()
        array[index] = original - eps
        lower = f()
        array[index] = original
        grad[index] = (upper - lower) / (2 * eps)
    return grad


def assert_tapes_close(tape, reference) -> None:
    """A backend's Tape against the reference's: same bytes kept, same h, gates and hn (float64
    output tolerance; device arrays are brought to the host first)."""
    from grukern._device import to_host

    assert tape.nbytes == reference.nbytes
    for name in ("h", "gates", "hn"):
        ours, theirs = getattr(tape, name), getattr(reference, name)
        if theirs is None:
            assert ours is None, name
        else:
            np.testing.assert_allclose(to_host(ours), theirs, **tolerance(np.float64, "output"))
