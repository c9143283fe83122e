"""The Numba backend's two ways of sharing a call between threads: batch rows in chunks, or
hidden units in parts (numba_cpu._Plan; the backward of reset_after=False splits the batch).
Each is forced here at small sizes and checked against the reference; the rule that picks one
is checked at the sizes it was measured on."""

from __future__ import annotations

import concurrent.futures
import functools
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

import grukern
from grukern import _backends
from grukern._arguments import is_batch_major
from grukern._backends import numba_cpu
from tests.helpers import (
    assert_grads_close,
    assert_same_bits,
    fill_padding,
    make_problem,
    tolerance,
)


@pytest.fixture(params=["batch", "batch, BLAS projection", "units", "units, panels"])
def split(request, monkeypatch):
    """Every plan takes this decomposition, with two threads in the budget (where there are);
    the batch split's forward projects by _numba_matmul at every I, or by BLAS; the unit
    split's forward takes dot products, or packed panels, at every T."""
    monkeypatch.setattr(numba_cpu, "FORCED_SPLIT", request.param.split(",")[0])
    panels_from = 0 if request.param.endswith("panels") else 1 << 62
    monkeypatch.setattr(numba_cpu, "UNIT_PANELS_MIN_STEPS", panels_from)
    blas_from = 1 << 62 if request.param.endswith("BLAS projection") else 1
    monkeypatch.setattr(numba_cpu, "PROJECTION_PANELS_MIN_INPUT", blas_from)
    numba_cpu._cached_plan.cache_clear()
    threads = grukern.get_num_threads()
    grukern.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    yield request.param
    grukern.set_num_threads(threads)
    numba_cpu._cached_plan.cache_clear()


def _lengths(B, T):
    """Every case of a padded batch: full, shorter, empty, in no order (repeated past 6 rows)."""
    return np.resize(np.array([T, 1, 0, T - 1, 2, T], dtype=np.int64), B)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(
    ("T", "B", "I", "H"), [(6, 1, 5, 40), (5, 3, 4, 33), (4, 6, 3, 64), (3, 17, 4, 9)]
)  # B = 17: chunks of at least a whole tile of rows, whose inputs are projected in place
def test_each_decomposition_matches_the_reference(
    rng, split, reset_after, dtype, padded, reverse, T, B, I, H
):
    p = make_problem(rng, T, B, I, H, dtype=dtype, reset_after=reset_after)
    lengths = _lengths(B, T) if padded else None
    x = fill_padding(p.x, lengths, np.nan) if padded else p.x  # padding is never read
    y, h_n = numba_cpu.forward(x, p.params, p.h0, lengths, reverse)
    y_train, h_train, tape = numba_cpu.forward_train(x, p.params, p.h0, lengths, reverse)
    reference = _backends.resolve("numpy")[1]
    ref_y, ref_h, ref_tape = reference.forward_train(p.x, p.params, p.h0, lengths, reverse)
    np.testing.assert_allclose(y, ref_y, **tolerance(dtype, "output"))
    np.testing.assert_allclose(h_n, ref_h, **tolerance(dtype, "output"))
    assert_same_bits((y_train, h_train), (y, h_n), "training forward")
    # The backward reads the tape the forward wrote, in either decomposition.
    grads = numba_cpu.backward(tape, p.dy, p.dh_n)
    assert_grads_close(grads, reference.backward(ref_tape, p.dy, p.dh_n), dtype, T, B)


def test_the_forward_output_is_its_own(rng, split):
    """The plain forward writes each state straight into y's memory: y is still a contiguous
    array of its own, and h_n a copy that writes to y leave alone."""
    p = make_problem(rng, 4, 17, 5, 24, dtype=np.float32)
    y, h_n = numba_cpu.forward(p.x, p.params, p.h0)
    assert y.shape == (4, 17, 24) and y.flags.c_contiguous
    assert_same_bits(h_n, y[-1])
    expected = h_n.copy()
    y[...] = 0
    assert_same_bits(h_n, expected)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize(("padded", "reverse"), [(False, False), (True, True), (False, True)])
