"""Variable-length sequences: the meaning of `lengths`, checked against its definition (each
sequence run alone, cut to its length) and against torch's PackedSequence."""

import dataclasses

import numpy as np
import pytest

import grukern
from grukern import _backends
from grukern.peers import torch_gru
from tests.helpers import (
    PADDING_GARBAGE,
    assert_grads_close,
    assert_same_bits,
    fill_padding,
    make_problem,
    needs_torch,
    tolerance,
)


def _alone(backend, p, lengths):
    """The definition: run each sequence b alone on its first lengths[b] steps, pad y with 0."""
    y = np.zeros_like(p.dy)
    h_n = np.empty_like(p.h0)
    dx = np.zeros_like(p.x)
    dh0 = np.empty_like(p.h0)
    dparams = [np.zeros_like(a) for a in p.params.arrays()]
    for b, n in enumerate(lengths):
        rows = slice(b, b + 1)
        y_b, h_n_b, tape = grukern.forward_train(
            p.x[:n, rows], p.params, p.h0[rows], backend=backend
        )
        grads = grukern.backward(tape, dy=p.dy[:n, rows], dh_n=p.dh_n[rows])
        y[:n, rows], h_n[rows], dx[:n, rows], dh0[rows] = y_b, h_n_b, grads.x, grads.h0
        for total, part in zip(dparams, grads.params.arrays(), strict=True):
            total += part
    params = grukern.GRUParams(*dparams, reset_after=p.params.reset_after)
    return y, h_n, grukern.Gradients(x=dx, h0=dh0, params=params)


@pytest.mark.parametrize("backend", grukern.backends())
@pytest.mark.parametrize("reset_after", [True, False])
def test_a_padded_batch_equals_each_sequence_run_alone(rng, backend, reset_after):
    p = make_problem(rng, 8, 5, 3, 6, reset_after=reset_after)
    lengths = np.array([8, 0, 3, 1, 5])
    y, h_n, tape = grukern.forward_train(p.x, p.params, p.h0, backend=backend, lengths=lengths)
    grads = grukern.backward(tape, dy=p.dy, dh_n=p.dh_n)
    y_alone, h_n_alone, grads_alone = _alone(backend, p, lengths)
    np.testing.assert_allclose(y, y_alone, **tolerance(np.float64, "output"))
    np.testing.assert_allclose(h_n, h_n_alone, **tolerance(np.float64, "output"))
    assert_grads_close(grads, grads_alone, np.float64, 8, 5)
    padded = np.arange(8)[:, None] >= lengths
    assert not y[padded].any() and not grads.x[padded].any()  # exactly zero, not just close
    np.testing.assert_array_equal(h_n[1], p.h0[1])  # a zero-length row keeps h0 ...
    np.testing.assert_array_equal(grads.h0[1], p.dh_n[1])  # ... and passes dh_n straight back


def _forward_and_backward(backend, p, x, dy, lengths, reverse):
    """Inference and training results of one padded call, through the backend module for
    reverse=True (what a bidirectional layer asks of it)."""
    if reverse:
        module = _backends.resolve(backend)[1]
        inference = module.forward(x, p.params, p.h0, lengths, reverse=True)
        y, h_n, tape = module.forward_train(x, p.params, p.h0, lengths, reverse=True)
        return inference, (y, h_n), module.backward(tape, dy, p.dh_n)
    inference = grukern.forward(x, p.params, p.h0, backend=backend, lengths=lengths)
    y, h_n, tape = grukern.forward_train(x, p.params, p.h0, backend=backend, lengths=lengths)
    return inference, (y, h_n), grukern.backward(tape, dy=dy, dh_n=p.dh_n)


@pytest.mark.parametrize("backend", grukern.backends())
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_whatever_the_padding_holds_changes_nothing(rng, backend, reverse, reset_after, dtype):
    """x and dy at padded steps are never read: NaN, ±inf or 1e30 there give the same bits as
    zeros (outputs, states, every gradient), no warning (pytest turns RuntimeWarnings into
    errors), and dL/dx exactly zero at the padded steps."""
    T = 6
    p = make_problem(rng, T, 4, 3, 5, dtype=dtype, reset_after=reset_after)
    lengths = np.array([6, 0, 2, 4])
    clean = _forward_and_backward(
        backend, p, fill_padding(p.x, lengths, 0), fill_padding(p.dy, lengths, 0), lengths, reverse
    )
    padded = np.arange(T)[:, None] >= lengths
    assert np.isfinite(clean[2].params.w_ih).all()
    for garbage in PADDING_GARBAGE:
        x, dy = fill_padding(p.x, lengths, garbage), fill_padding(p.dy, lengths, garbage)
        dirty = _forward_and_backward(backend, p, x, dy, lengths, reverse)
        assert_same_bits(dirty, clean, f"padding {garbage}")
        assert (dirty[2].x[padded] == 0).all()


