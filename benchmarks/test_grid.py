"""Grid G: grukern's backends against PyTorch nn.GRU, ONNX Runtime and OpenVINO (forward only:
both run inference), forward and training; and numba's forward alternating with each peer's.

    pytest benchmarks --benchmark-only --benchmark-group-by=group     # timed, peers side by side
    pytest benchmarks --benchmark-disable                             # once each, as smoke tests

Every benchmark first checks its runner against the float64 NumPy reference on the same
inputs, then times it; JIT compilation happens in that check, before timing starts.
extra_info records GFLOP/s (docs/math.md §8) and the BLAS kernel in use.
"""

import functools
import statistics
import time

import numpy as np
import pytest

from grukern import bench

RUNNERS = ["numpy", "numba", "torch", "onnxruntime", "openvino"]
TRAIN_RUNNERS = ["numpy", "numba", "torch"]
# Only OpenVINO alternates well: after a call, ONNX Runtime's threads spin for tens of
# milliseconds and torch's OpenMP threads for a few, slowing whatever runs next on the cores.
PAIRED_PEERS = ["openvino"]
PAIRED_SECONDS = 2.0  # about how long each alternating benchmark times
PAIRED_TURN_SECONDS = 0.02  # about how long each runner's turn lasts (at least 5 calls)


@functools.cache
def _case(size: str):
    """Inputs and float64 reference results of one grid size, computed once per session."""
    problem = bench.GRID[size]
    params, x, h0, dy = bench.make_inputs(problem)
    y_ref, dx_ref = bench.reference(params, x, h0, dy)
    return problem, params, x, h0, dy, y_ref, dx_ref


def _runner(name: str, params):
    if name not in bench.runner_names(params):
        pytest.skip(f"{name} is not available here")
    return bench.make_runner(name, params)


def _record(benchmark, problem, flops: float, name: str, kind: str):
    benchmark.group = f"{problem.name} {kind}: {problem}"
    benchmark.extra_info.update(
        runner=name,
        flops=flops,
        blas=bench.blas_description(),
        T=problem.T,
        B=problem.B,
        I=problem.I,
        H=problem.H,
    )


@pytest.mark.parametrize("name", RUNNERS)
@pytest.mark.parametrize("size", list(bench.GRID))
def test_forward(benchmark, add_gflops, size, name):
    problem, params, x, h0, _, y_ref, _ = _case(size)
    runner = _runner(name, params)
    np.testing.assert_allclose(runner.forward(x, h0), y_ref, rtol=1e-4, atol=2e-5)
    _record(benchmark, problem, problem.forward_flops, name, "forward")
    benchmark(runner.forward, x, h0)
    add_gflops(problem.forward_flops)


@pytest.mark.parametrize("name", TRAIN_RUNNERS)
@pytest.mark.parametrize("size", list(bench.GRID))
def test_forward_backward(benchmark, add_gflops, size, name):
    problem, params, x, h0, dy, _, dx_ref = _case(size)
    runner = _runner(name, params)
    dx = runner.train(x, h0, dy)
    scale = np.abs(dx_ref).max()
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-3, atol=1e-4 * scale)
    _record(benchmark, problem, problem.train_flops, name, "forward+backward")
    benchmark(runner.train, x, h0, dy)
    add_gflops(problem.train_flops)


@pytest.mark.parametrize("peer", PAIRED_PEERS)
@pytest.mark.parametrize("size", list(bench.GRID))
def test_forward_paired(benchmark, add_gflops, size, peer):
    """numba's forward and a peer's, in turns of a few calls each on the same inputs: both see
    the same phases of a shared machine, which tests run one after the other do not. Turns,
    not single calls: the first call after the other runner's turn is slower (caches, threads
    still spinning), and the medians over all calls leave it out. Timed: numba; extra_info: the
    peer's median."""
    problem, params, x, h0, _, y_ref, _ = _case(size)
    numba, other = _runner("numba", params), _runner(peer, params)
    for runner in (numba, other):
        np.testing.assert_allclose(runner.forward(x, h0), y_ref, rtol=1e-4, atol=2e-5)
    pair = _seconds(other.forward, x, h0) + _seconds(numba.forward, x, h0)
    turn = max(5, min(50, int(PAIRED_TURN_SECONDS / pair)))  # calls per turn
    rounds = turn * max(3, int(PAIRED_SECONDS / (turn * pair)))
    peer_seconds, calls = [], 0

    def between_calls():  # pytest-benchmark's setup: runs before every timed numba call
        nonlocal calls
        if calls % turn == 0:  # the peer's turn, timed here
            peer_seconds.extend(_seconds(other.forward, x, h0) for _ in range(turn))
        calls += 1

    _record(benchmark, problem, problem.forward_flops, "numba", "forward, alternating")
    benchmark.pedantic(numba.forward, args=(x, h0), setup=between_calls, rounds=rounds)
    benchmark.extra_info.update(peer=peer, peer_seconds=statistics.median(peer_seconds))
    add_gflops(problem.forward_flops)


def _seconds(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def test_sgemm_roofline(benchmark, add_gflops):
    """A 2048³ float32 product with NumPy's BLAS: the machine's GEMM rate, in the same run."""
    n = 2048
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    np.testing.assert_allclose((a @ a)[0, :4], [a[0] @ a[:, j] for j in range(4)], rtol=1e-3)
    benchmark.group = "roofline: 2048³ SGEMM"
    benchmark.extra_info.update(
        runner="numpy sgemm", flops=2.0 * n**3, blas=bench.blas_description()
    )
    benchmark(np.matmul, a, a)
    add_gflops(2.0 * n**3)
