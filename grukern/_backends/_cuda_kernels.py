"""The numba.cuda kernels of the CUDA backend (grukern/_backends/cuda.py launches them).

The math is numpy_ref's, line for line (docs/math.md); gate rows are stacked [r; z; n].
Shapes are time-major: gi (T, B, 3H) = x_t W_ihᵀ + b_ih for every step (one GEMM before the
loop), h (T+1, B, H) with h[0] = h0, lengths (B,) int64 (step t belongs to row b iff
t < lengths[b]; without lengths the backend passes T for every row).

Per-step tape slots: gates (Tg, B, 3H) and hn (Tg, B, H) have Tg = T in a training forward (kept
for backward) or Tg = 1 in inference (overwritten every step); step t writes slot min(t, Tg - 1).
A padded step computes its gates from the held state like any other (so the tape matches the
reference) but holds the state: h[t+1, b] = h[t, b].

"standard" kernels: one thread per (batch row b, hidden unit j), one launch per step between the
cuBLAS products. "persistent" kernel: the whole time loop in one cooperative launch.

Constants are made in the arrays' dtype (`h.dtype.type(1)`), so float32 kernels compute in
float32 throughout.
"""

from __future__ import annotations

import math

from numba import cuda, types

# ---------------------------------------------------------------------------------------------
# One hidden unit of one batch row: the cell math shared by the standard and persistent kernels.


@cuda.jit(device=True, cache=True)
def _sigmoid(a, one):
    """σ(a) = 1 / (1 + e^(-a)), evaluated with e^(-|a|) ≤ 1 so that no exp overflows."""
    e = math.exp(-abs(a))
    return one / (one + e) if a >= 0 else e / (one + e)


@cuda.jit(device=True, cache=True)
def _unit(t, b, j, gi, gh_r, gh_z, gh_n, b_hh, lengths, h, gates, hn):
    """reset_after=True, unit j of row b at step t, given gh = W_hh h_{t-1} (no bias).

    Writes h[t+1, b, j], [r | z | n] into gates and hn = W_hn h_{t-1} + b_hn."""
    H = h.shape[2]
    s = min(t, gates.shape[0] - 1)
    one = h.dtype.type(1)
    r = _sigmoid(gi[t, b, j] + gh_r + b_hh[j], one)  # r_t
    z = _sigmoid(gi[t, b, H + j] + gh_z + b_hh[H + j], one)  # z_t
    hn_j = gh_n + b_hh[2 * H + j]  # W_hn h_{t-1} + b_hn
    n = math.tanh(gi[t, b, 2 * H + j] + r * hn_j)  # n_t = tanh(gi_n + r_t ⊙ hn_t)
    h_prev = h[t, b, j]
    h[t + 1, b, j] = n + z * (h_prev - n) if t < lengths[b] else h_prev  # held when padded
    gates[s, b, j] = r
    gates[s, b, H + j] = z
    gates[s, b, 2 * H + j] = n
    hn[s, b, j] = hn_j


@cuda.jit(device=True, cache=True)
def _unit_rz(t, b, j, gi, gh_r, gh_z, b_hh, h, gates):
    """reset_after=False, first half: r_t and z_t into gates; returns r_t ⊙ h_{t-1}."""
    H = h.shape[2]
    s = min(t, gates.shape[0] - 1)
    one = h.dtype.type(1)
    r = _sigmoid(gi[t, b, j] + gh_r + b_hh[j], one)  # r_t
    gates[s, b, j] = r
    gates[s, b, H + j] = _sigmoid(gi[t, b, H + j] + gh_z + b_hh[H + j], one)  # z_t
    return r * h[t, b, j]


@cuda.jit(device=True, cache=True)
def _unit_n(t, b, j, gi, ghn, b_hh, lengths, h, gates):
    """reset_after=False, second half, given ghn = W_hn (r_t ⊙ h_{t-1}): n_t and h[t+1, b, j]."""
    H = h.shape[2]
    s = min(t, gates.shape[0] - 1)
    z = gates[s, b, H + j]
    n = math.tanh(gi[t, b, 2 * H + j] + ghn + b_hh[2 * H + j])  # n_t
    h_prev = h[t, b, j]
    h[t + 1, b, j] = n + z * (h_prev - n) if t < lengths[b] else h_prev  # held when padded
    gates[s, b, 2 * H + j] = n


# ---------------------------------------------------------------------------------------------
# "standard" forward: per step, cuBLAS makes gh, then one of these runs one thread per (b, j).