def _flip_valid_steps(a, lengths):
    """Each sequence's first lengths[b] steps in reverse order, the padding left in place."""
    flipped = a.copy()
    for b, n in enumerate(lengths):
        flipped[:n, b] = a[:n, b][::-1]
    return flipped


@pytest.mark.parametrize("backend", grukern.backends())
@pytest.mark.parametrize("reset_after", [True, False])
def test_reverse_runs_each_valid_part_backwards(rng, backend, reset_after):
    """reverse=True (a bidirectional layer's second direction) against its meaning: the padded
    batch with each valid part flipped in time, run forward; y and dx flipped back."""
    p = make_problem(rng, 8, 5, 3, 6, reset_after=reset_after)
    lengths = np.array([8, 0, 3, 1, 5])
    module = _backends.resolve(backend)[1]
    y, h_n, tape = module.forward_train(p.x, p.params, p.h0, lengths, reverse=True)
    grads = module.backward(tape, p.dy, p.dh_n)
    flipped = dataclasses.replace(
        p, x=_flip_valid_steps(p.x, lengths), dy=_flip_valid_steps(p.dy, lengths)
    )
    y_f, h_n_f, tape_f = grukern.forward_train(
        flipped.x, p.params, p.h0, backend=backend, lengths=lengths
    )
    grads_f = grukern.backward(tape_f, dy=flipped.dy, dh_n=p.dh_n)
    np.testing.assert_allclose(
        y, _flip_valid_steps(y_f, lengths), **tolerance(np.float64, "output")
    )
    np.testing.assert_allclose(h_n, h_n_f, **tolerance(np.float64, "output"))
    grads_f = dataclasses.replace(grads_f, x=_flip_valid_steps(grads_f.x, lengths))
    assert_grads_close(grads, grads_f, np.float64, 8, 5)
    padded = np.arange(8)[:, None] >= lengths
    assert not y[padded].any() and not grads.x[padded].any()


@pytest.mark.parametrize("backend", grukern.backends())
def test_lengths_in_batch_first_layout(rng, backend):
    p = make_problem(rng, 6, 3, 2, 4)
    lengths = np.array([2, 6, 0], dtype=np.int32)
    y_tm, h_n_tm = grukern.forward(p.x, p.params, p.h0, backend=backend, lengths=lengths)
    y_bf, h_n_bf = grukern.forward(
        p.x.transpose(1, 0, 2), p.params, p.h0, backend=backend, lengths=lengths, batch_first=True
    )
    np.testing.assert_array_equal(y_bf, y_tm.transpose(1, 0, 2))
    np.testing.assert_array_equal(h_n_bf, h_n_tm)


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lengths_match_torch_packed_sequences(rng, dtype):
    """Unsorted lengths through pack_padded_sequence(enforce_sorted=False): y, h_n, all grads."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    T, B = 7, 5
    p = make_problem(rng, T, B, 4, 6, dtype=dtype)
    lengths = np.array([3, 7, 1, 5, 7])
    module = torch_gru(p.params)
    x_t = torch.tensor(p.x, requires_grad=True)
    h0_t = torch.tensor(p.h0[None], requires_grad=True)
    packed = pack_padded_sequence(x_t, torch.tensor(lengths), enforce_sorted=False)
    y_packed, h_n_t = module(packed, h0_t)
    y_t, _ = pad_packed_sequence(y_packed, total_length=T)
    loss = (y_t * torch.tensor(p.dy)).sum() + (h_n_t[0] * torch.tensor(p.dh_n)).sum()
    loss.backward()

    y, h_n, tape = grukern.forward_train(p.x, p.params, p.h0, backend="numpy", lengths=lengths)
    grads = grukern.backward(tape, dy=p.dy, dh_n=p.dh_n)
    np.testing.assert_allclose(y, y_t.detach().numpy(), **tolerance(dtype, "output"))
    np.testing.assert_allclose(h_n, h_n_t[0].detach().numpy(), **tolerance(dtype, "output"))
    torch_params = grukern.GRUParams.from_torch(
        {
            f"{k}_l0": getattr(module, f"{k}_l0").grad
            for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        }
    )
    expected = grukern.Gradients(x=x_t.grad.numpy(), h0=h0_t.grad[0].numpy(), params=torch_params)
    assert_grads_close(grads, expected, dtype, T, B)