@pytest.mark.parametrize("B", [3, 17])
def test_batch_major_arrays_are_read_and_written_in_place(
    rng, split, reset_after, padded, reverse, B
):
    """A batch_first caller's arrays reach the backend as transposed views (to_time_major): the
    kernels read x and dy and write y and dx in that memory order, with the time-major bits
    (B = 17: inputs projected where they lie, rows together or T·I apart; padded: gathered)."""
    p = make_problem(rng, 5, B, 4, 33, dtype=np.float32, reset_after=reset_after)
    lengths = _lengths(B, 5) if padded else None

    def batch_major(a):  # (T, B, k) values in (B, T, k) memory
        return np.ascontiguousarray(a.swapaxes(0, 1)).swapaxes(0, 1)

    x, dy = batch_major(p.x), batch_major(p.dy)
    y, h_n = numba_cpu.forward(x, p.params, p.h0, lengths, reverse)
    y_train, h_train, tape = numba_cpu.forward_train(x, p.params, p.h0, lengths, reverse)
    grads = numba_cpu.backward(tape, dy, p.dh_n)
    expected_y, expected_h, expected_tape = numba_cpu.forward_train(
        p.x, p.params, p.h0, lengths, reverse
    )
    expected_grads = numba_cpu.backward(expected_tape, p.dy, p.dh_n)
    assert is_batch_major(y) and is_batch_major(y_train) and is_batch_major(grads.x)
    assert_same_bits((y, h_n, y_train, h_train), (expected_y, expected_h) * 2)
    assert_same_bits(grads, expected_grads)


@pytest.mark.parametrize("reset_after", [True, False])
def test_the_unit_split_gives_the_same_bits_in_every_thread(rng, monkeypatch, reset_after):
    """The parts depend on the budget only, not on how many threads a call is granted."""
    monkeypatch.setattr(numba_cpu, "FORCED_SPLIT", "units")
    p = make_problem(rng, 9, 2, 6, 50, dtype=np.float32, reset_after=reset_after)
    expected = numba_cpu.forward(p.x, p.params, p.h0)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        runs = [pool.submit(numba_cpu.forward, p.x, p.params, p.h0) for _ in range(8)]
        for run in runs:
            assert_same_bits(run.result(), expected)


def test_three_uneven_parts_match_the_reference():
    """Three threads split H = 40 into parts of 16, 16 and 8 units, forward and backward (a
    process of its own: the thread count is fixed at Numba's start)."""
    script = textwrap.dedent("""
        import numpy as np
        import grukern
        from grukern._backends import numba_cpu, numpy_ref
        numba_cpu.FORCED_SPLIT = "units"
        grukern.set_num_threads(3)
        plan = numba_cpu._plan(5, 2, 3, 40, numba_cpu.FORWARD_UNITS_BELOW)
        assert plan.units.tolist() == [0, 16, 32, 40]
        rng = np.random.default_rng(0)
        for reset_after in (True, False):
            params = grukern.init_params(3, 40, dtype=np.float64, seed=1, reset_after=reset_after)
            x, h0 = rng.standard_normal((5, 2, 3)), rng.standard_normal((2, 40))
            lengths = np.array([5, 3])
            y, h_n, tape = numba_cpu.forward_train(x, params, h0, lengths)
            ref_y, ref_h, ref_tape = numpy_ref.forward_train(x, params, h0, lengths)
            np.testing.assert_allclose(y, ref_y, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(h_n, ref_h, rtol=1e-12, atol=1e-12)
            dy, dh_n = rng.standard_normal(y.shape), rng.standard_normal(h_n.shape)
            grads = numba_cpu.backward(tape, dy, dh_n)
            ref = numpy_ref.backward(ref_tape, dy, dh_n)
            pairs = zip((grads.x, grads.h0, *grads.params.arrays()),
                        (ref.x, ref.h0, *ref.params.arrays()), strict=True)
            for ours, theirs in pairs:
                np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10)
        print("agree")
    """)
    env = {**os.environ, "NUMBA_NUM_THREADS": "3"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "agree"


@pytest.mark.parametrize(
    ("B", "H", "forward", "backward"),
    [
        (1, 1024, True, True),
        (2, 1024, True, False),
        (5, 384, True, False),
        (1, 256, False, False),
        (6, 1024, False, False),
        (64, 512, False, False),
    ],
)
def test_the_rule_splits_units_for_few_rows_of_many_units(monkeypatch, B, H, forward, backward):
    monkeypatch.setattr(grukern._threads, "get_num_threads", lambda: 2)
    plan = functools.partial(numba_cpu._plan, 100, B, H, H)
    assert (plan(numba_cpu.FORWARD_UNITS_BELOW).units is not None) == forward
    assert (plan(numba_cpu.BACKWARD_UNITS_BELOW).units is not None) == backward
    assert plan().units is None  # a loop without a unit split


def test_one_thread_never_splits_units(monkeypatch):
    monkeypatch.setattr(grukern._threads, "get_num_threads", lambda: 1)
    assert numba_cpu._plan(100, 1, 1024, 1024, numba_cpu.FORWARD_UNITS_BELOW).units is None
