"""One GRU step for a few batch rows, with as little around it as possible: the Numba kernel
behind grukern.GRUCell's small calls (a one-step call of the full forward is mostly overhead:
plan, schedule, weight forms, ring of states).

The products are dot products with the rows of w_ih and w_hh as stored (no transposed copy,
so the cell always reads the params' current values); the gate math is _numba_rows' cell.
"""

from __future__ import annotations

import numba
import numpy as np

from grukern._backends._numba_rows import JIT, cell, cell_n, cell_rz, dot


@numba.njit(**JIT)
def step(x, h, w_ih, b_ih, w_hh, b_hh, reset_after, out):
    """out[b] = h_t of row b, given x (B, I), h = h_{t-1} (B, H) and the weights. out may be h
    itself (each element of h is read before it is written)."""
    B, H = out.shape
    gi = np.empty(3 * H, dtype=out.dtype)  # W_ih x_t + b_ih
    gh = np.empty(3 * H, dtype=out.dtype)  # W_hh h_{t-1} (W_h[rz] only when reset_after=False)
    gates = np.empty(3 * H, dtype=out.dtype)  # [r | z | n], scratch
    hn = np.empty(H, dtype=out.dtype)  # W_hn h_{t-1} + b_hn, scratch (or r ⊙ h_{t-1})
    for b in range(B):
        for j in range(3 * H):
            gi[j] = dot(x[b], w_ih[j]) + b_ih[j]
        if reset_after:
            for j in range(3 * H):
                gh[j] = dot(h[b], w_hh[j])
            cell(gi, gh, b_hh, h[b], out[b], gates, hn)
        else:
            for j in range(2 * H):
                gh[j] = dot(h[b], w_hh[j])
            cell_rz(gi, gh, b_hh, h[b], gates, hn)  # hn holds r_t ⊙ h_{t-1}
            for j in range(H):
                gh[j] = dot(hn, w_hh[2 * H + j])  # W_hn (r_t ⊙ h_{t-1})
            cell_n(gi, gh[:H], b_hh, h[b], out[b], gates)
