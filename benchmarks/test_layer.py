"""A 2-layer bidirectional GRU over a padded batch of mixed lengths: grukern.GRU against
torch.nn.GRU fed a PackedSequence, forward and forward+backward, at the sizes of G3 and G5.

    pytest benchmarks/test_layer.py --benchmark-only --benchmark-group-by=group

Lengths are drawn uniformly from [T/4, T]. Each runner is first checked against the float64
NumPy layer on the same weights and inputs (compiling the kernels), then timed.
"""

import functools

import numpy as np
import pytest

import grukern
from grukern import bench

SIZES = ["G3", "G5"]
LAYERS = 2


@functools.cache
def _case(size: str):
    """Weights, inputs, lengths and float64 reference output/input gradient of one size."""
    problem = bench.GRID[size]
    T, B, I, H = problem.T, problem.B, problem.I, problem.H
    rng = np.random.default_rng(0)
    reference = grukern.GRU(
        I, H, LAYERS, bidirectional=True, dtype=np.float64, backend="numpy", seed=0
    )
    x = rng.standard_normal((T, B, I))
    dy = rng.standard_normal((T, B, 2 * H))
    lengths = rng.integers(T // 4, T + 1, size=B)
    y_ref, _, tape = reference.forward_train(x, lengths=lengths)
    dx_ref = reference.backward(tape, dy=dy).x
    state = {k: v.astype(np.float32) for k, v in reference.state_dict().items()}
    inputs = x.astype(np.float32), dy.astype(np.float32), lengths
    return problem, state, inputs, y_ref, dx_ref, _forward_flops(problem, lengths)


def _forward_flops(problem, lengths) -> float:
    """Multiply-adds ×2 of the valid steps: per layer and direction 2·Σlengths·3H·(I_l + H),
    I_l = I for layer 0 and 2H above (gate math not counted; training counts 3× this)."""
    H = problem.H
    inputs = [problem.I] + [2 * H] * (LAYERS - 1)
    return float(sum(2 * 2 * lengths.sum() * 3 * H * (I_l + H) for I_l in inputs))


def _grukern_runners(state):
    gru = grukern.GRU(state["weight_ih_l0"].shape[1], state["weight_hh_l0"].shape[1],
                      LAYERS, bidirectional=True, backend="numba")  # fmt: skip
    gru.load_state_dict(state)

    def forward(x, dy, lengths):
        return gru(x, lengths=lengths)[0]

    def train(x, dy, lengths):
        _, _, tape = gru.forward_train(x, lengths=lengths)
        return gru.backward(tape, dy=dy).x

    return forward, train


def _torch_runners(state):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    module = torch.nn.GRU(state["weight_ih_l0"].shape[1], state["weight_hh_l0"].shape[1],
                          LAYERS, bidirectional=True)  # fmt: skip
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})

    def run(x_t, lengths):
        packed = pack_padded_sequence(x_t, torch.from_numpy(lengths), enforce_sorted=False)
        y_packed, _ = module(packed)
        return pad_packed_sequence(y_packed, total_length=x_t.shape[0])[0]

    def forward(x, dy, lengths):
        with torch.no_grad():
            return run(torch.from_numpy(x), lengths).numpy()

    def train(x, dy, lengths):
        module.zero_grad(set_to_none=True)
        x_t = torch.from_numpy(x).requires_grad_()
        run(x_t, lengths).backward(torch.from_numpy(dy))
        return x_t.grad.numpy()

    return forward, train


RUNNERS = {"numba": _grukern_runners, "torch": _torch_runners}


def _setup(benchmark, size, name, kind):
    problem, state, inputs, y_ref, dx_ref, flops = _case(size)
    forward, train = RUNNERS[name](state)
    benchmark.group = f"{size} 2-layer bidirectional, lengths in [T/4, T], {kind}: {problem}"
    benchmark.extra_info.update(
        runner=name, T=problem.T, B=problem.B, I=problem.I, H=problem.H,
        flops=flops if kind == "forward" else 3 * flops,
    )  # fmt: skip
    return forward, train, inputs, y_ref, dx_ref


@pytest.mark.parametrize("name", list(RUNNERS))
@pytest.mark.parametrize("size", SIZES)
def test_layer_forward(benchmark, size, name):
    forward, _, inputs, y_ref, _ = _setup(benchmark, size, name, "forward")
    np.testing.assert_allclose(forward(*inputs), y_ref, rtol=1e-4, atol=2e-5)
    benchmark(forward, *inputs)


@pytest.mark.parametrize("name", list(RUNNERS))
@pytest.mark.parametrize("size", SIZES)
def test_layer_forward_backward(benchmark, size, name):
    _, train, inputs, _, dx_ref = _setup(benchmark, size, name, "forward+backward")
    np.testing.assert_allclose(train(*inputs), dx_ref, rtol=1e-3, atol=1e-4 * np.abs(dx_ref).max())
    benchmark(train, *inputs)
