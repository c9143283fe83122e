"""The reference against torch.nn.GRU: forward and every gradient (reset_after=True)."""

import numpy as np
import pytest

import grukern
from grukern.peers import torch_gru
from tests.helpers import assert_grads_close, make_problem, tolerance

torch = pytest.importorskip("torch")

SIZES = [(1, 1, 1, 1), (1, 3, 4, 5), (6, 1, 3, 33), (7, 4, 16, 8), (3, 5, 33, 33)]
LAYOUTS = ["time_major", "batch_first", "unbatched"]


def _torch_forward_backward(problem, layout):
    """torch's y, h_n and autograd gradients, all in grukern's time-major layout."""
    module = torch_gru(problem.params)
    x, h0 = problem.x, problem.h0
    if layout == "unbatched":
        x, h0 = x[:, :1], h0[:1]
    x_t = torch.tensor(x, requires_grad=True)
    h0_t = torch.tensor(h0[None], requires_grad=True)
    y_t, h_n_t = module(x_t, h0_t)
    loss = (y_t * torch.tensor(problem.dy[:, : x.shape[1]])).sum() + (
        h_n_t[0] * torch.tensor(problem.dh_n[: x.shape[1]])
    ).sum()
    loss.backward()
    grads = grukern.GRUParams.from_torch(
        {
            f"{k}_l0": getattr(module, f"{k}_l0").grad
            for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        }
    )
    torch_grads = grukern.Gradients(x=x_t.grad.numpy(), h0=h0_t.grad[0].numpy(), params=grads)
    return y_t.detach().numpy(), h_n_t[0].detach().numpy(), torch_grads


def _grukern_forward_backward(problem, layout):
    """grukern's y, h_n and gradients through the public API in `layout`, made time-major."""
    x, h0, dy, dh_n = problem.x, problem.h0, problem.dy, problem.dh_n
    if layout == "batch_first":
        to_bf = (1, 0, 2)
        y, h_n, tape = grukern.forward_train(
            x.transpose(to_bf), problem.params, h0, backend="numpy", batch_first=True
        )
        grads = grukern.backward(tape, dy=dy.transpose(to_bf), dh_n=dh_n)
        grads = grukern.Gradients(grads.x.transpose(to_bf), grads.h0, grads.params)
        return y.transpose(to_bf), h_n, grads
    if layout == "unbatched":
        y, h_n, tape = grukern.forward_train(x[:, 0], problem.params, h0[0], backend="numpy")
        grads = grukern.backward(tape, dy=dy[:, 0], dh_n=dh_n[0])
        grads = grukern.Gradients(grads.x[:, None], grads.h0[None], grads.params)
        return y[:, None], h_n[None], grads
    y, h_n, tape = grukern.forward_train(x, problem.params, h0, backend="numpy")
    return y, h_n, grukern.backward(tape, dy=dy, dh_n=dh_n)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("T", "B", "I", "H"), SIZES)
def test_forward_and_gradients_match_torch(rng, T, B, I, H, dtype, layout):
    problem = make_problem(rng, T, B, I, H, dtype=dtype)
    y, h_n, grads = _grukern_forward_backward(problem, layout)
    y_t, h_n_t, grads_t = _torch_forward_backward(problem, layout)
    np.testing.assert_allclose(y, y_t, **tolerance(dtype, "output"))
    np.testing.assert_allclose(h_n, h_n_t, **tolerance(dtype, "output"))
    assert_grads_close(grads, grads_t, dtype, T, y.shape[1])


def test_long_sequence_float32_stays_close_to_torch(rng):
    """Rounding does not build up over many steps: T = 300 in float32."""
    problem = make_problem(rng, 300, 4, 8, 16, dtype=np.float32)
    y, h_n, grads = _grukern_forward_backward(problem, "time_major")
    y_t, h_n_t, grads_t = _torch_forward_backward(problem, "time_major")
    np.testing.assert_allclose(y, y_t, **tolerance(np.float32, "output"))
    np.testing.assert_allclose(h_n, h_n_t, **tolerance(np.float32, "output"))
    assert_grads_close(grads, grads_t, np.float32, 300, 4)
