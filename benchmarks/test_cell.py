"""One streaming step: grukern.GRUCell against ONNX Runtime's GRU session run on T = 1 and
torch.nn.GRUCell (no_grad), B = 1, I = H = 64, float32. Each runner is checked against the
float64 reference before it is timed.

    pytest benchmarks/test_cell.py --benchmark-only --benchmark-group-by=group
"""

import numpy as np
import pytest

import grukern
from grukern import bench, peers

I = H = 64
RUNNERS = ["grukern", "onnxruntime", "torch"]


@pytest.fixture(scope="module")
def case():
    params = grukern.init_params(I, H, seed=0)
    rng = np.random.default_rng(0)
    x, h = (rng.standard_normal((1, n)).astype(np.float32) for n in (I, H))
    expected = grukern.forward(
        x[None].astype(np.float64), params.astype(np.float64), h.astype(np.float64), backend="numpy"
    )[1]
    return params, x, h, expected


def _step(name, params):
    if name == "grukern":
        cell = grukern.GRUCell(params)
        return lambda x, h: cell(x, h)
    if name == "onnxruntime":
        pytest.importorskip("onnxruntime")
        session = peers.onnx_gru_session(params, intra_op_threads=2)
        return lambda x, h: peers.run_onnx(session, x[None], h)[1]
    torch = pytest.importorskip("torch")
    module = torch.nn.GRUCell(I, H)
    module.load_state_dict(
        {k.removesuffix("_l0"): v for k, v in params.to_torch_state_dict().items()}
    )

    def step(x, h):
        with torch.no_grad():
            return module(torch.from_numpy(x), torch.from_numpy(h)).numpy()

    return step


@pytest.mark.parametrize("name", RUNNERS)
def test_cell_step(benchmark, add_gflops, case, name):
    params, x, h, expected = case
    step = _step(name, params)
    np.testing.assert_allclose(step(x, h), expected, rtol=1e-4, atol=1e-5)
    flops = bench.Problem(1, 1, I, H).forward_flops
    benchmark.group = f"GRUCell step: B=1 I={I} H={H} float32"
    runner = "numba" if name == "grukern" else name  # GRUCell runs the numba backend
    benchmark.extra_info.update(runner=runner, flops=flops, size="B=1 I=H=64", T=1, B=1, I=I, H=H)
    benchmark(step, x, h)
    add_gflops(flops)
