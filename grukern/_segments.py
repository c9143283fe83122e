"""Training with less memory: keep only the states, recompute the gates segment by segment.

forward_train(..., segment=k) keeps x and the states h (T+1, B, H) instead of the full tape.
backward then walks the sequence backwards k steps at a time: it re-runs the backend's
forward_train on a segment from its saved first state (recomputing r, z, n and hn), runs the
backend's backward on that segment with dL/dh carried in from the segment after it, and adds
the segment's weight gradients to the total. Any backend works, unchanged.

Memory between forward and backward: s·B·H·(T+1) bytes instead of s·B·H·(5T+1) (4T+1 for
reset_after=False); the peak inside backward adds one segment's tape, s·B·H·(5k+1).
Compute: one extra forward pass over the sequence.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from grukern import _device
from grukern.params import GRUParams
from grukern.tape import Gradients, Tape


def forward_train(
    module: ModuleType,
    x: np.ndarray,
    params: GRUParams,
    h0: np.ndarray,
    lengths: np.ndarray | None,
    segment: int,
) -> tuple[np.ndarray, np.ndarray, Tape]:
    """y (T, B, H), h_n (B, H) and a Tape holding x and h only (gates and hn are None)."""
    y, h_n = module.forward(x, params, h0, lengths)
    h = np.concatenate([h0[None], y])  # (T+1, B, H): the tape's own copy
    if lengths is not None:  # after its last step a row's state is held at h_n (y there is 0)
        padded = np.arange(1, x.shape[0] + 1)[:, None] > lengths[None, :]  # (T, B)
        padded = _device.module_of(h).asarray(padded)  # a mask where h lives (NumPy or CuPy)
        h[1:][padded] = np.broadcast_to(h_n, y.shape)[padded]
    tape = Tape(x=x, h=h, gates=None, hn=None, params=params, segment=segment, lengths=lengths)
    return y, h_n, tape


def backward(module: ModuleType, tape: Tape, dy: np.ndarray, dh_n: np.ndarray) -> Gradients:
    """BPTT over the segments of a states-only tape, last segment first."""
    T = tape.x.shape[0]
    dx = np.empty_like(tape.x)
    dh = dh_n  # dL/dh at the end of the current segment
    totals = [np.zeros_like(a) for a in tape.params.arrays()]
    for start in reversed(range(0, T, tape.segment)):
        stop = min(T, start + tape.segment)
        lengths = None if tape.lengths is None else np.clip(tape.lengths - start, 0, stop - start)
        _, _, recomputed = module.forward_train(
            tape.x[start:stop], tape.params, tape.h[start], lengths
        )
        grads = module.backward(recomputed, dy[start:stop], dh)
        dx[start:stop] = grads.x
        dh = grads.h0
        for total, part in zip(totals, grads.params.arrays(), strict=True):
            total += part
    return Gradients(x=dx, h0=dh, params=GRUParams(*totals, reset_after=tape.params.reset_after))
