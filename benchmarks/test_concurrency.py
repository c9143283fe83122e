"""Concurrent throughput: the same G3 calls made one after another, and spread over N Python
threads calling grukern at once (the numba backend).

    pytest benchmarks/test_concurrency.py --benchmark-only --benchmark-group-by=group \
        --benchmark-json=benchmarks/results/concurrency-DATE-runN.json
    python benchmarks/report.py benchmarks/results/concurrency-*.json

Each round makes CALLS calls. The kernels share one process-wide thread budget
(grukern.set_num_threads), so N threads should finish the calls no slower than one thread
does: the ratio of a concurrent median to the serial median is what docs/performance.md reports.
"""

import concurrent.futures

import numpy as np
import pytest

from grukern import bench

CALLS = 24
SIZE = "G3"


@pytest.fixture(scope="module")
def case():
    problem = bench.GRID[SIZE]
    params, x, h0, dy = bench.make_inputs(problem)
    y_ref, _ = bench.reference(params, x, h0, dy)
    runner = bench.make_runner("numba", params)
    np.testing.assert_allclose(runner.forward(x, h0), y_ref, rtol=1e-4, atol=2e-5)
    runner.train(x, h0, dy)  # compiled before timing
    return problem, runner, x, h0, dy


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("kind", ["forward", "forward+backward"])
def test_concurrent_calls(benchmark, add_gflops, case, kind, threads):
    problem, runner, x, h0, dy = case
    call = (lambda: runner.forward(x, h0)) if kind == "forward" else lambda: runner.train(x, h0, dy)
    flops = CALLS * (problem.forward_flops if kind == "forward" else problem.train_flops)
    benchmark.group = f"{CALLS} {problem.name} {kind} calls: {problem}"
    benchmark.extra_info.update(
        runner="numba", threads=threads, calls=CALLS, size=SIZE, flops=flops
    )
    benchmark.extra_info.update({dim: getattr(problem, dim) for dim in ("T", "B", "I", "H")})
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:

        def all_calls():
            if threads == 1:
                for _ in range(CALLS):
                    call()
            else:
                for future in [pool.submit(call) for _ in range(CALLS)]:
                    future.result()

        benchmark(all_calls)
    add_gflops(flops)
