"""grukern.GRUCell: one step equals forward on T = 1 on every backend (lean and batched paths,
both variants, both dtypes), streaming equals one forward over the whole sequence, in-place
updates, the params' current values are used, and bad input gets forward's errors."""

import numpy as np
import pytest

import grukern
from grukern._backends import _numba_cell
from tests.helpers import make_problem, tolerance

BACKENDS = grukern.backends()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B", [1, 3, _numba_cell.LEAN_ROWS + 3])  # lean and batched paths
def test_one_step_equals_forward_on_one_step(rng, backend, reset_after, dtype, B):
    p = make_problem(rng, 1, B, 5, 7, dtype=dtype, reset_after=reset_after)
    cell = grukern.GRUCell(p.params, backend=backend)
    _, expected = grukern.forward(p.x, p.params, p.h0, backend="numpy")
    np.testing.assert_allclose(cell(p.x[0], p.h0), expected, **tolerance(dtype, "output"))
    _, from_zeros = grukern.forward(p.x, p.params, backend="numpy")
    np.testing.assert_allclose(cell(p.x[0]), from_zeros, **tolerance(dtype, "output"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_streaming_equals_one_forward_over_the_sequence(rng, backend):
    p = make_problem(rng, 12, 2, 4, 6, dtype=np.float64)
    cell = grukern.GRUCell(p.params, backend=backend)
    y, h_n = grukern.forward(p.x, p.params, p.h0, backend="numpy")
    h = p.h0.copy()
    for t in range(12):
        cell(p.x[t], h, out=h)  # in place
        np.testing.assert_allclose(h, y[t], **tolerance(np.float64, "output"))
    np.testing.assert_allclose(h, h_n, **tolerance(np.float64, "output"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_unbatched_steps_and_out(rng, backend):
    p = make_problem(rng, 1, 1, 3, 4, dtype=np.float64)
    cell = grukern.GRUCell(p.params, backend=backend)
    h = cell(p.x[0, 0], p.h0[0])
    assert h.shape == (4,)
    out = np.full(4, np.nan)
    assert cell(p.x[0, 0], p.h0[0], out=out) is out
    np.testing.assert_array_equal(out, h)
    _, expected = grukern.forward(p.x[:, 0], p.params, p.h0[0], backend="numpy")
    np.testing.assert_allclose(h, expected, **tolerance(np.float64, "output"))


def test_the_cell_reads_the_params_current_values(rng):
    p = make_problem(rng, 1, 1, 3, 4, dtype=np.float64)
    params = p.params.copy()
    cell = grukern.GRUCell(params)
    before = cell(p.x[0], p.h0)
    params.w_hh *= 0.5  # an optimizer step, in place
    _, expected = grukern.forward(p.x, params, p.h0, backend="numpy")
    after = cell(p.x[0], p.h0)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, expected, **tolerance(np.float64, "output"))


def test_inputs_are_not_modified(rng):
    p = make_problem(rng, 1, 2, 3, 4)
    x, h0 = p.x[0].copy(), p.h0.copy()
    grukern.GRUCell(p.params)(p.x[0], p.h0)
    np.testing.assert_array_equal(p.x[0], x)
    np.testing.assert_array_equal(p.h0, h0)


BAD_CALLS = {
    "x features": (lambda x, h: (x[:, :2], h), {}, ValueError, r"x must have shape \(B, 3\)"),
    "x rank": (lambda x, h: (x[None], h), {}, ValueError, r"x must have shape \(B, 3\) or \(3,\)"),
    "x dtype": (lambda x, h: (x.astype(np.float64), h), {}, TypeError, r"x has dtype float64"),
    "x list": (lambda x, h: (x.tolist(), h), {}, TypeError, r"x must be a numpy.ndarray"),
    "h shape": (lambda x, h: (x, h[:1]), {}, ValueError, r"h must have shape \(2, 4\)"),
    "h dtype": (lambda x, h: (x, h.astype(np.float64)), {}, TypeError, r"h has dtype float64"),
    "out shape": (lambda x, h: (x, h), {"out": np.empty((4,), np.float32)}, ValueError,
                  r"out must have shape \(2, 4\)"),
    "out strided": (lambda x, h: (x, h), {"out": np.empty((2, 8), np.float32)[:, ::2]},
                    ValueError, r"out must be C-contiguous"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_calls_raise_forwards_errors(rng, case):
    make_args, kwargs, error, match = BAD_CALLS[case]
    p = make_problem(rng, 1, 2, 3, 4, dtype=np.float32)
    cell = grukern.GRUCell(p.params)
    with pytest.raises(error, match=match):
        cell(*make_args(p.x[0], p.h0), **kwargs)


def test_bad_construction():
    with pytest.raises(TypeError, match=r"params must be a GRUParams, got dict"):
        grukern.GRUCell({})
    params = grukern.init_params(3, 4, seed=0)
    with pytest.raises(ValueError, match=r"backend must be one of"):
        grukern.GRUCell(params, backend="fast")
    assert repr(grukern.GRUCell(params, backend="numpy")).startswith("grukern.GRUCell(GRUParams(")
