"""Every fast backend against the NumPy reference: forward and every gradient, both variants,
both dtypes, awkward sizes, with outputs poisoned (NaN) before the kernels run."""

import numba
import numpy as np
import pytest

import grukern
from grukern import _backends
from grukern._backends import _numba_loops, numba_cpu
from grukern._backends._directions import Slot
from tests.helpers import assert_grads_close, assert_tapes_close, make_problem, tolerance

FAST_BACKENDS = [name for name in grukern.backends() if name != "numpy"]

# (T, B, I, H): B=1 (single-row products), T=1, H=1, H=33, I≠H, B not a multiple of the
# thread count, T across several input-projection blocks, and for _numba_matmul's tiles (6 rows
# by 16 float32 or 8 float64 columns): chunks of 12 and 11 rows, 3H = 99 and H = 33 (partial
# last panels in both dtypes), and products over p = 3H = 300 terms.
SIZES = [
    (1, 1, 1, 1),
    (2 * _numba_loops.BLOCK_ROWS // 3 + 5, 3, 5, 8),
    (6, 1, 3, 33),
    (5, 3, 4, 7),
    (4, 5, 9, 16),
    (3, 23, 6, 33),
    (2, 14, 16, 100),
]


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Every array the numba kernels must fill starts as NaN, so a missed element shows; and
    these small problems run in parallel (row chunks) whenever B > 1, as large ones do."""

    def nan_filled(shape, dtype):
        return np.full(shape, np.nan, dtype=dtype)

    monkeypatch.setattr(numba_cpu, "_empty", nan_filled)
    monkeypatch.setattr(numba_cpu, "PARALLEL_MIN_FLOPS", 0)


def _mixed_lengths(rng, T, B):
    """Unsorted lengths in [0, T] with a full-length first row and a zero-length last row."""
    lengths = rng.integers(0, T + 1, size=B)
    lengths[0], lengths[-1] = T, 0
    return lengths


def _assert_runs_close(run, reference, dtype, T, B):
    """(y, h_n, gradients) of a backend against those of the reference."""
    (y, h_n, grads), (y_ref, h_n_ref, grads_ref) = run, reference
    np.testing.assert_allclose(y, y_ref, **tolerance(dtype, "output"))
    np.testing.assert_allclose(h_n, h_n_ref, **tolerance(dtype, "output"))
    assert_grads_close(grads, grads_ref, dtype, T, B)


def _run(backend, p):
    y, h_n, tape = grukern.forward_train(p.x, p.params, p.h0, backend=backend)
    return y, h_n, grukern.backward(tape, dy=p.dy, dh_n=p.dh_n)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("T", "B", "I", "H"), SIZES)
def test_forward_and_gradients_match_the_reference(rng, backend, reset_after, dtype, T, B, I, H):
    p = make_problem(rng, T, B, I, H, dtype=dtype, reset_after=reset_after)
    y, h_n, grads = _run(backend, p)
    _assert_runs_close((y, h_n, grads), _run("numpy", p), dtype, T, B)
    y_inference, h_n_inference = grukern.forward(p.x, p.params, p.h0, backend=backend)
    np.testing.assert_array_equal(y_inference, y)
    np.testing.assert_array_equal(h_n_inference, h_n)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("reset_after", [True, False])
def test_tape_matches_the_reference_tape(rng, backend, reset_after):
    p = make_problem(rng, 4, 3, 5, 6, reset_after=reset_after)
    tape = grukern.forward_train(p.x, p.params, p.h0, backend=backend)[2]
    reference = grukern.forward_train(p.x, p.params, p.h0, backend="numpy")[2]
    assert_tapes_close(tape, reference)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_empty_sequence(rng, backend):
    p = make_problem(rng, 0, 3, 4, 5)
    y, h_n, grads = _run(backend, p)
    assert y.shape == (0, 3, 5) and grads.x.shape == (0, 3, 4)
    np.testing.assert_array_equal(h_n, p.h0)
    np.testing.assert_array_equal(grads.h0, p.dh_n)
    assert not any(a.any() for a in grads.params.arrays())


@pytest.mark.parametrize("backend", grukern.backends())
@pytest.mark.parametrize("reset_after", [True, False])
def test_repeated_calls_are_bitwise_identical(rng, backend, reset_after):
    p = make_problem(rng, 7, 5, 6, 9, dtype=np.float32, reset_after=reset_after)
    first, second = _run(backend, p), _run(backend, p)
    for a, b in zip(first[:2], second[:2], strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(
        (first[2].x, first[2].h0, *first[2].params.arrays()),
        (second[2].x, second[2].h0, *second[2].params.arrays()),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_at_one_and_two_threads_agree(rng, dtype):
    """One thread runs the serial kernel, two the parallel one (rows split in chunks)."""
    p = make_problem(rng, 6, 5, 4, 8, dtype=dtype)
    threads = grukern.get_num_threads()
    try:
        grukern.set_num_threads(1)
        serial = _run("numba", p)
        grukern.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        parallel = _run("numba", p)
    finally:
        grukern.set_num_threads(threads)
    np.testing.assert_allclose(parallel[0], serial[0], **tolerance(dtype, "output"))
    assert_grads_close(parallel[2], serial[2], dtype, 6, 5)


def _run_with_lengths(backend, p, lengths, segment=None):
    y, h_n, tape = grukern.forward_train(
        p.x, p.params, p.h0, backend=backend, lengths=lengths, segment=segment
    )
    return y, h_n, grukern.backward(tape, dy=p.dy, dh_n=p.dh_n)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("T", "B", "I", "H"),
    [(1, 1, 2, 3), (6, 5, 4, 7), (9, 7, 3, 33), (2 * _numba_loops.BLOCK_ROWS // 3 + 5, 7, 3, 5)],
)
def test_variable_lengths_match_the_reference(rng, backend, reset_after, dtype, T, B, I, H):
    """Unsorted lengths with a zero and a full-length row, every output and gradient; the
    last size spans several blocks of steps of the numba kernels, some with no running row."""
    p = make_problem(rng, T, B, I, H, dtype=dtype, reset_after=reset_after)
    lengths = _mixed_lengths(rng, T, B)
    y, h_n, grads = _run_with_lengths(backend, p, lengths)
    _assert_runs_close((y, h_n, grads), _run_with_lengths("numpy", p, lengths), dtype, T, B)
    y_inference, h_n_inference = grukern.forward(
        p.x, p.params, p.h0, backend=backend, lengths=lengths
    )
    np.testing.assert_array_equal(y_inference, y)
    np.testing.assert_array_equal(h_n_inference, h_n)


def _run_reversed(backend, p, lengths):
    """reverse=True straight on the backend (the API leaves it to grukern.GRU)."""
    module = _backends.resolve(backend)[1]
    y, h_n, tape = module.forward_train(p.x, p.params, p.h0, lengths, reverse=True)
    y_inference, h_n_inference = module.forward(p.x, p.params, p.h0, lengths, reverse=True)
    np.testing.assert_array_equal(y_inference, y)
    np.testing.assert_array_equal(h_n_inference, h_n)
    return y, h_n, module.backward(tape, p.dy, p.dh_n)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize(
    ("T", "B", "I", "H"), [(6, 5, 4, 7), (2 * _numba_loops.BLOCK_ROWS // 3 + 5, 7, 3, 5)]
)
def test_reverse_matches_the_reference(
    rng, backend, reset_after, dtype, with_lengths, T, B, I, H
):  # fmt: skip
    """reverse=True, which the numba kernels read and write in place and the reference gets
    by copying the reversed steps; poisoned outputs show any y or dx element not written."""
    p = make_problem(rng, T, B, I, H, dtype=dtype, reset_after=reset_after)
    lengths = _mixed_lengths(rng, T, B) if with_lengths else None
    _assert_runs_close(
        _run_reversed(backend, p, lengths), _run_reversed("numpy", p, lengths), dtype, T, B
    )


@pytest.mark.parametrize("backend", grukern.backends())
@pytest.mark.parametrize("reverse", [False, True])
def test_slots_write_y_and_read_dy_in_place(rng, backend, reverse):
    """out=Slot(y, d) and a Slot dy, as a bidirectional layer passes them: the slot gets
    exactly the y of a plain call, the other slot is left alone (still NaN), and backward
    reading its dy from a slot matches backward on a copy of those columns."""
    p = make_problem(rng, 9, 5, 4, 6, dtype=np.float32)
    lengths = np.array([9, 0, 4, 1, 7])
    module = _backends.resolve(backend)[1]
    y_plain, h_n_plain, tape = module.forward_train(p.x, p.params, p.h0, lengths, reverse)
    for run in (module.forward, module.forward_train):
        both = np.full((9, 5, 2, 6), np.nan, dtype=np.float32)
        y, h_n = run(p.x, p.params, p.h0, lengths, reverse, Slot(both, 1))[:2]
        np.testing.assert_array_equal(y, y_plain)
        np.testing.assert_array_equal(both[:, :, 1], y_plain)
        np.testing.assert_array_equal(h_n, h_n_plain)
        assert np.isnan(both[:, :, 0]).all()
    dy_both = rng.standard_normal((9, 5, 2, 6)).astype(np.float32)
    grads = module.backward(tape, Slot(dy_both, 1), p.dh_n)
    expected = module.backward(tape, dy_both[:, :, 1].copy(), p.dh_n)
    for a, b in zip(
        (grads.x, grads.h0, *grads.params.arrays()),
        (expected.x, expected.h0, *expected.params.arrays()),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", grukern.backends())
@pytest.mark.parametrize("reset_after", [True, False])
def test_variable_lengths_with_recomputed_segments(rng, backend, reset_after):
    p = make_problem(rng, 10, 4, 3, 5, reset_after=reset_after)
    lengths = np.array([10, 0, 3, 7])
    full = _run_with_lengths(backend, p, lengths)
    segmented = _run_with_lengths(backend, p, lengths, segment=4)
    np.testing.assert_array_equal(segmented[0], full[0])
    np.testing.assert_array_equal(segmented[1], full[1])
    assert_grads_close(segmented[2], full[2], np.float64, 10, 4)
