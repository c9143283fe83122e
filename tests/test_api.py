"""Behaviour of the public API: layouts, empty sequences, extremes, and inputs left untouched."""

import subprocess
import sys
import warnings

import numpy as np
import pytest

import grukern
from tests.helpers import make_problem


def test_backends_lists_numpy_and_auto_resolves_to_an_available_one(rng):
    names = grukern.backends()
    assert "numpy" in names
    p = make_problem(rng, 3, 2, 4, 5)
    y_auto, _ = grukern.forward(p.x, p.params, p.h0)
    y_named, _ = grukern.forward(p.x, p.params, p.h0, backend=names[0])
    np.testing.assert_array_equal(y_auto, y_named)


def test_importing_grukern_loads_no_compiler_and_no_gpu_stack():
    code = (
        "import sys, grukern; "
        "loaded = [m for m in ('numba', 'numba_cuda', 'cupy', 'torch') if m in sys.modules]; "
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(params=grukern.backends())
def backend(request) -> str:
    """Each behaviour below is checked on every backend usable here."""
    return request.param


@pytest.mark.parametrize("reset_after", [True, False])
def test_forward_and_forward_train_give_identical_outputs(rng, reset_after, backend):
    p = make_problem(rng, 6, 3, 4, 5, reset_after=reset_after)
    y, h_n = grukern.forward(p.x, p.params, p.h0, backend=backend)
    y_train, h_n_train, tape = grukern.forward_train(p.x, p.params, p.h0, backend=backend)
    np.testing.assert_array_equal(y, y_train)
    np.testing.assert_array_equal(h_n, h_n_train)
    np.testing.assert_array_equal(h_n, y[-1])
    T, B, H = y.shape
    assert tape.nbytes == y.itemsize * B * H * ((5 if reset_after else 4) * T + 1)


def test_h0_defaults_to_zeros(rng, backend):
    p = make_problem(rng, 4, 2, 3, 5)
    y_default, _ = grukern.forward(p.x, p.params, backend=backend)
    y_zeros, _ = grukern.forward(p.x, p.params, np.zeros_like(p.h0), backend=backend)
    np.testing.assert_array_equal(y_default, y_zeros)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_outputs_have_the_params_dtype(rng, dtype, backend):
    p = make_problem(rng, 3, 2, 3, 4, dtype=dtype)
    y, h_n, tape = grukern.forward_train(p.x, p.params, p.h0, backend=backend)
    grads = grukern.backward(tape, dy=p.dy)
    arrays = [y, h_n, grads.x, grads.h0, *grads.params.arrays()]
    assert all(a.dtype == dtype for a in arrays)


def test_empty_sequence_returns_empty_y_and_h0(rng, backend):
    p = make_problem(rng, 0, 3, 4, 5)
    y, h_n, tape = grukern.forward_train(p.x, p.params, p.h0, backend=backend)
    assert y.shape == (0, 3, 5)
    np.testing.assert_array_equal(h_n, p.h0)
    assert h_n is not p.h0
    grads = grukern.backward(tape, dy=np.zeros((0, 3, 5)), dh_n=p.dh_n)
    assert grads.x.shape == (0, 3, 4)
    np.testing.assert_array_equal(grads.h0, p.dh_n)
    assert not any(a.any() for a in grads.params.arrays())


def test_batch_first_and_unbatched_layouts_agree_with_time_major(rng, backend):
    p = make_problem(rng, 5, 3, 4, 6)
    y, h_n = grukern.forward(p.x, p.params, p.h0, backend=backend)
    y_bf, h_n_bf = grukern.forward(
        p.x.transpose(1, 0, 2), p.params, p.h0, batch_first=True, backend=backend
    )
    np.testing.assert_array_equal(y_bf, y.transpose(1, 0, 2))
    assert y_bf.flags.c_contiguous
    np.testing.assert_array_equal(h_n_bf, h_n)
    y_1, h_n_1 = grukern.forward(p.x[:, 1], p.params, p.h0[1], backend=backend)
    assert y_1.shape == (5, 6) and h_n_1.shape == (6,)
    np.testing.assert_allclose(y_1, y[:, 1], rtol=1e-14, atol=1e-15)


def test_read_only_non_contiguous_and_reversed_inputs_work(rng, backend):
    p = make_problem(rng, 6, 3, 4, 5)
    y, h_n = grukern.forward(p.x, p.params, p.h0, backend=backend)
    x_reversed_storage = np.ascontiguousarray(p.x[::-1])[::-1]  # negative time stride
    x_strided = np.repeat(p.x, 2, axis=2)[:, :, ::2]  # non-contiguous last axis
    for x in (x_reversed_storage, x_strided):
        x.flags.writeable = False
        y_other, h_n_other = grukern.forward(x, p.params, p.h0[:, ::-1][:, ::-1], backend=backend)
        np.testing.assert_array_equal(y_other, y)
        np.testing.assert_array_equal(h_n_other, h_n)
    w_ih_fortran = np.asfortranarray(p.params.w_ih)
    params_fortran = grukern.GRUParams(
        w_ih_fortran, p.params.w_hh, p.params.b_ih, p.params.b_hh, reset_after=True
    )
    y_fortran, _ = grukern.forward(p.x, params_fortran, p.h0, backend=backend)
    np.testing.assert_array_equal(y_fortran, y)


@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("reset_after", [True, False])
def test_no_argument_is_modified(rng, reset_after, with_lengths, backend):
    p = make_problem(rng, 5, 3, 4, 6, reset_after=reset_after)
    lengths = np.array([2, 5, 0], dtype=np.int32) if with_lengths else None
    arguments = (p.x, p.h0, p.dy, p.dh_n, *p.params.arrays(), *([lengths] if with_lengths else []))
    before = [a.copy() for a in arguments]
    _, _, tape = grukern.forward_train(p.x, p.params, p.h0, backend=backend, lengths=lengths)
    grukern.forward(p.x, p.params, p.h0, backend=backend, lengths=lengths)
    saved = [a.copy() for a in (tape.x, tape.h, tape.gates, tape.hn) if a is not None]
    grukern.backward(tape, dy=p.dy, dh_n=p.dh_n)
    grukern.backward(tape, dy=p.dy)
    after = arguments
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)
    for old, new in zip(
        saved, (a for a in (tape.x, tape.h, tape.gates, tape.hn) if a is not None), strict=True
    ):
        np.testing.assert_array_equal(old, new)


