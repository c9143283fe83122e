"""Extremes and operating conditions on every backend: saturated gates, denormal inputs,
concurrent calls, long sequences and the tape's memory."""

import threading
import time
import tracemalloc

import numpy as np
import pytest

import grukern
from tests.helpers import assert_grads_close, make_problem, tolerance

BACKENDS = grukern.backends()


def _saturated(params: grukern.GRUParams, gate: int, bias: float) -> grukern.GRUParams:
    """A copy whose gate block `gate` (0 = r, 1 = z) gets input bias `bias`."""
    saturated = params.copy()
    H = params.hidden_size
    saturated.b_ih[gate * H : (gate + 1) * H] = bias
    return saturated


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize(("gate", "bias"), [(0, -1e4), (0, 1e4), (1, -1e4), (1, 1e4)])
def test_saturated_gates_have_exactly_zero_gradient(rng, backend, reset_after, gate, bias):
    p = make_problem(rng, 6, 3, 4, 5, dtype=np.float32, reset_after=reset_after)
    params = _saturated(p.params, gate, bias)
    _, _, tape = grukern.forward_train(p.x, params, p.h0, backend=backend)
    H = params.hidden_size
    assert np.all(tape.gates[..., gate * H : (gate + 1) * H] == (1.0 if bias > 0 else 0.0))
    grads = grukern.backward(tape, dy=p.dy, dh_n=p.dh_n)
    for array in (grads.x, grads.h0, *grads.params.arrays()):
        assert np.isfinite(array).all()
    block = slice(gate * H, (gate + 1) * H)
    assert np.all(grads.params.b_ih[block] == 0) and np.all(grads.params.w_ih[block] == 0)
    assert np.all(grads.params.w_hh[block] == 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_infinite_pre_activations_give_limits(rng, backend, sign):
    p = make_problem(rng, 4, 2, 3, 5, dtype=np.float32)
    x = p.x.copy()
    x[2, :, 0] = sign * np.inf  # every pre-activation of step 2 is ±inf (no weight is 0)
    with np.errstate(all="raise", under="ignore"):  # no floating-point warnings either
        y, _ = grukern.forward(x, p.params, p.h0, backend=backend)
    reference, _ = grukern.forward(x, p.params, p.h0, backend="numpy")
    np.testing.assert_array_equal(np.isnan(y), np.isnan(reference))
    np.testing.assert_allclose(y, reference, **tolerance(np.float32, "output"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_inputs_near_the_denormal_range(rng, backend):
    p = make_problem(rng, 5, 3, 4, 6, dtype=np.float32)
    x = (p.x * np.float32(1e-38)).astype(np.float32)  # many entries subnormal
    assert (np.abs(x) < np.finfo(np.float32).tiny).any()
    y, _, tape = grukern.forward_train(x, p.params, p.h0 * 1e-38, backend=backend)
    y_ref, _, tape_ref = grukern.forward_train(x, p.params, p.h0 * 1e-38, backend="numpy")
    np.testing.assert_allclose(y, y_ref, **tolerance(np.float32, "output"))
    grads = grukern.backward(tape, dy=p.dy)
    assert_grads_close(grads, grukern.backward(tape_ref, dy=p.dy), np.float32, 5, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_calls_from_two_threads_match_serial_calls(rng, backend):
    problems = [make_problem(rng, 30, 5, 8, 16, dtype=np.float32) for _ in range(2)]
    params = problems[0].params  # shared by both threads

    def run(p):
        y, h_n, tape = grukern.forward_train(p.x, params, p.h0, backend=backend)
        return y, h_n, grukern.backward(tape, dy=p.dy, dh_n=p.dh_n)

    serial = [run(p) for p in problems]
    results = [[], []]

    def worker(index):
        for _ in range(20):
            results[index].append(run(problems[index]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index in range(2):
        expected_y, _, expected_grads = serial[index]
        for y, _, grads in results[index]:
            np.testing.assert_array_equal(y, expected_y)
            np.testing.assert_array_equal(grads.params.w_hh, expected_grads.params.w_hh)
            np.testing.assert_array_equal(grads.x, expected_grads.x)


@pytest.mark.parametrize("reset_after", [True, False])
def test_tape_owns_the_documented_number_of_bytes(rng, reset_after):
    """Memory NumPy holds after forward_train = y + h_n + the tape formula (docs: Tape)."""
    T, B, I, H = 50, 4, 6, 10
    p = make_problem(rng, T, B, I, H, dtype=np.float32, reset_after=reset_after)
    for backend in BACKENDS:
        grukern.forward_train(p.x, p.params, p.h0, backend=backend)  # warm-up outside the count
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        y, h_n, tape = grukern.forward_train(p.x, p.params, p.h0, backend=backend)
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        formula = 4 * B * H * ((5 if reset_after else 4) * T + 1)
        assert tape.nbytes == formula
        assert formula + y.nbytes + h_n.nbytes <= held <= formula + y.nbytes + h_n.nbytes + 4096


def test_a_sequence_of_100_000_steps_runs_within_seconds():
    """T = 100 000, B = 1, H = 32 on the fastest backend: forward, and forward_train + backward."""
    params = grukern.init_params(32, 32, seed=0)
    x = np.random.default_rng(0).standard_normal((100_000, 1, 32)).astype(np.float32)
    grukern.forward(x[:10], params)  # compile outside the timing
    _, _, tape = grukern.forward_train(x[:10], params)
    grukern.backward(tape, dh_n=np.ones((1, 32), np.float32))
    start = time.perf_counter()
    y, _ = grukern.forward(x, params)
    forward_seconds = time.perf_counter() - start
    start = time.perf_counter()
    _, _, tape = grukern.forward_train(x, params)
    grads = grukern.backward(tape, dh_n=np.ones((1, 32), np.float32))
    train_seconds = time.perf_counter() - start
    assert np.isfinite(y).all() and np.isfinite(grads.params.w_hh).all()
    assert forward_seconds < 5 and train_seconds < 15, (forward_seconds, train_seconds)


def test_tiny_problems_run_serially_and_large_ones_in_parallel():
    """Starting threads for a few hundred FLOPs costs more than it saves (PARALLEL_MIN_FLOPS)."""
    pytest.importorskip("numba")
    from grukern._backends import numba_cpu

    assert numba_cpu._plan(3, 2, 2, 2).n_chunks == 1
    assert numba_cpu._plan(100, 32, 128, 128).n_chunks == min(32, grukern.get_num_threads())
