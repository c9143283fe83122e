"""One batch row of one step of the Numba kernels (the fused gate math and its gradients), and
the small helpers of the compiled loops (_numba_loops.py). Shapes are time-major.

Taking 1-d rows keeps the pointers LLVM must check for aliasing few, so the gate loops
vectorise (over 2-d arrays they do not).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from grukern._backends import _numba_dots, _numba_matmul
from grukern._backends._numba_math import sigmoid, tanh

JIT = {"cache": True, "error_model": "numpy", "fastmath": {"contract"}, "nogil": True}

# The gate passes of the forward are inlined into their loops (Numba's inline="always"): called,
# with their seven row views as arguments, they cost more than their arithmetic at small sizes
# (G2 forward: 0.23 -> 0.32 ms). Inlined, their rows must be `opaque`.


@intrinsic
def opaque(typingctx, a):
    """a, whose data pointer LLVM's loop analysis cannot follow (an empty inline assembly).

    Inlined into a loop over rows, a gate pass's vector loop needs runtime checks that its
    rows do not overlap; LLVM hoists such checks out of the loop over rows when it can follow
    the rows' pointers, and over all rows the three gate groups of `gates` (or h_{t-1} and h_t
    in one array) do overlap, so the vector loop was never taken. Hidden pointers keep the
    checks per row, where they pass."""
    if not isinstance(a, types.Array):
        return None

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        pointer = array.data
        hide = ir.FunctionType(pointer.type, [pointer.type])
        array.data = builder.asm(hide, "", "=r,0", [pointer], side_effect=False)
        return array._getvalue()

    return a(a), codegen


@numba.njit(inline="always", **JIT)
def _gate_values(gi, gh, b_hh, H, j):
    """reset_after=True: unit j's r_t, z_t, n_t and W_hn h_{t-1} + b_hn (cell's arithmetic)."""
    r = sigmoid(gi[j] + gh[j] + b_hh[j])  # r_t
    z = sigmoid(gi[H + j] + gh[H + j] + b_hh[H + j])  # z_t
    hn_j = gh[2 * H + j] + b_hh[2 * H + j]  # W_hn h_{t-1} + b_hn
    n = tanh(gi[2 * H + j] + r * hn_j)  # n_t = tanh(gi_n + r_t ⊙ hn_t)
    return r, z, n, hn_j


@numba.njit(inline="always", **JIT)
def cell(gi, gh, b_hh, h_prev, h, gates, hn):
    """reset_after=True. gi (3H) = W_ih x_t + b_ih, gh (3H) = W_hh h_{t-1}; writes h_t (H),
    gates = [r_t | z_t | n_t] (3H) and hn = W_hn h_{t-1} + b_hn (H)."""
    gi, gh, h_prev, h = opaque(gi), opaque(gh), opaque(h_prev), opaque(h)
    gates, hn = opaque(gates), opaque(hn)
    H = h.shape[0]
    for j in range(H):
        r, z, n, hn_j = _gate_values(gi, gh, b_hh, H, j)
        h[j] = n + z * (h_prev[j] - n)  # h_t = (1 - z_t) n_t + z_t h_{t-1}
        gates[j] = r
        gates[H + j] = z
        gates[2 * H + j] = n
        hn[j] = hn_j


@numba.njit(inline="always", **JIT)
def cell_h(gi, gh, b_hh, h_prev, h):
    """cell's h_t alone (the same arithmetic, so the same bits), for a forward that keeps no
    tape: the stores of the gates and hn were 40% of the gate pass at G3."""
    gi, gh, h_prev, h = opaque(gi), opaque(gh), opaque(h_prev), opaque(h)
    H = h.shape[0]
    for j in range(H):
        _, z, n, _ = _gate_values(gi, gh, b_hh, H, j)
        h[j] = n + z * (h_prev[j] - n)  # h_t = (1 - z_t) n_t + z_t h_{t-1}


@numba.njit(inline="always", **JIT)
def cell_rz(gi, gh, b_hh, h_prev, gates, rh):
    """reset_after=False, first half. gh (2H) = W_h[rz] h_{t-1}; writes r_t, z_t into gates
    and rh = r_t ⊙ h_{t-1}."""
    gi, gh, h_prev, gates, rh = opaque(gi), opaque(gh), opaque(h_prev), opaque(gates), opaque(rh)
    H = rh.shape[0]
    for j in range(H):
        r = sigmoid(gi[j] + gh[j] + b_hh[j])  # r_t
        gates[j] = r
        gates[H + j] = sigmoid(gi[H + j] + gh[H + j] + b_hh[H + j])  # z_t
        rh[j] = r * h_prev[j]


@numba.njit(inline="always", **JIT)
def cell_n(gi, ghn, b_hh, h_prev, h, gates):
    """reset_after=False, second half. ghn (H) = W_hn (r_t ⊙ h_{t-1}); writes n_t and h_t."""
    gi, ghn, h_prev, h, gates = opaque(gi), opaque(ghn), opaque(h_prev), opaque(h), opaque(gates)
    H = h.shape[0]
    for j in range(H):
        z = gates[H + j]
        n = tanh(gi[2 * H + j] + ghn[j] + b_hh[2 * H + j])  # n_t
        h[j] = n + z * (h_prev[j] - n)  # h_t = (1 - z_t) n_t + z_t h_{t-1}
        gates[2 * H + j] = n


@numba.njit(**JIT)
def cell_grads(dh, dy, gates, h_prev, hn, da, dgh):
    """reset_after=True. dh (H) = dL/dh_t from step t+1; adds dy_t and leaves in dh the direct
    part of dL/dh_{t-1}; writes da = dL/d(gi_t) and dgh = dL/d(gh_t) (3H)."""
    H = dh.shape[0]
    for j in range(H):
        g = dh[j] + dy[j]  # all of dL/dh_t
        r = gates[j]
        z = gates[H + j]
        n = gates[2 * H + j]
        dn = g - g * z  # dh ⊙ (1 - z)
        an = dn - dn * n * n  # da_n = dn ⊙ (1 - n²)
        az = g * (h_prev[j] - n) * (z - z * z)  # da_z = dh ⊙ (h_{t-1} - n) ⊙ z(1 - z)
        ar = an * hn[j] * (r - r * r)  # da_r = da_n ⊙ hn ⊙ r(1 - r)
        da[j] = ar
        da[H + j] = az
        da[2 * H + j] = an
        dgh[j] = ar
        dgh[H + j] = az
        dgh[2 * H + j] = an * r  # ∂a_n/∂hn_t = r_t
        dh[j] = g * z  # the direct path h_{t-1} -> h_t


@numba.njit(**JIT)
def cell_grads_nz(dh, dy, gates, h_prev, da_n, da_rz):
    """reset_after=False, first half: da_n and da_z (into da_rz[H:]); leaves dh = dL/dh_t."""
    H = dh.shape[0]
    for j in range(H):
        g = dh[j] + dy[j]  # all of dL/dh_t
        z = gates[H + j]
        n = gates[2 * H + j]
        dn = g - g * z  # dh ⊙ (1 - z)
        da_n[j] = dn - dn * n * n  # da_n = dn ⊙ (1 - n²)
        da_rz[H + j] = g * (h_prev[j] - n) * (z - z * z)  # da_z
        dh[j] = g


@numba.njit(**JIT)
def cell_grads_r(drh, gates, h_prev, da_n, da_rz, dh, da, rh_prev):
    """reset_after=False, second half, given drh = da_n W_hn: da_r, the full da row, r ⊙ h_{t-1},
    and in dh the direct paths of dL/dh_{t-1} (through z_t and through r_t ⊙ h_{t-1})."""
    H = dh.shape[0]
    for j in range(H):
        r = gates[j]
        z = gates[H + j]
        ar = drh[j] * h_prev[j] * (r - r * r)  # da_r = (drh ⊙ h_{t-1}) ⊙ r(1 - r)
        da_rz[j] = ar
        da[j] = ar
        da[H + j] = da_rz[H + j]
        da[2 * H + j] = da_n[j]
        rh_prev[j] = r * h_prev[j]
        dh[j] = dh[j] * z + drh[j] * r


@numba.njit(**JIT)
def project(xc, w_ih, panels_ih, b_ih, gi):
    """gi = xc W_ihᵀ + b_ih for the rows of xc (m, I): by _numba_matmul where panels_ih, the
    panels of W_ihᵀ, are made (times_transposed); else one BLAS product for several rows, dot
    products with the rows of W_ih for a single row (a BLAS call costs more than a small row's
    products)."""
    if panels_ih.shape[0] > 0:
        times_transposed(xc, w_ih, panels_ih, gi, False)
        add_row_vector(gi, b_ih)
    elif xc.shape[0] == 1:
        for j in range(w_ih.shape[0]):
            gi[0, j] = _numba_dots.dot(xc[0], w_ih[j]) + b_ih[j]
    else:
        gemm_nt(xc, w_ih, gi)
        add_row_vector(gi, b_ih)


@numba.njit(**JIT)
def gemm_nt(a, w, out):
    """out = a @ wᵀ by BLAS."""
    np.dot(a, w.T, out)


@numba.njit(**JIT)
def gemm_tn(a, b, out):
    """out = aᵀ @ b by BLAS."""
    np.dot(a.T, b, out)


@numba.njit(**JIT)
def add_row_vector(a, v):
    """a[k] += v for every row k."""
    for k in range(a.shape[0]):
        row = a[k]
        for j in range(v.shape[0]):
            row[j] += v[j]


@numba.njit(**JIT)
def add(a, b):
    """a += b for 2-d arrays of one shape."""
    for i in range(a.shape[0]):
        row_a, row_b = a[i], b[i]
        for j in range(row_a.shape[0]):
            row_a[j] += row_b[j]


@numba.njit(**JIT)
def add_row(a, b):
    """a += b for 1-d arrays of one length."""
    for j in range(a.shape[0]):
        a[j] += b[j]


@numba.njit(**JIT)
def take_rows(a, rows, out):
    """out[i] = a[rows[i]] for a (B, k)."""
    for i in range(rows.shape[0]):
        out[i] = a[rows[i]]
    return out


@numba.njit(**JIT)
def step_offsets(lengths, rows, t0, first):
    """Row offsets of steps t0 .. t0 + len(first) - 2 in a buffer holding, per step, only the
    rows still running: first[s + 1] - first[s] = #{i : lengths[rows[i]] > t0 + s}. rows are in
    descending length, so those are the first ones. Returns the total, first[-1]."""
    active = rows.shape[0]
    first[0] = 0
    for s in range(first.shape[0] - 1):
        while active > 0 and lengths[rows[active - 1]] <= t0 + s:
            active -= 1
        first[s + 1] = first[s] + active
    return first[first.shape[0] - 1]


@numba.njit(inline="always", **JIT)
def at(a, t, b, batch_major):
    """Row (t, b) of a sequence array: a[t, b] of a time-major a (T, B, ...), or a[b, t] of a
    batch-major a (B, T, ...) (the caller's memory order, read and written in place)."""
    return a[b, t] if batch_major else a[t, b]


@numba.njit(inline="always", **JIT)
def steps_and_rows(a, batch_major):
    """(T, B) of a sequence array in either memory order (at)."""
    return (a.shape[1], a.shape[0]) if batch_major else (a.shape[0], a.shape[1])


@numba.njit(**JIT)
def gather_steps(a, t0, rows, first, out, lengths, reverse, batch_major):
    """out[first[s] + i] = row (t0 + s, rows[i]) of a (at) for the running rows of each step
    (_step_offsets), or with reverse the step source_step(t0 + s, ...) of a."""
    for s in range(first.shape[0] - 1):
        for i in range(first[s + 1] - first[s]):
            b = rows[i]
            row = at(a, source_step(t0 + s, lengths[b], reverse), b, batch_major)
            copy_row(row, out[first[s] + i])
    return out


@numba.njit(inline="always", **JIT)
def copy_row(source, target):
    """target[:] = source for 1-d rows, as a loop LLVM vectorises: Numba's slice assignment
    (its generic array copy) took 0.4 µs per row of 512 float32, a third of a G4 forward's
    time outside the products and gates."""
    source, target = opaque(source), opaque(target)
    for j in range(target.shape[0]):
        target[j] = source[j]


@numba.njit(inline="always", **JIT)
def write_output(h_t, y_t):
    """y_t[:] = h_t (rows), unless y_t is h_t itself: a forward that keeps every state writes
    h_t into y's memory (numba_cpu.forward)."""
    if y_t.ctypes.data != h_t.ctypes.data:
        copy_row(h_t, y_t)


@numba.njit(**JIT)
def gather_block(x, batch_major, h, first, t0, rows, lengths, reverse, offsets, xc, h_prev):
    """The rows of a block of steps t0 .. t0 + len(offsets) - 2 for the backward's sums: fills
    offsets (each step's first row in the block's buffers, from first, the offsets of the whole
    sequence), and x_t into xc and h_{t-1} into h_prev for the running rows; returns their
    count."""
    for s in range(offsets.shape[0]):
        offsets[s] = first[t0 + s] - first[t0]
    n = offsets[offsets.shape[0] - 1]
    if n > 0:
        gather_steps(x, t0, rows, offsets, xc[:n], lengths, reverse, batch_major)  # x_t
        gather_steps(h, t0, rows, offsets, h_prev[:n], lengths, False, False)  # h_{t-1}
    return n


@numba.njit(**JIT)
def source_step(t, length, reverse):
    """The step of x (and y, dy, dx) that step t of a sequence of `length` steps works on: t,
    or with reverse length - 1 - t (the sequence's valid part runs last step first)."""
    return length - 1 - t if reverse else t


@numba.njit(**JIT)
def chunk(B, n_chunks, c):
    """(first slot, row count) of chunk c: B rows split as evenly as possible."""
    q, r = B // n_chunks, B % n_chunks
    return c * q + min(c, r), q + (1 if c < r else 0)


@numba.njit(**JIT)
def add_column_sums(a, out):
    """out[j] += Σ_k a[k, j] (rows added in order)."""
    for k in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[j] += a[k, j]


@numba.njit(**JIT)
def times_transposed(a, w, panels, out, backwards):
    """out = a @ wᵀ for a (m, p) and w (n, p); panels are _numba_matmul.pack(w, True) or empty,
    read last first if backwards (_numba_matmul.matmul: the loops alternate step by step).

    Several rows take _numba_matmul.matmul. A single row takes _numba_matmul.row_matmul where
    the panels are made (the same sums, so the same bits, four panels at a time), else dot
    products with the rows of w (_numba_dots.dots).
    """
    if a.shape[0] > 1:
        _numba_matmul.matmul(a, panels, out, backwards)
    elif panels.shape[0] > 0:
        _numba_matmul.row_matmul(a, panels, out, backwards)
    else:
        _numba_dots.dots(a, w, 0, out.shape[1], out, 0)


@numba.njit(**JIT)
def times(a, w, panels, out, backwards):
    """out = a @ w for a (m, p) and w (p, n); panels are _numba_matmul.pack(w, False) or
    empty (read last first if backwards, as in times_transposed). Several rows take
    _numba_matmul.matmul, a single row _row_times."""
    if a.shape[0] > 1:
        _numba_matmul.matmul(a, panels, out, backwards)
    else:
        row_times(a[0], w, out[0])


@numba.njit(**JIT)
def row_times(u, w, out):
    """out = u @ w for one row u (p,) and w (p, n), by axpy sweeps over the rows of w (no
    reductions, which dominate short rows)."""
    out[:] = 0
    for q in range(u.shape[0]):
        u_q = u[q]
        for j in range(out.shape[0]):
            out[j] += u_q * w[q, j]


# The unit split (_numba_loops.forward_units_loop): a part owns hidden units u0 .. u0 + n - 1,
# and keeps its gates in a part-local layout [r | z | n] of n units each (gate g of unit u0 + j
# at g·n + j), so the row functions above run on it with H = n.


@numba.njit(**JIT)
def unit_times(a, w, H, u0, n, n_gates, out):
    """out[i, g·n + j] = a[i] · w[g·H + u0 + j] for the first n_gates gates, a (m, p) and w's
    gate-major rows (n_gates·H, p): the part's share of a @ wᵀ (_numba_dots)."""
    for g in range(n_gates):
        _numba_dots.dots(a, w, g * H + u0, n, out, g * n)


@numba.njit(**JIT)
def project_units(xc, w_ih, b_ih, u0, n, scratch, gi):
    """gi[k, g·n + j] = W_ih[g·H + u0 + j] · xc[k] + b_ih[g·H + u0 + j], the part's share of
    the input projection of xc (k, I), by BLAS (scratch: n_rows·n floats, contiguous)."""
    H = w_ih.shape[0] // 3
    product = scratch[: xc.shape[0] * n].reshape((xc.shape[0], n))
    for g in range(3):
        rows = slice(g * H + u0, g * H + u0 + n)
        gemm_nt(xc, w_ih[rows], product)
        bias = b_ih[rows]
        for k in range(xc.shape[0]):
            out = gi[k, g * n : (g + 1) * n]
            for j in range(n):
                out[j] = product[k, j] + bias[j]


@numba.njit(**JIT)
def gather_units(v, H, u0, n, out):
    """out[g·n + j] = v[g·H + u0 + j] for the three gates: a row of 3H into the part's layout."""
    for g in range(3):
        for j in range(n):
            out[g * n + j] = v[g * H + u0 + j]


@numba.njit(**JIT)
def scatter_units(part, H, u0, n, out):
    """out[g·H + u0 + j] = part[g·n + j]: gather_units the other way."""
    for g in range(3):
        for j in range(n):
            out[g * H + u0 + j] = part[g * n + j]
