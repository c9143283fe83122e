"""What grukern.torch costs over the kernels it calls: one GRU layer at G3, forward and
forward+backward, through the kernels directly (grukern.GRU on NumPy arrays), through
grukern.torch.GRU in eager mode, and through torch.compile(..., fullgraph=True) of it; and one
training step (forward, loss, backward) of a model holding it, GRU -> Linear -> sigmoid with a
binary cross-entropy, eager and compiled (the kernels' forward+backward alone is its floor).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest benchmarks/test_torch_paths.py \
        --benchmark-only --benchmark-group-by=group

The issue's target: the compiled path adds at most 10% to the kernels' time. Each runner is
first checked against the float64 NumPy reference on the same weights and inputs; that check
is also the warm-up (Numba's and Inductor's compilation stay out of the timings).
"""

import functools

import numpy as np
import pytest

import grukern
from grukern import bench

torch = pytest.importorskip("torch")
gt = pytest.importorskip("grukern.torch")

PROBLEM = bench.GRID["G3"]  # T=100 B=32 I=H=128 float32


@functools.cache
def _case():
    """params, time-major x, h0 (B, H), dy, and the float64 reference's y and dL/dx."""
    params, x, h0, dy = bench.make_inputs(PROBLEM)
    return (params, x, h0, dy), bench.reference(params, x, h0, dy)


def _kernel_runners(params):
    """forward(x, h0, dy) -> y and train(x, h0, dy) -> dL/dx on NumPy arrays."""
    layer = grukern.GRU.from_params([params], backend="numba")

    def forward(x, h0, dy):
        return layer(x, h0[None])[0]

    def train(x, h0, dy):
        _, _, tape = layer.forward_train(x, h0[None])
        return layer.backward(tape, dy=dy).x

    return forward, train


def _module_runners(params, compiled: bool):
    """The same two functions through grukern.torch.GRU, eager or compiled (fullgraph)."""
    module = gt.GRU(PROBLEM.I, PROBLEM.H, backend="numba")
    module.load_state_dict(params.to_torch_state_dict())
    run = torch.compile(module, fullgraph=True) if compiled else module

    def forward(x, h0, dy):
        with torch.no_grad():
            return run(torch.from_numpy(x), torch.from_numpy(h0)[None])[0].numpy()

    def train(x, h0, dy):
        module.zero_grad(set_to_none=True)
        x_t = torch.from_numpy(x).requires_grad_()
        y, _ = run(x_t, torch.from_numpy(h0)[None])
        y.backward(torch.from_numpy(dy))
        return x_t.grad.numpy()

    return forward, train


RUNNERS = {
    "kernels": _kernel_runners,
    "torch eager": functools.partial(_module_runners, compiled=False),
    "torch.compile": functools.partial(_module_runners, compiled=True),
}


def _setup(benchmark, name: str, kind: str):
    (params, x, h0, dy), (y_ref, dx_ref) = _case()
    forward, train = RUNNERS[name](params)
    benchmark.group = f"grukern.torch paths, 1 layer, {kind}: {PROBLEM}"
    flops = PROBLEM.forward_flops if kind == "forward" else PROBLEM.train_flops
    benchmark.extra_info.update(
        runner=name, size=PROBLEM.name, T=PROBLEM.T, B=PROBLEM.B, I=PROBLEM.I, H=PROBLEM.H,
        flops=flops,
    )  # fmt: skip
    return forward, train, (x, h0, dy), y_ref, dx_ref


@pytest.mark.parametrize("name", list(RUNNERS))
def test_torch_path_forward(benchmark, add_gflops, name):
    forward, _, inputs, y_ref, _ = _setup(benchmark, name, "forward")
    np.testing.assert_allclose(forward(*inputs), y_ref, rtol=1e-4, atol=2e-5)
    benchmark(forward, *inputs)
    add_gflops(PROBLEM.forward_flops)


@pytest.mark.parametrize("name", list(RUNNERS))
def test_torch_path_forward_backward(benchmark, add_gflops, name):
    _, train, inputs, _, dx_ref = _setup(benchmark, name, "forward+backward")
    np.testing.assert_allclose(train(*inputs), dx_ref, rtol=1e-3, atol=1e-4 * np.abs(dx_ref).max())
    benchmark(train, *inputs)
    add_gflops(PROBLEM.train_flops)


class _Classifier(torch.nn.Module):
    """A per-step binary classifier: GRU -> Linear(H, 1) -> sigmoid, (T, B, I) -> (T, B)."""

    def __init__(self):
        super().__init__()
        self.gru = gt.GRU(PROBLEM.I, PROBLEM.H, backend="numba")
        self.head = torch.nn.Linear(PROBLEM.H, 1)

    def forward(self, x):
        y, _ = self.gru(x)
        return torch.sigmoid(self.head(y)).squeeze(-1)


def _model_step(params, compiled: bool):
    """One step (zero_grad, forward, binary cross-entropy, backward) of a _Classifier with the
    GRU's weights `params`, compiled (fullgraph) or not; returns the step and the model."""
    torch.manual_seed(0)
    model = _Classifier()
    model.gru.load_state_dict(params.to_torch_state_dict())
    run = torch.compile(model, fullgraph=True) if compiled else model
    loss = torch.nn.BCELoss()

    def step(x, targets):
        model.zero_grad(set_to_none=True)
        value = loss(run(x), targets)
        value.backward()
        return value

    return step, model


@pytest.mark.parametrize("name", list(RUNNERS))
def test_torch_model_step(benchmark, add_gflops, name):
    """Eager and compiled give the same loss and gradients; the kernels' line is their
    forward+backward alone."""
    (params, x, h0, dy), _ = _case()
    benchmark.group = f"grukern.torch paths, model step: {PROBLEM}"
    benchmark.extra_info.update(
        runner=name, size=PROBLEM.name, T=PROBLEM.T, B=PROBLEM.B, I=PROBLEM.I, H=PROBLEM.H,
        flops=PROBLEM.train_flops,
    )  # fmt: skip
    if name == "kernels":
        train = _kernel_runners(params)[1]
        benchmark(train, x, h0, dy)
    else:
        x_t = torch.from_numpy(x)
        targets = (torch.from_numpy(dy[..., 0]) > 0).to(x_t.dtype)  # (T, B) labels 0 and 1
        step, model = _model_step(params, compiled=name == "torch.compile")
        eager, eager_model = _model_step(params, compiled=False)
        torch.testing.assert_close(step(x_t, targets), eager(x_t, targets))
        for ours, reference in zip(model.parameters(), eager_model.parameters(), strict=True):
            torch.testing.assert_close(ours.grad, reference.grad)
        benchmark(step, x_t, targets)
    add_gflops(PROBLEM.train_flops)
