"""Running a GRU backwards in time: what reverse=True means, and reversing by copying.

Every backend's forward and forward_train take reverse=True for the reverse direction of a
bidirectional layer. Step t of sequence b then reads input step lengths[b] - 1 - t (T - 1 - t
without lengths), so each sequence runs over its own valid part only, last step first, as torch's
PackedSequence does; y comes back in x's time order (y[t] belongs to x[t]) and is zero at padded
steps. The tape keeps the caller's x and reverse=True; backward takes dy in x's time order and
returns dx in it.

That is the same as running the forward on reverse_steps(x) and reverse_steps-ing y back. The
NumPy reference and the CUDA backend do exactly that, through the wrappers below; the Numba
backend reads and writes the reversed steps in place inside its kernels, without the copies.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from grukern import _device


def reverse_steps(a, lengths: np.ndarray | None):
    """Each sequence's valid part reversed in time, padded steps left in place   (T, B, k).

    out[t, b] = a[lengths[b] - 1 - t, b] for t < lengths[b], else a[t, b]. Its own inverse.
    a may be a NumPy or a CuPy array; the result is a new array where a lives.
    """
    if lengths is None:
        return a[::-1].copy(order="C")
    T, B, k = a.shape
    steps = np.arange(T)[:, None]  # (T, 1)
    source = np.where(steps < lengths, lengths - 1 - steps, steps)  # source step   (T, B)
    rows = _device.module_of(a).asarray((source * B + np.arange(B)).ravel())  # where a lives
    return a.reshape(T * B, k)[rows].reshape(T, B, k)


def forward(forward_in_order, x, params, h0, lengths):
    """reverse=True for a backend forward that runs in x's order: y (T, B, H), h_n (B, H)."""
    y, h_n = forward_in_order(reverse_steps(x, lengths), params, h0, lengths)
    return reverse_steps(y, lengths), h_n


def forward_train(forward_train_in_order, x, params, h0, lengths):
    """reverse=True for a backend forward_train that runs in x's order: y, h_n and a tape that
    keeps the caller's x and reverse=True."""
    y, h_n, tape = forward_train_in_order(reverse_steps(x, lengths), params, h0, lengths)
    return reverse_steps(y, lengths), h_n, dataclasses.replace(tape, x=x, reverse=True)


def backward(backward_in_order, tape, dy, dh_n):
    """The backward of a tape with reverse=True, by a backend backward that runs in x's order."""
    in_order = dataclasses.replace(tape, x=reverse_steps(tape.x, tape.lengths), reverse=False)
    grads = backward_in_order(in_order, reverse_steps(dy, tape.lengths), dh_n)
    return dataclasses.replace(grads, x=reverse_steps(grads.x, tape.lengths))
