"""The compiled loops of the Numba backend (plain functions here; _numba_builds compiles a serial
and a parallel build of each), and the named tuples that carry their arguments.

Shapes are time-major, except that the sequence arrays (x, y, dy, dx) may be batch-major in
memory, as the caller laid them out: (B, T, ...) arrays, read and written in place through
_numba_rows.at (the schedule's batch_major says which). The batch is split into n_chunks chunks
of rows, one `prange` iteration each; chunk c holds the rows order[b0 : b0 + m]
(_numba_rows.chunk), and its private buffers are indexed by row k = t·m + i for its i-th row at
step t. forward_units_loop splits the hidden units instead (numba_cpu._Plan says when).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from grukern._backends._borrow import borrowed, keep_alive
from grukern._backends._numba_matmul import TILE_ROWS, pack_units
from grukern._backends._numba_rows import (
    add,
    add_column_sums,
    add_row,
    at,
    cell,
    cell_grads,
    cell_grads_nz,
    cell_grads_r,
    cell_h,
    cell_n,
    cell_rz,
    chunk,
    copy_row,
    gather_block,
    gather_steps,
    gather_units,
    gemm_tn,
    project,
    project_units,
    scatter_units,
    source_step,
    step_offsets,
    steps_and_rows,
    take_rows,
    times,
    times_transposed,
    unit_times,
    write_output,
)

# The variant a build computes: _numba_builds compiles each loop with this global fixed to
# True or False, so that a build holds one variant's code only (and compiles in less time).
RESET_AFTER = True

# The forward projects the input of a block of steps per GEMM, and the backward sums the weight
# gradients of a block of steps per GEMM: blocks of about this many rows. A projection by
# _numba_matmul (panels_ih) packs nothing per block, and takes blocks of PROJECTION_ROWS, which
# leave its output in the L2 cache for the steps that read it (G4 forward, 2 threads: 44.3 ms
# with 512 rows, 43.8 with 128, 43.7 with 64; BLAS, 512 rows: 45.5).
BLOCK_ROWS = 512
PROJECTION_ROWS = 128


# The loops take their arguments in groups, each a plain tuple (Numba types a plain tuple
# argument several times faster than a named one, and a one-step call is mostly such
# overheads). The fields, in order:
#
# weights   (w_ih (3H, I), panels_ih, b_ih (3H,), b_hh (3H,), w_a, panels_a, w_n, panels_n):
#           panels_ih are the panels of W_ihᵀ for the batch split's forward projection, empty
#           where the projection takes BLAS (_numba_rows.project). W_a and W_n are the
#           recurrent weights of the per-step products,
#               reset_after=True:  W_a = W_hh (3H, H), W_n unused (empty; one product per step);
#               reset_after=False: W_a = W_h[rz] (2H, H), W_n = W_hn (H, H).
#           The forward multiplies h_{t-1} by W_aᵀ and r_t ⊙ h_{t-1} by W_nᵀ; the backward
#           multiplies dgh_t by W_a and da_n by W_n. `panels` are the _numba_matmul panels (of
#           wᵀ in the forward, of w in the backward), empty when the call does not use them
#           (numba_cpu._weights); the unit split's forward takes a buffer for panels_a that it
#           fills itself, one set of panels per part (forward_units_loop).
# schedule  (lengths, order, in_place, reverse, n_chunks, batch_major): row b runs steps
#           0..lengths[b]-1 (lengths (B,) int64); order (B,) holds the batch rows in the order
#           the chunks take them; in_place: order is the batch order, so the products read the
#           states in place; reverse: step t of row b reads x (and dy) at lengths[b] - 1 - t
#           and writes y (and dx) there; batch_major: x, y, dy and dx are (B, T, ...) arrays,
#           not (T, B, ...) (numba_cpu._schedule).
# out       (h, y, direction, gates, hn), what the forward writes: h (S, B, H) holds h_t in
#           h[t % S], in step order, h[0] = h0 (S = T + 1 keeps every state for the tape, S = 2
#           the last two); y (T, B, D, H) is written at y[:, :, direction] in x's order
#           (_directions.Slot); gates (T, B, 3H) and hn (T, B, H) are kept for backward, or have
#           a first axis of 1 and are overwritten every step (inference).
# upstream  (dy, direction, dh_n): dL/dy (T, B, D, H), read at dy[:, :, direction] in x's
#           order, and dL/dh_n (B, H).
# tape      (x, h, gates, hn): what the forward saved; hn is empty when reset_after=False.
# grads     (dx, dh0, dw_ih, dw_hh, db_ih, db_hh), what the backward writes: dx (T, B, I),
#           dh0 (B, H), and per-chunk partial sums dw_ih (C, 3H, I), dw_hh (C, 3H, H), db_ih and
#           db_hh (C, 3H), which the caller adds in chunk order.


def forward_loop(x, weights, schedule, out):
    """The forward of every chunk: x (T, B, I) and the groups above; writes h, y and, per step,
    [r|z|n] into gates and hn_t into hn.

    A chunk's rows run longest sequence first, so at step t the rows still running are the
    first `active` ones: only they are projected, multiplied and gated. A finished row's
    state is copied forward, its y is zero and its gates are not written.
    """
    x, weights, schedule, out = borrowed(x), borrowed(weights), borrowed(schedule), borrowed(out)
    w_ih, panels_ih, b_ih, b_hh, w_a, panels_a, w_n, panels_n = weights
    reset_after = RESET_AFTER
    lengths, order, in_place, reverse, n_chunks, batch_major = schedule
    h, y, direction, gates, hn = out
    (T, B), I = steps_and_rows(x, batch_major), x.shape[2]
    H = h.shape[2]
    keep = gates.shape[0] == T
    ring = h.shape[0]  # T + 1 (the tape keeps every state), or 2 (the last two)
    for c in prange(n_chunks):
        b0, m = chunk(B, n_chunks, c)
        rows = order[b0 : b0 + m]  # this chunk's batch rows, longest sequence first
        # Input projection, a block of steps at a time, running rows only: gi[first[t - t0] + i]
        # = W_ih x_t,rows[i] + b_ih for the block starting at t0. One GEMM of at least
        # BLOCK_ROWS (PROJECTION_ROWS) rows per block keeps gi cache-sized while it is used.
        rows_per_block = PROJECTION_ROWS if panels_ih.shape[0] > 0 else BLOCK_ROWS
        block = min(T, max(1, rows_per_block // m))  # steps per block
        # Where every row runs every step in batch order, a step's rows of x lie at one stride
        # (together in time-major x, T·I apart in batch-major x): _numba_matmul projects them
        # where they lie, a step at a time (at least a whole tile of rows), instead of
        # gathering them first.
        direct = in_place and panels_ih.shape[0] > 0 and m >= TILE_ROWS
        buffers = (
            np.empty((0 if direct else block * m, I), dtype=h.dtype),  # xc: the block's x rows
            np.empty((block * m, 3 * H), dtype=h.dtype),  # gi
            np.empty(block + 1, dtype=np.int64),  # first: the block's per-step row offsets
            np.empty((m, H), dtype=h.dtype),  # hc: h_{t-1} of the running rows, gathered
            np.empty((m, (3 if reset_after else 2) * H), dtype=h.dtype),  # gh: h_{t-1} W_aᵀ
            np.empty((m, H), dtype=h.dtype),  # rh: r_t ⊙ h_{t-1}           (reset_after=False)
            np.empty((m, H), dtype=h.dtype),  # ghn: (r_t ⊙ h_{t-1}) W_hnᵀ   (reset_after=False)
        )
        xc, gi, first, hc, gh, rh, ghn = borrowed(buffers)
        for t in range(T):
            s = t if keep else 0
            now, after = t % ring, (t + 1) % ring  # h_{t-1} and h_t in h
            if t % block == 0:
                steps = min(block, T - t)
                n_rows = step_offsets(lengths, rows, t, first[: steps + 1])
                if direct:
                    for j in range(steps):
                        step = T - 1 - t - j if reverse else t + j
                        x_rows = x[b0 : b0 + m, step] if batch_major else x[step, b0 : b0 + m]
                        project(x_rows, w_ih, panels_ih, b_ih, gi[j * m : (j + 1) * m])
                elif n_rows > 0:
                    gather_steps(x, t, rows, first[: steps + 1], xc, lengths, reverse, batch_major)
                    project(xc[:n_rows], w_ih, panels_ih, b_ih, gi[:n_rows])
            k0 = first[t % block]  # this step's first row in gi
            active = first[t % block + 1] - k0  # rows whose sequence includes step t
            for i in range(active, m):  # finished rows hold their state and output zero
                copy_row(h[now, rows[i]], h[after, rows[i]])
                at(y, t, rows[i], batch_major)[direction] = 0
            if active == 0:
                continue
            if in_place:
                times_transposed(h[now, b0 : b0 + active], w_a, panels_a, gh[:active], t % 2 == 1)
            else:
                take_rows(h[now], rows[:active], hc[:active])  # h_{t-1}, gathered
                times_transposed(hc[:active], w_a, panels_a, gh[:active], t % 2 == 1)
            if reset_after and keep:
                for i in range(active):
                    b = rows[i]
                    cell(gi[k0 + i], gh[i], b_hh, h[now, b], h[after, b], gates[s, b], hn[s, b])
            elif reset_after:
                for i in range(active):
                    cell_h(gi[k0 + i], gh[i], b_hh, h[now, rows[i]], h[after, rows[i]])
            else:
                for i in range(active):
                    b = rows[i]
                    cell_rz(gi[k0 + i], gh[i], b_hh, h[now, b], gates[s, b], rh[i])
                # (r_t ⊙ h_{t-1}) W_hnᵀ
                times_transposed(rh[:active], w_n, panels_n, ghn[:active], t % 2 == 0)
                for i in range(active):
                    b = rows[i]
                    cell_n(gi[k0 + i], ghn[i], b_hh, h[now, b], h[after, b], gates[s, b])
            for i in range(active):
                b = rows[i]
                y_t = at(y, source_step(t, lengths[b], reverse), b, batch_major)
                write_output(h[after, b], y_t[direction])
        keep_alive(buffers)


def forward_units_loop(x, weights, schedule, out, units):
    """The forward of forward_loop with the hidden units split between threads, for batches of
    a few rows per thread (numba_cpu._plan): part p owns units units[p] .. units[p + 1] - 1 of
    every row (units (P + 1,)), and computes their projection, recurrent product and gates at
    each step, reading only its rows of W_ih and W_hh (which stay in its core's cache). h_t is
    shared, so each step is one prange over the parts (two with reset_after=False, whose
    r_t ⊙ h_{t-1} the second product needs whole); the end of a prange is the barrier. The
    schedule is one chunk.

    A part's product h_{t-1} W_aᵀ takes dot products with its rows of W_a as stored, or, when
    panels_a is a buffer (P, ⌈n_gates·wide / width⌉, H, width), first packs them there
    (_numba_matmul.pack_units) and takes _numba_matmul's products: a pass over W_a per call
    for faster steps (numba_cpu._Plan.unit_panels).
    """
    x, weights, schedule, out = borrowed(x), borrowed(weights), borrowed(schedule), borrowed(out)
    units = borrowed(units)
    w_ih, _, b_ih, b_hh, w_a, panels_a, w_n, _ = weights
    reset_after = RESET_AFTER
    n_gates = 3 if reset_after else 2  # the gates of W_a's rows (weights, above)
    lengths, rows, in_place, reverse, _, batch_major = schedule  # rows: longest sequence first
    h, y, direction, gates, hn = out
    (T, B), I = steps_and_rows(x, batch_major), x.shape[2]
    H = h.shape[2]
    P = units.shape[0] - 1
    wide = np.max(np.diff(units))  # the most units a part owns
    keep = gates.shape[0] == T
    ring = h.shape[0]
    block = min(T, max(1, BLOCK_ROWS // B))  # steps per projection block, as in forward_loop
    buffers = (
        np.empty((block * B, I), dtype=h.dtype),  # xc
        np.empty(block + 1, dtype=np.int64),  # first
        np.empty((B, H), dtype=h.dtype),  # hc: h_{t-1} of the running rows, gathered
        np.empty((B, H), dtype=h.dtype),  # rh: r_t ⊙ h_{t-1}  (reset_after=False)
        # Per part, in its layout (_numba_rows.unit_times): the block's W_ih x_t + b_ih, one
        # gate's product (flat), the step's products, gates and b_hh.
        np.empty((P, block * B, 3 * wide), dtype=h.dtype),  # gi
        np.empty((P, block * B * wide), dtype=h.dtype),  # scratch
        np.empty((P, B * 3 * wide), dtype=h.dtype),  # gh
        np.empty((P, B, 3 * wide), dtype=h.dtype),  # part_gates
        np.empty((P, 3 * wide), dtype=h.dtype),  # part_b_hh
    )
    xc, first, hc, rh, gi, scratch, gh, part_gates, part_b_hh = borrowed(buffers)
    for p in range(P):
        gather_units(b_hh, H, units[p], units[p + 1] - units[p], part_b_hh[p])
    if panels_a.shape[0] > 0:  # each part packs its own rows of W_a
        for p in prange(P):
            n_a = n_gates * (units[p + 1] - units[p])  # the part's columns of h_{t-1} W_aᵀ
            part_panels = panels_a[p, : -(-n_a // panels_a.shape[3])]
            pack_units(w_a, H, units[p], units[p + 1] - units[p], n_gates, part_panels)
    n_rows = 0
    for t in range(T):
        s = t if keep else 0
        now, after = t % ring, (t + 1) % ring
        projecting = t % block == 0
        if projecting:
            steps = min(block, T - t)
            n_rows = step_offsets(lengths, rows, t, first[: steps + 1])
            if n_rows > 0:
                gather_steps(x, t, rows, first[: steps + 1], xc, lengths, reverse, batch_major)
        k0 = first[t % block]
        active = first[t % block + 1] - k0
        for i in range(active, B):  # finished rows hold their state and output zero
            copy_row(h[now, rows[i]], h[after, rows[i]])
            at(y, t, rows[i], batch_major)[direction] = 0
        if active == 0:
            continue
        if in_place:  # the running rows' h_{t-1}, contiguous
            for i in range(active):
                copy_row(h[now, i], hc[i])
        else:
            take_rows(h[now], rows[:active], hc[:active])
        for p in prange(P):
            u0, n = units[p], units[p + 1] - units[p]
            if projecting:
                project_units(xc[:n_rows], w_ih, b_ih, u0, n, scratch[p], gi[p, :n_rows])
            n_a = n_gates * n
            gh_p = gh[p, : active * n_a].reshape((active, n_a))  # the part's h_{t-1} W_aᵀ
            if panels_a.shape[0] > 0:
                part_panels = panels_a[p, : -(-n_a // panels_a.shape[3])]
                times_transposed(hc[:active], w_a, part_panels, gh_p, t % 2 == 1)
            else:
                unit_times(hc[:active], w_a, H, u0, n, n_gates, gh_p)
            for i in range(active):
                b = rows[i]
                if reset_after and keep:
                    cell(
                        gi[p, k0 + i, : 3 * n], gh_p[i], part_b_hh[p, : 3 * n],
                        h[now, b, u0 : u0 + n], h[after, b, u0 : u0 + n],
                        part_gates[p, i, : 3 * n], hn[s, b, u0 : u0 + n],
                    )  # fmt: skip
                    scatter_units(part_gates[p, i, : 3 * n], H, u0, n, gates[s, b])
                elif reset_after:
                    cell_h(
                        gi[p, k0 + i, : 3 * n], gh_p[i], part_b_hh[p, : 3 * n],
                        h[now, b, u0 : u0 + n], h[after, b, u0 : u0 + n],
                    )  # fmt: skip
                else:
                    cell_rz(
                        gi[p, k0 + i, : 3 * n], gh_p[i], part_b_hh[p, : 3 * n],
                        h[now, b, u0 : u0 + n], part_gates[p, i, : 3 * n], rh[i, u0 : u0 + n],
                    )  # fmt: skip
        if not reset_after:
            for p in prange(P):  # (r_t ⊙ h_{t-1}) W_hnᵀ needs every unit of r_t ⊙ h_{t-1}
                u0, n = units[p], units[p + 1] - units[p]
                ghn_p = gh[p, : active * n].reshape((active, n))
                unit_times(rh[:active], w_n, H, u0, n, 1, ghn_p)
                for i in range(active):
                    b = rows[i]
                    cell_n(
                        gi[p, k0 + i, : 3 * n], ghn_p[i], part_b_hh[p, : 3 * n],
                        h[now, b, u0 : u0 + n], h[after, b, u0 : u0 + n],
                        part_gates[p, i, : 3 * n],
                    )  # fmt: skip
                    if keep:
                        scatter_units(part_gates[p, i, : 3 * n], H, u0, n, gates[s, b])
        for i in range(active):
            b = rows[i]
            y_t = at(y, source_step(t, lengths[b], reverse), b, batch_major)
            write_output(h[after, b], y_t[direction])
    keep_alive(buffers)


def backward_loop(upstream, tape, weights, schedule, grads):
    """BPTT of every chunk (docs/math.md §4–6), given the groups above (weights with the
    backward's forms); writes grads. A row that has finished by step t keeps its dL/dh
    unchanged there, and its x_t gets a zero gradient.

    The reversed loop runs over blocks of steps, the last block first. Within a block it
    fills da and dgh for the running rows of each step (_step_offsets); when the block is
    done, the block's share of the weight and bias gradients and of dx is taken with GEMMs
    over its rows (docs/math.md §5). The buffers hold one block, about BLOCK_ROWS rows: they
    stay in cache for those GEMMs and are not allocated afresh at the size of the sequence.
    """
    upstream, tape, weights = borrowed(upstream), borrowed(tape), borrowed(weights)
    schedule, grads = borrowed(schedule), borrowed(grads)
    dy, direction, dh_n = upstream
    x, h, gates, hn = tape
    w_ih, _, _, _, w_a, panels_a, w_n, panels_n = weights
    reset_after = RESET_AFTER
    lengths, order, _, reverse, n_chunks, batch_major = schedule
    dx, dh0, dw_ih, dw_hh, db_ih, db_hh = grads
    (T, B), I = steps_and_rows(x, batch_major), x.shape[2]
    H = h.shape[2]
    for c in prange(n_chunks):
        b0, m = chunk(B, n_chunks, c)
        rows = order[b0 : b0 + m]  # this chunk's batch rows, longest sequence first
        block = min(T, max(1, BLOCK_ROWS // max(m, 1)))  # steps per block
        capacity = block * m
        buffers = (
            # first: rows first[t] + i of the whole sequence hold step t of the running rows
            # rows[i]; a block's buffers hold its steps' rows from row 0 (offsets block_first).
            np.empty(T + 1, dtype=np.int64),
            np.empty(block + 1, dtype=np.int64),  # block_first
            np.empty((capacity, 3 * H), dtype=h.dtype),  # da: dL/d(gi_t), [da_r | da_z | da_n]
            np.empty((capacity if reset_after else 0, 3 * H), dtype=h.dtype),  # dgh: recurrent
            np.empty((capacity, H), dtype=h.dtype),  # rh_prev: r_t ⊙ h_{t-1} (reset_after=False)
            np.empty((capacity, I), dtype=h.dtype),  # xc: x_t of the block's rows
            np.empty((capacity, H), dtype=h.dtype),  # h_prev: h_{t-1} of the block's rows
            np.empty((capacity, I), dtype=h.dtype),  # dxc: da_t W_ih
            np.empty((capacity, H), dtype=h.dtype),  # da_n: da[:, 2H:]    (reset_after=False)
            np.empty((3 * H, I), dtype=h.dtype),  # dw_ih_block: one block's weight gradients
            np.empty((3 * H, H), dtype=h.dtype),  # dw_hh_block
            np.empty((m, H), dtype=h.dtype),  # dh: dL/dh_t
            np.empty((m, H), dtype=h.dtype),  # dh_gemm: the recurrent-GEMM term of dL/dh_{t-1}
            np.empty((m, 2 * H), dtype=h.dtype),  # da_rz: [da_r | da_z], step t (reset_after=False)
            np.empty((m, H), dtype=h.dtype),  # drh: da_n W_hn                  (reset_after=False)
        )
        first, block_first, da, dgh, rh_prev, xc, h_prev, dxc, da_n = borrowed(buffers[:9])
        dw_ih_block, dw_hh_block, dh, dh_gemm, da_rz, drh = borrowed(buffers[9:])
        if not reset_after:  # the recurrent side's gradients are the input side's
            dgh = da
        step_offsets(lengths, rows, 0, first)
        summed = False  # whether dw_ih[c] and dw_hh[c] hold a block's sums yet
        db_ih[c] = 0
        db_hh[c] = 0
        take_rows(dh_n, rows, dh)  # dL/dh_t, t = T
        for t in range(T - 1, -1, -1):
            t0 = t - t % block  # the block's first step
            k0 = first[t] - first[t0]  # this step's first row in the block's buffers
            active = first[t + 1] - first[t]  # rows whose sequence includes step t; the
            if active > 0:  # others' dL/dh passes through unchanged
                if reset_after:
                    for i in range(active):
                        b, k = rows[i], k0 + i
                        dy_t = at(dy, source_step(t, lengths[b], reverse), b, batch_major)[
                            direction
                        ]
                        cell_grads(dh[i], dy_t, gates[t, b], h[t, b], hn[t, b], da[k], dgh[k])
                    times(dgh[k0 : k0 + active], w_a, panels_a, dh_gemm[:active], t % 2 == 1)
                else:
                    for i in range(active):
                        b, k = rows[i], k0 + i
                        dy_t = at(dy, source_step(t, lengths[b], reverse), b, batch_major)[
                            direction
                        ]
                        cell_grads_nz(dh[i], dy_t, gates[t, b], h[t, b], da_n[k], da_rz[i])
                    times(da_n[k0 : k0 + active], w_n, panels_n, drh[:active], t % 2 == 0)  # W_hn
                    for i in range(active):
                        b, k = rows[i], k0 + i
                        cell_grads_r(
                            drh[i], gates[t, b], h[t, b], da_n[k], da_rz[i], dh[i], da[k],
                            rh_prev[k],
                        )  # fmt: skip
                    times(da_rz[:active], w_a, panels_a, dh_gemm[:active], t % 2 == 1)  # W_h[rz]
                add(dh[:active], dh_gemm[:active])  # dh is now dL/dh_{t-1}
            if t == t0:  # the block is done: its share of the sums over steps and rows
                steps = min(block, T - t0)
                offsets = block_first[: steps + 1]
                n = gather_block(
                    x, batch_major, h, first, t0, rows, lengths, reverse, offsets, xc, h_prev
                )
                if n > 0:
                    # The first block's sums go straight into the chunk's, later ones are added
                    # (no pass over 3H·(I + H) floats to zero them and none to add the first)
                    ih_sums = dw_ih_block if summed else dw_ih[c]
                    hh_sums = dw_hh_block if summed else dw_hh[c]
                    gemm_tn(da[:n], xc[:n], ih_sums)  # Σ da_tᵀ x_t
                    gemm_tn(dgh[:n], h_prev[:n], hh_sums)  # Σ dgh_tᵀ h_{t-1}
                    if not reset_after:  # the n rows multiply r ⊙ h_{t-1}: Σ da_nᵀ (r ⊙ h_{t-1})
                        gemm_tn(da_n[:n], rh_prev[:n], hh_sums[2 * H :])
                    if summed:
                        add(dw_ih[c], dw_ih_block)
                        add(dw_hh[c], dw_hh_block)
                    summed = True
                    add_column_sums(da[:n], db_ih[c])  # Σ da_t
                    add_column_sums(dgh[:n], db_hh[c])  # Σ dgh_t
                    np.dot(da[:n], w_ih, dxc[:n])  # dL/dx_t = da_t W_ih
                for s in range(steps):
                    running = block_first[s + 1] - block_first[s]
                    for i in range(running):
                        b = rows[i]
                        step = source_step(t0 + s, lengths[b], reverse)
                        at(dx, step, b, batch_major)[:] = dxc[block_first[s] + i]
                    for i in range(running, m):  # padded steps: x had no effect
                        at(dx, t0 + s, rows[i], batch_major)[:] = 0
        if not summed:  # no row ran any step
            dw_ih[c] = 0
            dw_hh[c] = 0
        for i in range(m):
            dh0[rows[i]] = dh[i]
        keep_alive(buffers)


def backward_units_loop(upstream, tape, weights, schedule, grads, units):
    """BPTT of backward_loop (reset_after=True only) with the hidden units split between threads
    as in forward_units_loop; grads hold one chunk's partial sums (C = 1).

    dL/dh_{t-1} = dgh_t W_hh + the direct path sums over all rows of W_hh, so each part takes
    its rows' share of it (over the rows it owns in the forward too: they are in its cache),
    and the shares are added in part order. Per step, one prange has each part finish its units
    of dL/dh_t (the direct path plus every part's share from step t + 1: the end of the last
    prange is the barrier), take their gate gradients (da_t and dgh_t, kept per part and gate),
    and its share for step t - 1. After each block of steps each part takes its rows of the
    weight and bias gradients, and its share of dL/dx = da_t W_ih by GEMMs, also added in part
    order.
    """
    upstream, tape, weights = borrowed(upstream), borrowed(tape), borrowed(weights)
    schedule, grads, units = borrowed(schedule), borrowed(grads), borrowed(units)
    dy, direction, dh_n = upstream
    x, h, gates, hn = tape
    w_ih, _, _, _, w_a, _, _, _ = weights
    lengths, rows, _, reverse, _, batch_major = schedule  # rows: longest sequence first
    dx, dh0, dw_ih, dw_hh, db_ih, db_hh = grads
    (T, B), I = steps_and_rows(x, batch_major), x.shape[2]
    H = h.shape[2]
    P = units.shape[0] - 1
    wide = np.max(np.diff(units))  # the most units a part owns
    block = min(T, max(1, BLOCK_ROWS // B))
    capacity = block * B
    buffers = (
        np.empty(T + 1, dtype=np.int64),  # first, as in backward_loop
        np.empty(block + 1, dtype=np.int64),  # block_first
        # Per part and gate, the block's rows of da and dgh for its n units: row k at k·n
        # (flat, so that a block's rows are one contiguous (rows, n) matrix for BLAS).
        np.empty((P, 3, capacity * wide), dtype=h.dtype),  # da
        np.empty((P, 3, capacity * wide), dtype=h.dtype),  # dgh
        np.empty((capacity, I), dtype=h.dtype),  # xc: x_t of the block's rows
        np.empty((capacity, H), dtype=h.dtype),  # h_prev: h_{t-1} of the block's rows
        np.empty((P, capacity * I), dtype=h.dtype),  # dx_parts: each part's share of da_t W_ih
        np.empty((P, wide * max(I, H) + capacity * I), dtype=h.dtype),  # scratch
        np.empty((P, B, 3 * wide), dtype=h.dtype),  # part_gates, in the part's layout
        np.empty((P, B, 3 * wide), dtype=h.dtype),  # part_da
        np.empty((P, B, 3 * wide), dtype=h.dtype),  # part_dgh
        # shares: each part's share of dgh_t W_hh, in two sets: the parts write step t's while
        # others still read step t + 1's.
        np.empty((2, P, B, H), dtype=h.dtype),
        np.empty((P, B, H), dtype=h.dtype),  # terms: one gate's term of a part's share
        np.empty((B, H), dtype=h.dtype),  # dh: dL/dh_t
    )
    first, block_first, da, dgh, xc, h_prev, dx_parts = borrowed(buffers[:7])
    scratch, part_gates, part_da, part_dgh, shares, terms, dh = borrowed(buffers[7:])
    step_offsets(lengths, rows, 0, first)
    summed = False  # whether dw_ih[0] and dw_hh[0] hold a block's sums yet, as in backward_loop
    db_ih[0] = 0
    db_hh[0] = 0
    take_rows(dh_n, rows, dh)  # dL/dh_t, t = T
    shared = 0  # the rows that have shares to add (those running at step t + 1)
    for t in range(T - 1, -1, -1):
        t0 = t - t % block
        k0 = first[t] - first[t0]
        active = first[t + 1] - first[t]
        done, doing = shares[(t + 1) % 2], shares[t % 2]  # step t + 1's, step t's
        for p in prange(P):
            u0, n = units[p], units[p + 1] - units[p]
            for i in range(shared):  # dh[i] becomes dL/dh_t on the part's units
                for q in range(P):
                    add_row(dh[i, u0 : u0 + n], done[q, i, u0 : u0 + n])
            for i in range(active):
                b, k = rows[i], k0 + i
                dy_t = at(dy, source_step(t, lengths[b], reverse), b, batch_major)[direction]
                gather_units(gates[t, b], H, u0, n, part_gates[p, i, : 3 * n])
                cell_grads(
                    dh[i, u0 : u0 + n], dy_t[u0 : u0 + n], part_gates[p, i, : 3 * n],
                    h[t, b, u0 : u0 + n], hn[t, b, u0 : u0 + n], part_da[p, i, : 3 * n],
                    part_dgh[p, i, : 3 * n],
                )  # fmt: skip
                for g in range(3):
                    da[p, g, k * n : (k + 1) * n] = part_da[p, i, g * n : (g + 1) * n]
                    dgh[p, g, k * n : (k + 1) * n] = part_dgh[p, i, g * n : (g + 1) * n]
            # The part's share of dgh_t W_hh, over its rows g·H + u0 .. g·H + u0 + n - 1, a BLAS
            # product per gate added in gate order. (A sweep of axpys, one per row of W_hh,
            # stores the share at every row: two threads read W_hh at two thirds of the rate.)
            share, term = doing[p, :active], terms[p, :active]
            for g in range(3):
                dgh_g = dgh[p, g, k0 * n : (k0 + active) * n].reshape((active, n))
                w_g = w_a[g * H + u0 : g * H + u0 + n]
                if g == 0:
                    np.dot(dgh_g, w_g, share)
                else:
                    np.dot(dgh_g, w_g, term)
                    add(share, term)
        shared = active
        if t == t0:  # the block is done: its share of the sums over steps and rows
            steps = min(block, T - t0)
            offsets = block_first[: steps + 1]
            n_rows = gather_block(
                x, batch_major, h, first, t0, rows, lengths, reverse, offsets, xc, h_prev
            )
            if n_rows > 0:
                for p in prange(P):
                    u0, n = units[p], units[p + 1] - units[p]
                    dx_part = dx_parts[p, : n_rows * I].reshape((n_rows, I))
                    term = scratch[p, : n_rows * I].reshape((n_rows, I))
                    block_w = scratch[p, capacity * I :]
                    for g in range(3):
                        r0 = g * H + u0  # the part's rows of this gate
                        da_g = da[p, g, : n_rows * n].reshape((n_rows, n))
                        dgh_g = dgh[p, g, : n_rows * n].reshape((n_rows, n))
                        if summed:
                            dw = block_w[: n * I].reshape((n, I))
                            gemm_tn(da_g, xc[:n_rows], dw)  # Σ da_tᵀ x_t
                            add(dw_ih[0, r0 : r0 + n], dw)
                            dw = block_w[: n * H].reshape((n, H))
                            gemm_tn(dgh_g, h_prev[:n_rows], dw)  # Σ dgh_tᵀ h_{t-1}
                            add(dw_hh[0, r0 : r0 + n], dw)
                        else:
                            gemm_tn(da_g, xc[:n_rows], dw_ih[0, r0 : r0 + n])
                            gemm_tn(dgh_g, h_prev[:n_rows], dw_hh[0, r0 : r0 + n])
                        add_column_sums(da_g, db_ih[0, r0 : r0 + n])
                        add_column_sums(dgh_g, db_hh[0, r0 : r0 + n])
                        if g == 0:  # the part's share of dL/dx_t = da_t W_ih
                            np.dot(da_g, w_ih[r0 : r0 + n], dx_part)
                        else:
                            np.dot(da_g, w_ih[r0 : r0 + n], term)
                            add(dx_part, term)
                summed = True
            for s in range(steps):
                running = block_first[s + 1] - block_first[s]
                for i in range(running):
                    b, k = rows[i], block_first[s] + i
                    dx_t = at(dx, source_step(t0 + s, lengths[b], reverse), b, batch_major)
                    dx_t[:] = dx_parts[0, k * I : (k + 1) * I]
                    for p in range(1, P):  # in part order
                        add_row(dx_t, dx_parts[p, k * I : (k + 1) * I])
                for i in range(running, B):  # padded steps: x had no effect
                    at(dx, t0 + s, rows[i], batch_major)[:] = 0
    if not summed:  # no row ran any step
        dw_ih[0] = 0
        dw_hh[0] = 0
    for i in range(shared):  # dL/dh_0: the shares of step 0 added in part order
        for q in range(P):
            add_row(dh[i], shares[0, q, i])
    for i in range(B):
        dh0[rows[i]] = dh[i]
    keep_alive(buffers)
