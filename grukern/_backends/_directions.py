"""What a bidirectional layer asks of a backend beyond a plain run: reverse=True and slots.

reverse=True (forward, forward_train) runs the reverse direction. Step t of sequence b then
reads input step lengths[b] - 1 - t (T - 1 - t without lengths), so each sequence runs over its
own valid part only, last step first, as torch's PackedSequence does; y comes back in x's time
order (y[t] belongs to x[t]) and is zero at padded steps. The tape keeps the caller's x and
reverse=True; backward takes dy in x's time order and returns dx in it. That is the same as
running the forward on reverse_steps(x) and reverse_steps-ing y back.

Slots: a layer's y is (T, B, D·H), the directions side by side; seen as (T, B, D, H), direction
d owns y[:, :, d]. Given out=Slot(y, d), forward and forward_train write their y there and
return that view; backward takes dy as Slot(dy, d). This spares a (T, B, H) array per direction
and the copies that join or split them.

The Numba kernels do both in place. The NumPy reference and the CUDA backend implement one
direction in time order only (_contract.PlainBackend); ByCopies adds both to them by copies.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from grukern import _device


@dataclasses.dataclass(frozen=True)
class Slot:
    """Direction `index` of a C-contiguous (T, B, D, H) array (NumPy or CuPy)."""

    array: np.ndarray
    index: int

    def view(self):
        """The slot as a (T, B, H) view (strided when D > 1)."""
        return self.array[:, :, self.index]


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


def write(y, out: Slot | None):
    """What a forward returns: y, or y copied into the slot `out` and the slot's view."""
    if out is None:
        return y
    out.array[:, :, out.index] = y
    return out.view()


def read(dy):
    """dy as a C-contiguous (T, B, H) array: dy itself, or a Slot's columns (copied if D > 1)."""
    return _c_order(dy.view() if isinstance(dy, Slot) else dy)


def _c_order(a):
    """a itself if C-contiguous, else a C-contiguous copy where it lives: the full backend's
    callers may pass views (a batch_first caller's arrays, in place)."""
    return a if a.flags.c_contiguous else a.copy()


class ByCopies:
    """A plain backend module (_contract.PlainBackend) as a full one (_contract.Backend):
    reverse and out by copies around its forward and forward_train, a Slot dy and a reversed
    tape by copies around its backward."""

    def __init__(self, plain):
        self.plain = plain

    def __repr__(self) -> str:
        return f"ByCopies({self.plain.__name__})"

    def forward(self, x, params, h0, lengths=None, reverse: bool = False, out: Slot | None = None):
        x = _c_order(x)
        if reverse:
            y, h_n = self.plain.forward(reverse_steps(x, lengths), params, h0, lengths)
            y = reverse_steps(y, lengths)
        else:
            y, h_n = self.plain.forward(x, params, h0, lengths)
        return write(y, out), h_n

    def forward_train(
        self, x, params, h0, lengths=None, reverse: bool = False, out: Slot | None = None
    ):
        """y, h_n and a tape that keeps the caller's x and `reverse`."""
        x_run = reverse_steps(x, lengths) if reverse else _c_order(x)
        y, h_n, tape = self.plain.forward_train(x_run, params, h0, lengths)
        if reverse:
            y = reverse_steps(y, lengths)
            tape = dataclasses.replace(tape, x=x, reverse=True)
        return write(y, out), h_n, tape

    def backward(self, tape, dy, dh_n):
        """A reversed tape holds the caller's x, not the reversed copy the forward ran on: that
        copy is made again here, which costs a gather instead of keeping T·B·I more values
        between forward and backward."""
        dy = read(dy)
        if not tape.reverse:  # the tape's x may be a view (a batch_first layer's input)
            return self.plain.backward(dataclasses.replace(tape, x=_c_order(tape.x)), dy, dh_n)
        in_order = dataclasses.replace(tape, x=reverse_steps(tape.x, tape.lengths), reverse=False)
        grads = self.plain.backward(in_order, reverse_steps(dy, tape.lengths), dh_n)
        return dataclasses.replace(grads, x=reverse_steps(grads.x, tape.lengths))