@cuda.jit(cache=True)
def step_forward(gi, gh, b_hh, lengths, h, gates, hn, t):
    """reset_after=True, step t. gh (B, 3H) = h_{t-1} W_hhᵀ."""
    B, H = h.shape[1], h.shape[2]
    k = cuda.grid(1)
    if k < B * H:
        b, j = k // H, k % H
        _unit(t, b, j, gi, gh[b, j], gh[b, H + j], gh[b, 2 * H + j], b_hh, lengths, h, gates, hn)


@cuda.jit(cache=True)
def step_forward_rz(gi, gh, b_hh, h, gates, rh, t):
    """reset_after=False, step t, first half. gh (B, 2H) = h_{t-1} W_h[rz]ᵀ; writes r_t, z_t
    and rh (B, H) = r_t ⊙ h_{t-1}, which cuBLAS then multiplies by W_hnᵀ."""
    B, H = h.shape[1], h.shape[2]
    k = cuda.grid(1)
    if k < B * H:
        b, j = k // H, k % H
        rh[b, j] = _unit_rz(t, b, j, gi, gh[b, j], gh[b, H + j], b_hh, h, gates)


@cuda.jit(cache=True)
def step_forward_n(gi, ghn, b_hh, lengths, h, gates, t):
    """reset_after=False, step t, second half. ghn (B, H) = (r_t ⊙ h_{t-1}) W_hnᵀ."""
    B, H = h.shape[1], h.shape[2]
    k = cuda.grid(1)
    if k < B * H:
        b, j = k // H, k % H
        _unit_n(t, b, j, gi, ghn[b, j], b_hh, lengths, h, gates)


# ---------------------------------------------------------------------------------------------
# "standard" backward (docs/math.md §4-6): per step t = T-1 .. 0 one thread per (b, j), between
# the cuBLAS products. dh (B, H) carries the direct part of dL/dh_t and dh_rec (B, H) the
# recurrent-product part; the kernel adds them (and dy_t) itself, so no extra launch sums them.
# A padded step passes dL/dh through unchanged, ignores dy_t and has zero gate gradients.


@cuda.jit(device=True, cache=True)
def _unit_backward(t, b, j, g, dy, gates, h, hn, lengths, da, dgh):
    """reset_after=True, unit j of row b at step t, given g = dL/dh_t from step t+1 (both parts).
    Writes da[t] = dL/d(gi_t) and dgh[t] = dL/d(gh_t) of the unit; returns the direct part of
    dL/dh_{t-1} (the recurrent part is dgh_t W_hh, summed over every unit)."""
    H = h.shape[2]
    if t >= lengths[b]:
        for q in range(3):
            da[t, b, q * H + j] = 0
            dgh[t, b, q * H + j] = 0
        return g
    g += dy[t, b, j]  # all of dL/dh_t
    r, z, n = gates[t, b, j], gates[t, b, H + j], gates[t, b, 2 * H + j]
    dn = g - g * z  # dh ⊙ (1 - z)
    an = dn - dn * n * n  # da_n = dn ⊙ (1 - n²)
    az = g * (h[t, b, j] - n) * (z - z * z)  # da_z = dh ⊙ (h_{t-1} - n) ⊙ z(1 - z)
    ar = an * hn[t, b, j] * (r - r * r)  # da_r = da_n ⊙ hn ⊙ r(1 - r)
    da[t, b, j] = ar
    da[t, b, H + j] = az
    da[t, b, 2 * H + j] = an
    dgh[t, b, j] = ar
    dgh[t, b, H + j] = az
    dgh[t, b, 2 * H + j] = an * r  # ∂a_n/∂hn_t = r_t
    return g * z  # the direct path h_{t-1} -> h_t


@cuda.jit(device=True, cache=True)
def _unit_backward_nz(t, b, j, g, dy, gates, h, lengths, da):
    """reset_after=False, first half, given g = dL/dh_t from step t+1: da_n and da_z of the unit
    into da[t]; returns all of dL/dh_t (dy_t added). da_n W_hn = dL/d(r_t ⊙ h_{t-1}) comes next."""
    H = h.shape[2]
    if t >= lengths[b]:
        da[t, b, H + j] = 0
        da[t, b, 2 * H + j] = 0
        return g
    g += dy[t, b, j]  # all of dL/dh_t
    z, n = gates[t, b, H + j], gates[t, b, 2 * H + j]
    dn = g - g * z  # dh ⊙ (1 - z)
    da[t, b, 2 * H + j] = dn - dn * n * n  # da_n = dn ⊙ (1 - n²)
    da[t, b, H + j] = g * (h[t, b, j] - n) * (z - z * z)  # da_z
    return g


