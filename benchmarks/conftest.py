"""Benchmark configuration: Keras on the torch backend; results tagged with machine facts and
GFLOP/s."""

import os

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")


def pytest_benchmark_update_machine_info(config, machine_info):
    """CPU, cores, BLAS kernel, GPU and library versions go into every saved JSON."""
    from grukern import results

    machine_info["grukern"] = results.machine_facts()


@pytest.fixture
def add_gflops(benchmark):
    """add_gflops(flops), after benchmark(...): records flops / median time in extra_info."""

    def add(flops: float) -> None:
        if benchmark.stats is not None:  # None when timing is disabled
            benchmark.extra_info["gflops"] = flops / benchmark.stats.stats.median / 1e9

    return add
