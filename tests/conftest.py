"""Test configuration: Keras on the torch backend, and a seeded generator per test."""

import itertools
import os
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Keras 3 must run on the torch backend; this has to be set before keras is first imported.
os.environ.setdefault("KERAS_BACKEND", "torch")

# Hypothesis profiles: "ci" by default; `--hypothesis-profile=long` for the long run.
_PROFILE = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", max_examples=200, **_PROFILE)
settings.register_profile("long", max_examples=10_000, **_PROFILE)
settings.load_profile("ci")


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's name: fresh per test, reproducible per test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


_compile_seconds: list[float] = []


@pytest.fixture(scope="session", autouse=True)
def compiled_numba_kernels():
    """Compile (or load from the disk cache) every Numba build once, before the first test, so
    that its cost is reported on its own (pytest_terminal_summary) instead of being charged to
    whichever tests happen to run first: both dtypes and variants, serial and parallel, and the
    parallel loops that split the units."""
    import grukern

    if "numba" not in grukern.backends() or os.environ.get("GRUKERN_VECTOR_BYTES"):
        return  # (the runs at other vector widths test the product only, and compile only it)
    from grukern._backends import numba_cpu

    start = time.perf_counter()
    threshold = numba_cpu.PARALLEL_MIN_FLOPS
    for parallel in (False, True):
        numba_cpu.PARALLEL_MIN_FLOPS = 0 if parallel else threshold
        numba_cpu._cached_plan.cache_clear()
        for dtype, reset_after in itertools.product((np.float32, np.float64), (True, False)):
            params = grukern.init_params(2, 3, dtype=dtype, seed=0, reset_after=reset_after)
            x = np.zeros((2, 2, 2), dtype=dtype)
            _, _, tape = grukern.forward_train(x, params, backend="numba")
            grukern.backward(tape, dh_n=np.zeros((2, 3), dtype=dtype))
            if parallel:  # the loops that split the hidden units (numba_cpu._Plan)
                numba_cpu.FORCED_SPLIT = "units"
                _, _, tape = grukern.forward_train(x, params, backend="numba")
                grukern.backward(tape, dh_n=np.zeros((2, 3), dtype=dtype))
                numba_cpu.FORCED_SPLIT = None
    numba_cpu.PARALLEL_MIN_FLOPS = threshold
    numba_cpu._cached_plan.cache_clear()
    _compile_seconds.append(time.perf_counter() - start)


def pytest_terminal_summary(terminalreporter):
    if _compile_seconds:
        terminalreporter.write_line(
            f"Numba kernels compiled or loaded from the disk cache in {_compile_seconds[0]:.1f} s "
            "(before the first test)"
        )


def pytest_configure(config):
    """`pytest --benchmark-only` with no paths runs the benchmark suite (benchmarks/), which
    testpaths leaves out so that a plain `pytest` stays the fast test run."""
    from_testpaths = config.args_source == pytest.Config.ArgsSource.TESTPATHS
    if from_testpaths and config.getoption("benchmark_only", default=False):
        config.args = [str(config.rootpath / "benchmarks")]
