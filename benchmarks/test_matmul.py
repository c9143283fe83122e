"""The per-step recurrent product on one thread: _numba_matmul.matmul (weights packed once,
as the kernels do per call) against an OpenBLAS call on the same operands.

    pytest benchmarks/test_matmul.py --benchmark-only --benchmark-group-by=group

Shapes (m, p, n): G5's forward (128 rows per thread, h_{t-1} W_hhᵀ) and backward (dgh W_hh),
a step with 12 rows still running, and the backward at H = 1024 with 64 rows per thread.
"""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from grukern._backends._numba_matmul import matmul, pack

SHAPES = {
    "G5 forward": (128, 256, 768),
    "G5 backward": (128, 768, 256),
    "12 rows": (12, 256, 768),
    "H=1024 backward": (64, 3072, 1024),
}


@pytest.mark.parametrize("runner", ["matmul", "openblas"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_recurrent_product(benchmark, add_gflops, shape, runner):
    m, p, n = SHAPES[shape]
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, p)).astype(np.float32)
    b = rng.standard_normal((p, n)).astype(np.float32)
    out = np.empty((m, n), dtype=np.float32)
    if runner == "matmul":
        panels = pack(b, transposed=False)
        run = (matmul, a, panels, out, False)
    else:
        run = (np.matmul, a, b, out)
    flops = 2.0 * m * p * n
    benchmark.group = f"recurrent product, one thread, float32: {shape} (m, p, n) = {m, p, n}"
    benchmark.extra_info.update(runner=runner, flops=flops)
    with threadpool_limits(1):
        run[0](*run[1:])  # compiles matmul
        np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)
        benchmark(*run)
    add_gflops(flops)