@cuda.jit(device=True, cache=True)
def _unit_backward_r(t, b, j, drh, g, gates, h, lengths, da):
    """reset_after=False, second half, given drh = (da_n W_hn)[b, j] and g = dL/dh_t: da_r of the
    unit into da[t]; returns the direct paths of dL/dh_{t-1} (through z_t and r_t ⊙ h_{t-1}).
    The recurrent part, [da_r | da_z] W_h[rz], is summed over every unit."""
    if t >= lengths[b]:
        da[t, b, j] = 0
        return g  # passes through unchanged
    H = h.shape[2]
    r, z = gates[t, b, j], gates[t, b, H + j]
    da[t, b, j] = drh * h[t, b, j] * (r - r * r)  # da_r = (drh ⊙ h_{t-1}) ⊙ r(1 - r)
    return g * z + drh * r


@cuda.jit(cache=True)
def step_backward(dy, dh, dh_rec, gates, h, hn, lengths, da, dgh, t):
    """reset_after=True. Writes da[t] = dL/d(gi_t), dgh[t] = dL/d(gh_t) (T, B, 3H) and leaves in
    dh the direct part of dL/dh_{t-1}; cuBLAS then makes dh_rec = dgh_t W_hh."""
    B, H = dh.shape
    k = cuda.grid(1)
    if k < B * H:
        b, j = k // H, k % H
        g = dh[b, j] + dh_rec[b, j]  # dL/dh_t from step t+1
        dh[b, j] = _unit_backward(t, b, j, g, dy, gates, h, hn, lengths, da, dgh)


@cuda.jit(cache=True)
def step_backward_nz(dy, dh, dh_rec, gates, h, lengths, da, t):
    """reset_after=False, first half: da_n and da_z into da[t]; leaves dh = dL/dh_t. cuBLAS then
    makes drh = da_n W_hn = dL/d(r_t ⊙ h_{t-1})."""
    B, H = dh.shape
    k = cuda.grid(1)
    if k < B * H:
        b, j = k // H, k % H
        g = dh[b, j] + dh_rec[b, j]  # dL/dh_t from step t+1
        dh[b, j] = _unit_backward_nz(t, b, j, g, dy, gates, h, lengths, da)


@cuda.jit(cache=True)
def step_backward_r(drh, dh, gates, h, lengths, da, t):
    """reset_after=False, second half, given drh = da_n W_hn: da_r into da[t], and in dh the
    direct paths of dL/dh_{t-1}. cuBLAS then makes dh_rec = [da_r | da_z] W_h[rz]."""
    B, H = dh.shape
    k = cuda.grid(1)
    if k < B * H:
        b, j = k // H, k % H
        dh[b, j] = _unit_backward_r(t, b, j, drh[b, j], dh[b, j], gates, h, lengths, da)


# ---------------------------------------------------------------------------------------------
# "persistent" kernels: one cooperative launch runs every step. Block c owns the hidden units
# j0 = c·units .. j0 + U - 1 (U = units, fewer in the last block) of every batch row and keeps the
# W_hh elements its units need in shared memory for the whole sequence; the grid syncs after each
# step (twice for reset_after=False), so every block reads complete vectors of the step before
# from global memory. Dynamic shared memory, in h's dtype (`shared_size`):
#
#     w_s   (3·units, H + 1)        row g·units + u holds H elements of W_hh for gate g, unit u:
#                                   forward its row W_hh[g·H + j0 + u, :], backward its column
#                                   W_hh[g·H : (g+1)·H, j0 + u]; the +1 pad puts consecutive rows
#                                   in different banks
#     part  max(threads, 3·B·units) partial dot products
#     acc   (B, 3, units)           the block's recurrent products of this step


def shared_size(B: int, H: int, units: int, threads: int) -> int:
    """Elements of dynamic shared memory a persistent kernel needs (see above)."""
    products = 3 * B * units
    return 3 * units * (H + 1) + max(threads, products) + products


