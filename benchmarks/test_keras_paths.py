"""What the Keras layer adds over grukern's kernels: grukern.keras.GRU called on a torch tensor
(forward, forward+backward) and in one Keras training step, against grukern.forward /
forward_train + backward on NumPy arrays, and keras.layers.GRU, at G3 (float32).

    pytest benchmarks/test_keras_paths.py --benchmark-only --benchmark-group-by=group

The issue's target: the Keras path costs at most 10% more than the kernels called directly.
The kernels get time-major (T, B, I) arrays, their natural layout, and (a second line)
Keras's batch-first (B, T, I) layout, which the kernels read and write in place; the layers
get batch-first tensors. Each runner is checked against the float64 NumPy reference on
the same weights and inputs (compiling the kernels) before it is timed.
"""

import functools
import os

import numpy as np
import pytest

import grukern
from grukern import bench

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
gk = pytest.importorskip("grukern.keras")

SIZE = "G3"


@functools.cache
def _case():
    """Keras weights, time-major inputs (float32) and the float64 reference y and dx."""
    problem = bench.GRID[SIZE]
    T, B, I, H = problem.T, problem.B, problem.I, problem.H
    rng = np.random.default_rng(0)
    reference = grukern.init_params(I, H, dtype=np.float64, seed=0, init="keras")
    reference.b_ih[:] = rng.uniform(-0.1, 0.1, 3 * H)
    reference.b_hh[:] = rng.uniform(-0.1, 0.1, 3 * H)
    x = rng.standard_normal((T, B, I))
    dy = rng.standard_normal((T, B, H))
    y_ref, _, tape = grukern.forward_train(x, reference, backend="numpy")
    dx_ref = grukern.backward(tape, dy=dy).x
    weights = [w.astype(np.float32) for w in reference.to_keras_weights()]
    return problem, weights, x.astype(np.float32), dy.astype(np.float32), y_ref, dx_ref


def _kernel_runners(weights, *, batch_first=False):
    """Both return time-major arrays (T, B, ·). batch_first=True hands the kernels Keras's
    layout, (B, T, ·) arrays, read and written in place (x, y, dy, dx)."""
    params = grukern.GRUParams.from_keras(weights)
    arrays = {}  # the batch-first arrays of each input array, made once

    def layout(x, dy):
        if not batch_first:
            return x, dy
        if id(x) not in arrays:
            arrays[id(x)] = tuple(np.ascontiguousarray(a.transpose(1, 0, 2)) for a in (x, dy))
        return arrays[id(x)]

    def time_major(a):
        return a.transpose(1, 0, 2) if batch_first else a

    def forward(x, dy):
        x = layout(x, dy)[0]
        return time_major(grukern.forward(x, params, batch_first=batch_first)[0])

    def train(x, dy):
        x, dy = layout(x, dy)
        _, _, tape = grukern.forward_train(x, params, batch_first=batch_first)
        return time_major(grukern.backward(tape, dy=dy).x)

    return forward, train


def _layer_runners(layer_class, weights):
    """Calls on batch-first tensors; returns time-major arrays to compare."""
    layer = layer_class(weights[1].shape[0], return_sequences=True)
    layer.build((None, None, weights[0].shape[0]))
    layer.set_weights(weights)
    batch_first = {}  # the batch-first tensors of each input array, made once

    def tensors(x, dy):
        if id(x) not in batch_first:
            batch_first[id(x)] = (
                torch.from_numpy(np.ascontiguousarray(x.transpose(1, 0, 2))),
                torch.from_numpy(np.ascontiguousarray(dy.transpose(1, 0, 2))),
            )
        return batch_first[id(x)]

    def forward(x, dy):
        with torch.no_grad():  # as Keras's predict runs
            return layer(tensors(x, dy)[0]).numpy().transpose(1, 0, 2)

    def train(x, dy):
        x_t, dy_t = tensors(x, dy)
        x_t = x_t.detach().requires_grad_()
        for variable in layer.trainable_variables:
            variable.value.grad = None
        layer(x_t).backward(dy_t)
        return x_t.grad.numpy().transpose(1, 0, 2)

    return forward, train


RUNNERS = {
    "kernels": _kernel_runners,
    "kernels, batch-first": functools.partial(_kernel_runners, batch_first=True),
    "grukern.keras.GRU": functools.partial(_layer_runners, gk.GRU),
    "keras.layers.GRU": functools.partial(_layer_runners, keras.layers.GRU),
}


def _dims(problem) -> dict:
    return {dim: getattr(problem, dim) for dim in ("T", "B", "I", "H")}


def _setup(benchmark, name, kind):
    problem, weights, x, dy, y_ref, dx_ref = _case()
    benchmark.group = f"{SIZE} Keras paths, {kind}: {problem}"
    flops = problem.forward_flops if kind == "forward" else problem.train_flops
    benchmark.extra_info.update(runner=name, flops=flops, size=SIZE, **_dims(problem))
    return RUNNERS[name](weights), (x, dy), y_ref, dx_ref, flops


@pytest.mark.parametrize("name", list(RUNNERS))
def test_keras_forward(benchmark, add_gflops, name):
    (forward, _), inputs, y_ref, _, flops = _setup(benchmark, name, "forward")
    np.testing.assert_allclose(forward(*inputs), y_ref, rtol=1e-4, atol=2e-5)
    benchmark(forward, *inputs)
    add_gflops(flops)


@pytest.mark.parametrize("name", list(RUNNERS))
def test_keras_forward_backward(benchmark, add_gflops, name):
    (_, train), inputs, _, dx_ref, flops = _setup(benchmark, name, "forward+backward")
    np.testing.assert_allclose(train(*inputs), dx_ref, rtol=1e-3, atol=1e-4 * np.abs(dx_ref).max())
    benchmark(train, *inputs)
    add_gflops(flops)


def _train_step(layer_class, weights, x, targets):
    """One Keras training step (train_on_batch: forward, MSE loss, backward, Adam) of
    Input -> GRU(return_sequences=True), from the given weights."""
    T, _, I = x.shape
    layer = layer_class(weights[1].shape[0], return_sequences=True)
    model = keras.Sequential([keras.Input((T, I)), layer])
    model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.Adam(), loss="mse")
    x_b, targets_b = (np.ascontiguousarray(a.transpose(1, 0, 2)) for a in (x, targets))
    return lambda: model.train_on_batch(x_b, targets_b)


@pytest.mark.parametrize("name", ["kernels", "grukern.keras.GRU", "keras.layers.GRU"])
def test_keras_train_step(benchmark, add_gflops, name):
    """The kernels' line is their forward+backward alone: the floor under a training step."""
    problem, weights, x, dy, _, _ = _case()
    benchmark.group = f"{SIZE} Keras paths, one train_on_batch step: {problem}"
    benchmark.extra_info.update(runner=name, flops=problem.train_flops, size=SIZE, **_dims(problem))
    if name == "kernels":
        train = _kernel_runners(weights)[1]
        step = functools.partial(train, x, dy)
    else:
        layer_class = gk.GRU if name == "grukern.keras.GRU" else keras.layers.GRU
        step = _train_step(layer_class, weights, x, dy)
    assert np.all(np.isfinite(step()))
    benchmark(step)
    add_gflops(problem.train_flops)