def test_outputs_do_not_alias_each_other_or_the_tape(rng, backend):
    p = make_problem(rng, 4, 2, 3, 5)
    y, h_n, tape = grukern.forward_train(p.x, p.params, p.h0, backend=backend)
    assert not np.shares_memory(y, h_n)
    assert not np.shares_memory(y, tape.h) and not np.shares_memory(h_n, tape.h)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_pre_activations_saturate_without_warnings(rng, reset_after, dtype, backend):
    """|pre-activation| ~ 1e4: σ and tanh saturate to finite limits, gate gradients are 0."""
    p = make_problem(rng, 4, 3, 5, 6, dtype=dtype, reset_after=reset_after)
    params = grukern.GRUParams(
        *(a * dtype(1e4) for a in p.params.arrays()), reset_after=reset_after
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, _, tape = grukern.forward_train(p.x, params, p.h0, backend=backend)
        grads = grukern.backward(tape, dy=p.dy, dh_n=p.dh_n)
    assert (
        np.isfinite(y).all()
        and np.abs(y).max() <= np.abs(np.concatenate([[1.0], p.h0.ravel()])).max()
    )
    for array in (grads.x, grads.h0, *grads.params.arrays()):
        assert np.isfinite(array).all()
    gates = tape.gates
    assert ((gates == 0) | (gates == 1) | (np.abs(gates) == 1)).mean() > 0.9  # saturated


def test_infinite_input_gives_limits_not_nan(rng, backend):
    p = make_problem(rng, 3, 2, 4, 5)
    x = p.x.copy()
    x[1, 0, 0] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, _ = grukern.forward(x, p.params, p.h0, backend=backend)
    # +inf drives each gate to 0 or 1 (or leaves it finite if its weight is 0): all finite.
    assert np.isfinite(y).all()


def test_nan_stays_in_its_batch_row(rng, backend):
    p = make_problem(rng, 5, 4, 3, 6)
    x = p.x.copy()
    x[2, 1, 0] = np.nan
    y, h_n, tape = grukern.forward_train(x, p.params, p.h0, backend=backend)
    assert np.isnan(y[2:, 1]).all() and np.isfinite(y[:2, 1]).all()
    assert np.isfinite(np.delete(y, 1, axis=1)).all()
    assert np.isnan(h_n[1]).all() and np.isfinite(np.delete(h_n, 1, axis=0)).all()
    clean, _ = grukern.forward(p.x, p.params, p.h0, backend=backend)
    np.testing.assert_array_equal(np.delete(y, 1, axis=1), np.delete(clean, 1, axis=1))
    grads = grukern.backward(tape, dy=p.dy)
    assert np.isfinite(np.delete(grads.x, 1, axis=1)).all()
