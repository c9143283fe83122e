"""Benchmark configuration: Keras on the torch backend; results tagged with machine facts."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")


def pytest_benchmark_update_machine_info(config, machine_info):
    """CPU, cores, BLAS kernel, GPU and library versions go into every saved JSON."""
    from grukern import results

    machine_info["grukern"] = results.machine_facts()
