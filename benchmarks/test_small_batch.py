"""Few rows, many hidden units (streaming and real-time inference): numba's forward against
OpenVINO, ONNX Runtime and torch, and numba's time against its thread count.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest benchmarks/test_small_batch.py \
        --benchmark-only --benchmark-group-by=group \
        --benchmark-json=benchmarks/results/small-DATE-runN.json
    python benchmarks/report.py benchmarks/results/small-*.json

At B = 1 each step reads all of W_hh (3H·H floats) for 3H·H multiply-adds, so the rate at which
the weights are read bounds it; docs/performance.md reports that rate (GB/s of W_hh per step).
With fewer rows than threads, the numba backend splits the hidden units between its threads
(numba_cpu._Plan). The scaling study runs numba alone at 1 … NUMBA_NUM_THREADS threads. To
read those rates against, test_read_bandwidth measures how fast every thread together reads
float32 arrays that fit each one's L2 cache, the L3 cache, and only memory.
"""

import functools

import numba
import numpy as np
import pytest
from numba import prange

import grukern
from grukern import bench
from grukern._backends._simd import fma, lanes, load, splat, total, vector_lanes, zeros

SIZES = bench.named_problems(
    {
        "S1": (100, 1, 512, 512),
        "S2": (100, 1, 1024, 1024),
        "S3": (100, 4, 512, 512),
        "S4": (100, 4, 1024, 1024),
        "S5": (50, 1, 2048, 2048),
    }
)
RUNNERS = ["numba", "openvino", "onnxruntime", "torch"]
# The scaling study: B = 1, 8, 64 at I = H = 1024, every thread count of this machine.
SCALING = {f"B={B}": bench.Problem(50, B, 1024, 1024, name=f"B={B}") for B in (1, 8, 64)}
THREADS = list(range(1, numba.config.NUMBA_NUM_THREADS + 1))


@functools.cache
def _case(problem: bench.Problem):
    params, x, h0, dy = bench.make_inputs(problem)
    y_ref, dx_ref = bench.reference(params, x, h0, dy)
    return params, x, h0, dy, y_ref, dx_ref


def _checked_runner(name: str, problem: bench.Problem, train: bool):
    """The runner, checked against the float64 reference (and compiled) before timing."""
    params, x, h0, dy, y_ref, dx_ref = _case(problem)
    if name not in bench.runner_names(params):
        pytest.skip(f"{name} is not available here")
    runner = bench.make_runner(name, params)
    np.testing.assert_allclose(runner.forward(x, h0), y_ref, rtol=1e-4, atol=2e-5)
    if train:
        dx = runner.train(x, h0, dy)
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-3, atol=1e-4 * np.abs(dx_ref).max())
    return runner, x, h0, dy


def _record(benchmark, problem: bench.Problem, runner: str, kind: str, flops: float, **info):
    benchmark.extra_info.update(runner=runner, size=problem.name, flops=flops, **info)
    benchmark.extra_info.update({dim: getattr(problem, dim) for dim in ("T", "B", "I", "H")})


@pytest.mark.parametrize("name", RUNNERS)
@pytest.mark.parametrize("size", list(SIZES))
def test_small_forward(benchmark, add_gflops, size, name):
    problem = SIZES[size]
    runner, x, h0, _ = _checked_runner(name, problem, train=False)
    benchmark.group = f"small forward: {problem}"
    _record(benchmark, problem, name, "small forward", problem.forward_flops)
    benchmark(runner.forward, x, h0)
    add_gflops(problem.forward_flops)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("batch", list(SCALING))
@pytest.mark.parametrize("kind", ["forward", "forward+backward"])
def test_thread_scaling(benchmark, add_gflops, kind, batch, threads):
    problem = SCALING[batch]
    runner, x, h0, dy = _checked_runner("numba", problem, train=kind != "forward")
    call = (lambda: runner.forward(x, h0)) if kind == "forward" else lambda: runner.train(x, h0, dy)
    flops = problem.forward_flops if kind == "forward" else problem.train_flops
    benchmark.group = f"thread scaling {kind}: {problem}"
    _record(benchmark, problem, "numba", kind, flops, threads=threads)
    budget = grukern.get_num_threads()
    grukern.set_num_threads(threads)
    try:
        call()  # the plan for this budget, compiled and cached before timing
        benchmark(call)
    finally:
        grukern.set_num_threads(budget)
    add_gflops(flops)


# Arrays read by every thread at once, bytes and passes per call (so that a call reads about
# 32 MB or more, and a parallel region's start costs little): 384 kB per thread (in its L2),
# 16 MB (in a 32 MB L3), 1 GB (in memory only).
READ_SIZES = {
    "L2": (384 * 1024 * numba.config.NUMBA_NUM_THREADS, 64),
    "L3": (16 * 1024 * 1024, 4),
    "memory": (1024 * 1024 * 1024, 1),
}


@numba.njit(parallel=True, cache=True)
def _sum_in_chunks(a, n_chunks, passes):
    """passes × the sum of a (rows, 4 vectors of float32), one chunk of rows per thread, read
    as whole vectors into four vector sums (_simd), so that the loop runs at the speed of the
    reads; each thread reads its chunk `passes` times."""
    partial = np.zeros(n_chunks, dtype=np.float32)
    for c in prange(n_chunks):
        lanes, one = vector_lanes(a), splat(np.float32(1))
        s0 = s1 = s2 = s3 = zeros(a)
        for _ in range(passes):
            for i in range(c * a.shape[0] // n_chunks, (c + 1) * a.shape[0] // n_chunks):
                s0, s1 = fma(one, load(a, i, 0), s0), fma(one, load(a, i, lanes), s1)
                s2, s3 = fma(one, load(a, i, 2 * lanes), s2), fma(one, load(a, i, 3 * lanes), s3)
        partial[c] = total(s0) + total(s1) + total(s2) + total(s3)
    return partial.sum()


@pytest.mark.parametrize("level", list(READ_SIZES))
def test_read_bandwidth(benchmark, level):
    """GB/s read by every thread together from an array of READ_SIZES[level] bytes, read again
    and again (so it stays in that level when it fits)."""
    size, passes = READ_SIZES[level]
    a = np.random.default_rng(0).random(size // 4, dtype=np.float32)
    a = a.reshape(-1, 4 * lanes(np.float32))
    threads = numba.config.NUMBA_NUM_THREADS
    expected = passes * a.sum(dtype=np.float64)
    np.testing.assert_allclose(_sum_in_chunks(a, threads, passes), expected, rtol=1e-3)
    benchmark.group = "read bandwidth, every thread"
    runner = f"numba, {threads} threads"
    benchmark.extra_info.update(runner=runner, size=level, bytes=passes * a.nbytes, array=a.nbytes)
    benchmark(_sum_in_chunks, a, threads, passes)