@cuda.jit(device=True, cache=True)
def _block(shared, B, H, units):
    """This block's first unit j0, its unit count U, w_s's row length ld, and w_s, part and acc
    (above), in that order in its dynamic shared memory `shared`."""
    j0 = cuda.blockIdx.x * units
    ld = H + 1
    w_end = 3 * units * ld
    part_end = w_end + max(cuda.blockDim.x, 3 * B * units)
    return j0, min(units, H - j0), ld, shared[:w_end], shared[w_end:part_end], shared[part_end:]


@cuda.jit(cache=True)
def persistent_forward(gi, w_hh, b_hh, lengths, h, gates, hn, rh, units):
    """The whole forward. reset_after=False iff rh is not empty: rh (B, H) then receives
    r_t ⊙ h_{t-1} of every unit before the W_hn products; hn is empty in that case."""
    T, B, H = gi.shape[0], h.shape[1], h.shape[2]
    reset_after = rh.shape[0] == 0
    grid = cuda.cg.this_grid()
    tid, threads = cuda.threadIdx.x, cuda.blockDim.x
    j0, U, ld, w_s, part, acc = _block(cuda.shared.array(0, dtype=h.dtype), B, H, units)
    for e in range(tid, 3 * U * H, threads):
        row, k = e // H, e % H
        g, u = row // U, row % U
        w_s[(g * units + u) * ld + k] = w_hh[g * H + j0 + u, k]
    cuda.syncthreads()
    for t in range(T):
        if reset_after:
            _block_products(w_s, ld, units, U, 0, 3, h[t], 0, part, acc)  # W_hh h_{t-1}
            for e in range(tid, B * U, threads):
                b, u = e // U, e % U
                a = (b * 3) * units + u
                g_r, g_z, g_n = acc[a], acc[a + units], acc[a + 2 * units]
                _unit(t, b, j0 + u, gi, g_r, g_z, g_n, b_hh, lengths, h, gates, hn)
        else:
            _block_products(w_s, ld, units, U, 0, 2, h[t], 0, part, acc)  # W_h[rz] h_{t-1}
            for e in range(tid, B * U, threads):
                b, u = e // U, e % U
                a = (b * 3) * units + u
                rh[b, j0 + u] = _unit_rz(t, b, j0 + u, gi, acc[a], acc[a + units], b_hh, h, gates)
            grid.sync()  # every unit's r_t ⊙ h_{t-1} is in rh
            _block_products(w_s, ld, units, U, 2, 3, rh, 0, part, acc)  # W_hn (r_t ⊙ h_{t-1})
            for e in range(tid, B * U, threads):
                b, u = e // U, e % U
                ghn = acc[(b * 3 + 2) * units + u]
                _unit_n(t, b, j0 + u, gi, ghn, b_hh, lengths, h, gates)
        grid.sync()  # h_t is complete before any block starts step t+1


@cuda.jit(cache=True)
def persistent_backward(dy, dh, gates, h, hn, lengths, w_hh, da, dgh, units):
    """The whole backward, t = T-1 .. 0: the gate gradients into da (and dgh), and in dh (B, H),
    which holds dL/dh_T on entry, dL/dh0 on exit. reset_after=False iff hn is empty; dgh is then
    empty too, and da plays its part (dL/d(gh_t) = dL/d(gi_t) for reset_after=False).

    reset_after=True, per step: dh_rec = dgh_{t+1} W_hh for the block's units, then the unit
    gradients (dgh_t), then a grid sync. reset_after=False, per step: dh_rec = [da_r | da_z]_{t+1}
    W_h[rz], then da_n and da_z, a grid sync, drh = da_n W_hn, then da_r, and a grid sync."""
    T, B, H = gates.shape[0], dh.shape[0], dh.shape[1]
    reset_after = hn.shape[0] != 0
    d_gh = dgh if reset_after else da  # not passed twice: the simulator copies each argument
    grid = cuda.cg.this_grid()
    tid, threads = cuda.threadIdx.x, cuda.blockDim.x
    j0, U, ld, w_s, part, acc = _block(cuda.shared.array(0, dtype=h.dtype), B, H, units)
    for e in range(tid, 3 * U * H, threads):
        g, k, u = e // (H * U), (e // U) % H, e % U  # consecutive threads: consecutive columns
        w_s[(g * units + u) * ld + k] = w_hh[g * H + k, j0 + u]
    cuda.syncthreads()
    zero = h.dtype.type(0)
    g_rec = 3 if reset_after else 2  # the gates whose gradients reach h_{t-1} through W_hh
    for t in range(T - 1, -1, -1):
        if t < T - 1:  # the recurrent part of dL/dh_t: (dgh_{t+1} W_hh)[:, j0:j0+U]
            _block_products(w_s, ld, units, U, 0, g_rec, d_gh[t + 1], H, part, acc)
        for e in range(tid, B * U, threads):
            b, u = e // U, e % U
            rec = zero
            if t < T - 1:
                for q in range(g_rec):
                    rec += acc[(b * 3 + q) * units + u]
            g = dh[b, j0 + u] + rec
            if reset_after:
                dh[b, j0 + u] = _unit_backward(t, b, j0 + u, g, dy, gates, h, hn, lengths, da, dgh)
            else:
                dh[b, j0 + u] = _unit_backward_nz(t, b, j0 + u, g, dy, gates, h, lengths, da)
        grid.sync()  # dgh_t (da_n of step t, for reset_after=False) is complete
        if not reset_after:
            _block_products(w_s, ld, units, U, 2, 3, da[t], H, part, acc)  # da_n W_hn
            for e in range(tid, B * U, threads):
                b, u = e // U, e % U
                drh = acc[(b * 3 + 2) * units + u]
                dh[b, j0 + u] = _unit_backward_r(t, b, j0 + u, drh, dh[b, j0 + u], gates, h,
                                                 lengths, da)  # fmt: skip
            grid.sync()  # da_r of step t is complete
    if T > 0:  # dL/dh0 = its direct part + dgh_0 W_hh
        _block_products(w_s, ld, units, U, 0, g_rec, d_gh[0], H, part, acc)
        for e in range(tid, B * U, threads):
            b, u = e // U, e % U
            for q in range(g_rec):
                dh[b, j0 + u] += acc[(b * 3 + q) * units + u]


