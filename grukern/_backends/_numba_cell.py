"""One GRU step for a few batch rows, with as little around it as possible: the Numba kernel
behind grukern.GRUCell's small calls and the numba backend's one-step forward of one row (a
one-step call of the full forward is mostly overhead: plan, schedule, weight forms, ring of
states, a dozen arrays to pass).

W_ih x_t is the forward loop's projection (_numba_rows.project), W_hh h_{t-1} dot products with
the rows of w_hh as stored (no transposed copy, so the cell always reads the params' current
values), and the gate math is _numba_rows' cell_h: for one row, the arithmetic of the forward loop
itself, so the results are the same bits.
"""

from __future__ import annotations

import numba
import numpy as np

from grukern import _threads
from grukern._backends._borrow import borrowed, keep_alive
from grukern._backends._numba_dots import dot
from grukern._backends._numba_rows import JIT, cell_h, cell_n, cell_rz, project

# Rows up to which a step takes this kernel rather than the forward's tiled product, which
# shares the weights better between more rows.
LEAN_ROWS = 4


def run(x, h, params, out) -> None:
    """step() on x (B, I), h (B, H) into out (B, H)."""
    B, I = x.shape
    args = (x, h, params.w_ih, params.b_ih, params.w_hh, params.b_hh, params.reset_after, out)
    _call(step, args, B * 3 * out.shape[1] * max(I, out.shape[1]))


def run_forward(x, h0, params, y, h_n) -> None:
    """The forward of one step: forward_step() on x (1, B, I), h0 (B, H) into y (1, B, H) and
    h_n (B, H) (one compiled call: each array view made in Python costs as much as a row's
    gate math)."""
    _, B, I = x.shape
    H = h_n.shape[1]
    args = (x, h0, params.w_ih, params.b_ih, params.w_hh, params.b_hh, params.reset_after, y, h_n)
    _call(forward_step, args, B * 3 * H * max(I, H))


def _call(kernel, args: tuple, size: int) -> None:
    """kernel(*args), whose products have `size` multiply-adds at most. A tiny step (below
    OpenBLAS's threading threshold, as in numba_cpu's plan) runs on the caller's thread outside
    the thread budget, whose admission would cost a fifth of it; a larger one is admitted, with
    BLAS held at one thread."""
    if size <= 4 * 65536:
        kernel(*args)
    else:
        _threads.run(1, True, kernel, *args)


@numba.njit(**JIT)
def forward_step(x, h0, w_ih, b_ih, w_hh, b_hh, reset_after, y, h_n):
    """y[0] = h_n = h_1 given x (1, B, I) and h0 (B, H)."""
    step(x[0], h0, w_ih, b_ih, w_hh, b_hh, reset_after, h_n)
    y[0] = h_n


@numba.njit(**JIT)
def step(x, h, w_ih, b_ih, w_hh, b_hh, reset_after, out):
    """out[b] = h_t of row b, given x (B, I), h = h_{t-1} (B, H) and the weights. out may be h
    itself (each element of h is read before it is written)."""
    x, h, w_ih, b_ih, w_hh, b_hh, out = borrowed((x, h, w_ih, b_ih, w_hh, b_hh, out))
    B, H = out.shape
    buffers = (
        np.empty((B, 3 * H), dtype=out.dtype),  # gi_rows: W_ih x_t + b_ih, every row
        np.empty(3 * H, dtype=out.dtype),  # gh: W_hh h_{t-1} (W_h[rz] only, reset_after=False)
        np.empty(3 * H, dtype=out.dtype),  # gates: [r | z | n], scratch (reset_after=False)
        np.empty(H, dtype=out.dtype),  # hn: r_t ⊙ h_{t-1}, scratch (reset_after=False)
    )
    gi_rows, gh, gates, hn = borrowed(buffers)
    project(x, w_ih, np.empty((0, 0, 1), dtype=w_ih.dtype), b_ih, gi_rows)  # by BLAS
    for b in range(B):
        gi = gi_rows[b]
        if reset_after:
            for j in range(3 * H):
                gh[j] = dot(h[b], w_hh[j])
            cell_h(gi, gh, b_hh, h[b], out[b])
        else:
            for j in range(2 * H):
                gh[j] = dot(h[b], w_hh[j])
            cell_rz(gi, gh, b_hh, h[b], gates, hn)  # hn holds r_t ⊙ h_{t-1}
            for j in range(H):
                gh[j] = dot(hn, w_hh[2 * H + j])  # W_hn (r_t ⊙ h_{t-1})
            cell_n(gi, gh[:H], b_hh, h[b], out[b], gates)
    keep_alive(buffers)
