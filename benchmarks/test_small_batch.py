"""Few rows, many hidden units (streaming and real-time inference): numba's forward against
OpenVINO, ONNX Runtime and torch, and numba's time against its thread count.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest benchmarks/test_small_batch.py \
        --benchmark-only --benchmark-group-by=group \
        --benchmark-json=benchmarks/results/small-DATE-runN.json
    python benchmarks/report.py benchmarks/results/small-*.json

At B = 1 each step reads all of W_hh (3H·H floats) for 3H·H multiply-adds, so the rate at which
the weights are read bounds it; docs/performance.md reports that rate (GB/s of W_hh per step).
With fewer rows than threads, the numba backend splits the hidden units between its threads
(numba_cpu._Plan). The scaling study runs numba alone at 1 … NUMBA_NUM_THREADS threads.
"""

import functools

import numba
import numpy as np
import pytest

import grukern
from grukern import bench

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