@cuda.jit(device=True, cache=True)
def _block_products(w_s, ld, units, U, g0, g1, v, stride, part, acc):
    """acc[b, g, u] = Σ_k w_s[g·units + u, k] · v[b, g·stride + k], k < ld - 1, for gate blocks
    g0 ≤ g < g1, u < U and every row b of v: stride 0 multiplies every gate's rows by the same
    vector (forward, v (B, H)), stride H each by its own third of v (backward, v (B, 3H)).

    The block's threads share the n = B·(g1-g0)·U dot products; when there are fewer products
    than threads each is split into S slices of k whose partial sums meet in part. Consecutive
    threads take consecutive rows of w_s (different banks) and the same v element (a broadcast).
    """
    B, H = v.shape[0], ld - 1
    G = g1 - g0
    n = B * G * U
    tid, threads = cuda.threadIdx.x, cuda.blockDim.x
    S = max(1, threads // n)
    zero = v.dtype.type(0)
    for w in range(tid, n * S, threads):
        o, s = w % n, w // n
        u, g = o % U, g0 + (o // U) % G
        b = o // (U * G)
        row = (g * units + u) * ld
        offset = g * stride
        total = zero
        for k in range(s, H, S):
            total += w_s[row + k] * v[b, offset + k]
        part[s * n + o] = total
    cuda.syncthreads()
    for o in range(tid, n, threads):
        total = zero
        for s in range(S):
            total += part[s * n + o]
        u, g = o % U, g0 + (o // U) % G
        b = o // (U * G)
        acc[(b * 3 + g) * units + u] = total
    cuda.syncthreads()


def signatures(real) -> dict:
    """The argument types each kernel is launched with, for real = types.float32 or float64
    (the backend asks the persistent kernel's occupancy with them; a test compiles them all)."""
    a1, a2, a3 = (types.Array(real, ndim, "C") for ndim in (1, 2, 3))
    lengths, step = types.Array(types.int64, 1, "C"), types.int64
    return {
        "step_forward": (a3, a2, a1, lengths, a3, a3, a3, step),
        "step_forward_rz": (a3, a2, a1, a3, a3, a2, step),
        "step_forward_n": (a3, a2, a1, lengths, a3, a3, step),
        "step_backward": (a3, a2, a2, a3, a3, a3, lengths, a3, a3, step),
        "step_backward_nz": (a3, a2, a2, a3, a3, lengths, a3, step),
        "step_backward_r": (a2, a2, a3, a3, lengths, a3, step),
        "persistent_forward": (a3, a2, a1, lengths, a3, a3, a3, a2, types.int64),
        "persistent_backward": (a3, a2, a3, a3, a3, lengths, a2, a3, a3, types.int64),
    }
