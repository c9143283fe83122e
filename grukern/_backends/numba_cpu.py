"""The Numba CPU backend: one parallel region per call, fused and allocation-free time loops.

Batch rows are independent in the forward and in the reversed loop, so the batch is split into
one chunk of rows per thread and each thread does ALL the work of its chunk inside a single
`prange` (DESIGN.md §3, §5):

    forward, per chunk:   gi = x_chunk W_ihᵀ + b_ih, one GEMM per block of ~BLOCK_ROWS rows
                          time loop: recurrent product + ONE fused pass over the gates,
                          writing h_t (and the tape)
    backward, per chunk:  reversed loop: fused gate gradients + recurrent product;
                          after each block of ~BLOCK_ROWS rows, the block's share of the
                          chunk's partial dW_ih, dW_hh, db (GEMMs) and its dx (GEMM)
    after the prange:     partial weight gradients summed in chunk order

No thread waits for another during the loops and the reduction order is fixed, so results are
bitwise reproducible from run to run. The number of chunks is grukern's thread budget
(_threads): results are the same bits for one budget whatever thread calls and however many
threads the call was admitted to; across budgets they agree to rounding only (the chunking
decides which product loop a row takes and how the weight-gradient sums are split).

Products: the big per-chunk GEMMs call BLAS (np.dot in compiled code, i.e. SciPy's BLAS), held
at one thread while a kernel runs (_threads.one_blas_thread). The per-step recurrent
products (`_times_transposed` forward, `_times` backward) are _numba_matmul's register-tiled
kernel on the recurrent weights packed once per call, or for a single row an axpy (or dot
products) over a weight's rows. Large output and tape arrays reuse the memory of earlier
calls (_memory).

Gate math uses the vectorisable exp/σ/tanh of _numba_math, one batch row at a time.
Compilation happens at the first call per dtype and is cached on disk (cache=True).
"""

from __future__ import annotations

import contextlib
import functools
import types

import numba
import numpy as np
from numba import prange

from grukern import _memory, _threads
from grukern._backends import _numba_matmul
from grukern._backends._directions import Slot
from grukern._backends._numba_math import sigmoid, tanh
from grukern.params import GRUParams
from grukern.tape import Gradients, Tape

# The forward projects the input of a block of steps per GEMM, and the backward sums the weight
# gradients of a block of steps per GEMM: blocks of about this many rows.
BLOCK_ROWS = 512

# Calls with fewer forward FLOPs (6·T·B·H·(I+H)) than this run serially: starting and joining
# threads costs more than it saves, and on a busy machine much more (a parallel call with
# T=3, B=2, H=2 took 94 ms instead of 0.5 ms while other processes ran).
PARALLEL_MIN_FLOPS = 2_000_000

_JIT = {"cache": True, "error_model": "numpy", "fastmath": {"contract"}, "nogil": True}


def forward(
    x: np.ndarray,
    params: GRUParams,
    h0: np.ndarray,
    lengths: np.ndarray | None = None,
    reverse: bool = False,
    out: Slot | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    T, (B, H) = x.shape[0], h0.shape
    h = _states(h0, min(T, 1) + 1)  # the last two states only
    y, slot = _y_slot(out, (T, B, H), x.dtype)
    # Scratch, overwritten every step and not returned: plain np.empty, which is faster for
    # small arrays than _empty (a one-step call is mostly such overheads).
    scratch_gates = np.empty((1, B, 3 * H), dtype=x.dtype)
    scratch_hn = np.empty((1, B, H), dtype=x.dtype)
    _run_forward(x, params, h, y, slot, scratch_gates, scratch_hn, lengths, reverse)
    return y[:, :, slot], h[T % h.shape[0]].copy()


def forward_train(
    x: np.ndarray,
    params: GRUParams,
    h0: np.ndarray,
    lengths: np.ndarray | None = None,
    reverse: bool = False,
    out: Slot | None = None,
) -> tuple[np.ndarray, np.ndarray, Tape]:
    T, (B, H) = x.shape[0], h0.shape
    h = _states(h0, T + 1)  # every state, for the tape
    y, slot = _y_slot(out, (T, B, H), x.dtype)
    gates = _empty((T, B, 3 * H), dtype=x.dtype)
    hn = _empty((T if params.reset_after else 1, B, H), dtype=x.dtype)
    _run_forward(x, params, h, y, slot, gates, hn, lengths, reverse)
    tape = Tape(
        x=x, h=h, gates=gates, hn=hn if params.reset_after else None, params=params,
        lengths=lengths, reverse=reverse,
    )  # fmt: skip
    return y[:, :, slot], h[T].copy(), tape


def backward(tape: Tape, dy: np.ndarray | Slot, dh_n: np.ndarray) -> Gradients:
    params = tape.params
    T, B, I = tape.x.shape
    H = params.hidden_size
    dtype = dh_n.dtype
    dy, dy_slot = (dy.array, dy.index) if isinstance(dy, Slot) else (dy.reshape(T, B, 1, H), 0)
    if T == 0:  # nothing to propagate through: the gradient passes straight to h0
        zero_grads = GRUParams(*(np.zeros_like(a) for a in params.arrays()), params.reset_after)
        return Gradients(x=np.empty((0, B, I), dtype=dtype), h0=dh_n.copy(), params=zero_grads)
    plan = _plan(T, B, I, H)
    dx = _empty((T, B, I), dtype=dtype)
    dh0 = _empty((B, H), dtype=dtype)
    dw_ih = _empty((plan.n_chunks, 3 * H, I), dtype=dtype)  # per-chunk partial sums
    dw_hh = _empty((plan.n_chunks, 3 * H, H), dtype=dtype)
    db_ih = _empty((plan.n_chunks, 3 * H), dtype=dtype)
    db_hh = _empty((plan.n_chunks, 3 * H), dtype=dtype)
    hn = tape.hn if params.reset_after else np.empty((0, B, H), dtype=dtype)
    with plan.blas_limit(), _threads.admitted(plan.n_chunks):  # packing is work too
        recurrent = _recurrent_operands(params, True, plan)
        plan.kernels.backward(
            dy, dy_slot, dh_n, tape.x, tape.h, tape.gates, hn, params.w_ih, *recurrent,
            *_schedule(tape.lengths, plan)[:2], tape.reverse, dx, dh0, dw_ih, dw_hh, db_ih,
            db_hh, plan.n_chunks,
        )  # fmt: skip
        grads = GRUParams(
            dw_ih.sum(axis=0), dw_hh.sum(axis=0), db_ih.sum(axis=0), db_hh.sum(axis=0),
            reset_after=params.reset_after,
        )  # fmt: skip
    return Gradients(x=dx, h0=dh0, params=grads)


def _empty(shape, dtype) -> np.ndarray:
    """Every array a kernel must fill is allocated here (tests poison it with NaN); large ones
    reuse the memory of earlier calls (_memory)."""
    return _memory.empty(shape, dtype)


def _y_slot(out: Slot | None, shape, dtype) -> tuple[np.ndarray, int]:
    """(array (T, B, D, H), index) the kernels write y into: out's, or a (T, B, 1, H) array of
    our own (no Slot object: a one-step call is mostly such overheads)."""
    if out is not None:
        return out.array, out.index
    T, B, H = shape
    return _empty((T, B, 1, H), dtype=dtype), 0


def _states(h0: np.ndarray, n_slots: int) -> np.ndarray:
    """(n_slots, B, H) with h[0] = h0; the forward writes h_t into h[t % n_slots]."""
    h = _empty((n_slots, *h0.shape), dtype=h0.dtype)
    h[0] = h0
    return h


def _run_forward(x, params: GRUParams, h, y, slot, gates, hn, lengths, reverse: bool) -> None:
    T, B, I = x.shape
    plan = _plan(T, B, I, params.hidden_size)
    with plan.blas_limit(), _threads.admitted(plan.n_chunks):  # packing is work too
        recurrent = _recurrent_operands(params, False, plan)
        plan.kernels.forward(
            x, params.w_ih, params.b_ih, params.b_hh, *recurrent, params.reset_after,
            *_schedule(lengths, plan), reverse, h, y, slot, gates, hn, plan.n_chunks,
        )  # fmt: skip


def _schedule(lengths: np.ndarray | None, plan: _Plan):
    """(lengths, slots, in_place) for the kernels: lengths (B,) int64, slots (B,), the batch
    rows in the order the chunks take them (chunk c owns slots _chunk(B, n, c)), and whether
    that is the batch order itself (then the products read the states in place).

    Rows are dealt to the chunks longest first, round robin, so each chunk holds its rows in
    descending length (the running rows of a step are a prefix) and gets a fair share of the
    long and the short sequences. Without lengths every row runs all T steps in batch order
    (the plan's arrays: a one-step call is mostly overhead, so nothing is allocated).
    """
    if lengths is None:
        return plan.all_steps, plan.batch_order, True
    B, n_chunks = len(lengths), plan.n_chunks
    order = np.argsort(-lengths, kind="stable")  # longest first
    position = np.arange(B)
    chunk = position % n_chunks
    q, r = divmod(B, n_chunks)
    slots = np.empty(B, dtype=np.int64)
    slots[chunk * q + np.minimum(chunk, r) + position // n_chunks] = order
    return lengths, slots, False


def _recurrent_operands(params: GRUParams, backward: bool, plan: _Plan) -> tuple:
    """The operands of the per-step products: for each recurrent weight W_a and W_n,
    (w, wᵀ, panels) for the forward and (w, panels) for the backward, where

        reset_after=True:  W_a = W_hh (3H, H), W_n unused (empty; one product per step);
        reset_after=False: W_a = W_h[rz] (2H, H), W_n = W_hn (H, H).

    The forward multiplies h_{t-1} by W_aᵀ and r_t ⊙ h_{t-1} by W_nᵀ; the backward multiplies
    dgh_t by W_a and da_n by W_n. w is the weight as stored; wᵀ a C-contiguous copy of its
    transpose, made if plan.forward_transposes; panels = _numba_matmul.pack(w, not backward),
    made if plan.panels. What is not made is empty.
    """
    H = params.hidden_size
    dtype = params.dtype
    if params.reset_after:
        w_a, w_n = params.w_hh, _UNUSED[dtype]
    else:
        w_a, w_n = params.w_hh[: 2 * H], params.w_hh[2 * H :]
    operands = []
    for w in (w_a, w_n):
        used = w.size > 0
        operands.append(w)
        if not backward:
            transposes = used and plan.forward_transposes
            operands.append(np.ascontiguousarray(w.T) if transposes else _UNUSED[dtype])
        panels = used and plan.panels
        operands.append(_numba_matmul.pack(w, not backward) if panels else _NO_PANELS[dtype])
    return tuple(operands)


# The empty arrays that stand for a weight matrix and a set of panels a call does not use, one
# per dtype (shared: never written; made once because a one-step call is mostly such overheads).
_UNUSED = {np.dtype(t): np.empty((0, 0), dtype=t) for t in (np.float32, np.float64)}
_NO_PANELS = {
    dtype: np.empty((0, 0, _numba_matmul.panel_width(dtype)), dtype=dtype) for dtype in _UNUSED
}


class _Plan:
    """How one call runs: which compiled kernels, how many row chunks, which products."""

    def __init__(self, T: int, B: int, I: int, H: int, threads: int):
        self.n_chunks = max(1, min(B, threads))
        self.kernels = _kernels(self.n_chunks > 1)
        # lengths and slots when every row runs all T steps in batch order (the kernels only
        # read them; not marked read-only, which Numba would compile a second time for)
        self.all_steps = np.full(B, T, dtype=np.int64)
        self.batch_order = np.arange(B, dtype=np.int64)
        # Products of a single row need no panels. The forward's take an axpy over the rows of
        # W_aᵀ (a transposed copy) from T = 8 steps on, and below that dot products with the
        # rows of W_a, where the copy costs more than the axpy saves.
        self.panels = self.n_chunks < B
        self.forward_transposes = not self.panels and T >= 8
        # Serial, with products below OpenBLAS's threading threshold (m·n·k ≤ 4·65536): no
        # BLAS call can start threads, so the microseconds of limiting them are saved.
        tiny = T * B * 3 * H * max(I, H) <= 4 * 65536
        self.blas_limit = (
            contextlib.nullcontext if tiny and self.n_chunks == 1 else _threads.one_blas_thread
        )


@functools.lru_cache(maxsize=64)
def _cached_plan(T: int, B: int, I: int, H: int, threads: int) -> _Plan:
    return _Plan(T, B, I, H, threads)


def _plan(T: int, B: int, I: int, H: int) -> _Plan:
    parallel = B > 1 and 6 * T * B * H * (I + H) >= PARALLEL_MIN_FLOPS  # one row: one chunk
    threads = _threads.get_num_threads() if parallel else 1
    return _cached_plan(T, B, I, H, threads)


class _Kernels:
    """The compiled loops, serial or parallel over row chunks (compiled on first use).

    Numba's on-disk cache does not key entries by the parallel option, so the serial and the
    parallel build of one function would load each other's code; each build therefore
    compiles a copy of the function under its own name.
    """

    def __init__(self, parallel: bool):
        options = {**_JIT, "parallel": parallel}
        suffix = "_parallel" if parallel else "_serial"
        self.forward = numba.njit(**options)(_renamed(_forward_loop, suffix))
        self.backward = numba.njit(**options)(_renamed(_backward_loop, suffix))


def _renamed(fn, suffix: str):
    """A copy of fn whose name (and so Numba's cache file) ends in suffix."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix)
    copy.__qualname__ = fn.__qualname__ + suffix
    return copy


@functools.cache
def _kernels(parallel: bool) -> _Kernels:
    return _Kernels(parallel)


# ---------------------------------------------------------------------------------------------
# Compiled loops (plain functions here; _Kernels compiles them). Shapes are time-major. Chunk c
# holds batch rows b0 .. b1-1; its private buffers are indexed by row k = t·m + i, i = b - b0.


def _forward_loop(
    x, w_ih, b_ih, b_hh, w_a, w_a_t, panels_a, w_n, w_n_t, panels_n, reset_after, lengths,
    slots, in_place, reverse, h, y, y_slot, gates, hn, n_chunks,
):  # fmt: skip
    """The forward of every chunk. Writes h, y and, per step, [r|z|n] into gates, hn_t into hn.

    x (T, B, I); w_ih (3H, I); b_ih, b_hh (3H,); w_a, w_a_t, panels_a, w_n, w_n_t, panels_n
    from _recurrent_operands; reset_after: the variant (the W_n operands are read only when it
    is False); lengths (B,), slots (B,) and in_place from _schedule; reverse: step t
    of row b reads x[lengths[b] - 1 - t, b] and writes y there (_source_step); h (S, B, H)
    holds h_t in h[t % S], in step order, with h[0] = h0: S = T + 1 keeps every state (for
    the tape), S = 2 the last two (inference); y (T, B, D, H), written at y[:, :, y_slot] in
    x's order (_directions.Slot). gates (T, B, 3H) and hn (T, B, H) are kept for backward, or
    have a first axis of 1 and are overwritten every step (inference).

    A chunk's rows run longest sequence first, so at step t the rows still running are the
    first `active` ones: only they are projected, multiplied and gated. A finished row's
    state is copied forward, its y is zero and its gates are not written.
    """
    T, B, I = x.shape
    H = h.shape[2]
    keep = gates.shape[0] == T
    slots_h = h.shape[0]  # T + 1 (the tape keeps every state), or 2 (the last two)
    for c in prange(n_chunks):
        b0, m = _chunk(B, n_chunks, c)
        rows = slots[b0 : b0 + m]  # this chunk's batch rows, longest sequence first
        # Input projection, a block of steps at a time, running rows only: gi[first[t - t0] + i]
        # = W_ih x_t,rows[i] + b_ih for the block starting at t0. One GEMM of at least
        # BLOCK_ROWS rows per block keeps gi cache-sized while it is used.
        block = min(T, max(1, BLOCK_ROWS // m))  # steps per block
        xc = np.empty((block * m, I), dtype=h.dtype)  # the block's x rows
        gi = np.empty((block * m, 3 * H), dtype=h.dtype)
        first = np.empty(block + 1, dtype=np.int64)  # the block's per-step row offsets
        hc = np.empty((m, H), dtype=h.dtype)  # h_{t-1} of the running rows, gathered
        gh = np.empty((m, (3 if reset_after else 2) * H), dtype=h.dtype)  # h_{t-1} W_aᵀ, no bias
        rh = np.empty((m, H), dtype=h.dtype)  # r_t ⊙ h_{t-1}            (reset_after=False)
        ghn = np.empty((m, H), dtype=h.dtype)  # (r_t ⊙ h_{t-1}) W_hnᵀ     (reset_after=False)
        for t in range(T):
            s = t if keep else 0
            now, after = t % slots_h, (t + 1) % slots_h  # h_{t-1} and h_t in h
            if t % block == 0:
                steps = min(block, T - t)
                n_rows = _step_offsets(lengths, rows, t, first[: steps + 1])
                if n_rows > 0:
                    _gather_steps(x, t, rows, first[: steps + 1], xc, lengths, reverse)
                    _gemm_nt(xc[:n_rows], w_ih, gi[:n_rows])
                    _add_row_vector(gi[:n_rows], b_ih)
            k0 = first[t % block]  # this step's first row in gi
            active = first[t % block + 1] - k0  # rows whose sequence includes step t
            for i in range(active, m):  # finished rows hold their state and output zero
                h[after, rows[i]] = h[now, rows[i]]
                y[t, rows[i], y_slot] = 0
            if active == 0:
                continue
            if in_place:
                _times_transposed(h[now, b0 : b0 + active], w_a, w_a_t, panels_a, gh[:active])
            else:
                _take_rows(h[now], rows[:active], hc[:active])
                _times_transposed(hc[:active], w_a, w_a_t, panels_a, gh[:active])  # h_{t-1} W_aᵀ
            if reset_after:
                for i in range(active):
                    b = rows[i]
                    _gates(gi[k0 + i], gh[i], b_hh, h[now, b], h[after, b], gates[s, b], hn[s, b])
            else:
                for i in range(active):
                    b = rows[i]
                    _gates_rz(gi[k0 + i], gh[i], b_hh, h[now, b], gates[s, b], rh[i])
                # (r_t ⊙ h_{t-1}) W_hnᵀ
                _times_transposed(rh[:active], w_n, w_n_t, panels_n, ghn[:active])
                for i in range(active):
                    b = rows[i]
                    _gates_n(gi[k0 + i], ghn[i], b_hh, h[now, b], h[after, b], gates[s, b])
            for i in range(active):
                b = rows[i]
                y[_source_step(t, lengths[b], reverse), b, y_slot] = h[after, b]


def _backward_loop(
    dy, dy_slot, dh_n, x, h, gates, hn, w_ih, w_a, panels_a, w_n, panels_n, lengths, slots,
    reverse, dx, dh0, dw_ih, dw_hh, db_ih, db_hh, n_chunks,
):  # fmt: skip
    """BPTT of every chunk (docs/math.md §4–6). Writes dx, dh0 and per-chunk partial
    dw_ih (C, 3H, I), dw_hh (C, 3H, H), db_ih, db_hh (C, 3H).

    dy (T, B, D, H), read at dy[:, :, dy_slot]; dh_n (B, H); x, h, gates, hn as saved by the
    forward (hn empty when reset_after=False); w_ih (3H, I); w_a, panels_a, w_n, panels_n from
    _recurrent_operands; lengths (B,); slots (B,) and reverse as in the forward (dy and dx in
    x's order). A row that has finished by step t keeps its dL/dh unchanged there, and its x_t
    gets a zero gradient.

    The reversed loop runs over blocks of steps, the last block first. Within a block it
    fills da and dgh for the running rows of each step (_step_offsets); when the block is
    done, the block's share of the weight and bias gradients and of dx is taken with GEMMs
    over its rows (docs/math.md §5). The buffers hold one block, about BLOCK_ROWS rows: they
    stay in cache for those GEMMs and are not allocated afresh at the size of the sequence.
    """
    T, B, I = x.shape
    H = h.shape[2]
    reset_after = hn.shape[0] != 0
    for c in prange(n_chunks):
        b0, m = _chunk(B, n_chunks, c)
        rows = slots[b0 : b0 + m]  # this chunk's batch rows, longest sequence first
        # Rows first[t] + i of the whole sequence hold step t of the running rows rows[i];
        # a block's buffers hold its steps' rows from row 0 (offsets block_first).
        first = np.empty(T + 1, dtype=np.int64)
        _step_offsets(lengths, rows, 0, first)
        block = min(T, max(1, BLOCK_ROWS // max(m, 1)))  # steps per block
        capacity = block * m
        block_first = np.empty(block + 1, dtype=np.int64)
        da = np.empty((capacity, 3 * H), dtype=h.dtype)  # dL/d(gi_t) rows [da_r | da_z | da_n]
        dgh = np.empty((capacity, 3 * H), dtype=h.dtype) if reset_after else da  # recurrent side
        rh_prev = np.empty((capacity, H), dtype=h.dtype)  # r_t ⊙ h_{t-1}  (reset_after=False)
        xc = np.empty((capacity, I), dtype=h.dtype)  # x_t of the block's rows
        h_prev = np.empty((capacity, H), dtype=h.dtype)  # h_{t-1} of the block's rows
        dxc = np.empty((capacity, I), dtype=h.dtype)  # da_t W_ih
        da_n = np.empty((capacity, H), dtype=h.dtype)  # da_n, as in da[:, 2H:] (reset_after=False)
        dw_ih_block = np.empty((3 * H, I), dtype=h.dtype)  # one block's weight gradients
        dw_hh_block = np.empty((3 * H, H), dtype=h.dtype)
        dw_ih[c] = 0
        dw_hh[c] = 0
        db_ih[c] = 0
        db_hh[c] = 0
        dh = _take_rows(dh_n, rows, np.empty((m, H), dtype=h.dtype))  # dL/dh_t, t = T
        dh_gemm = np.empty((m, H), dtype=h.dtype)  # the recurrent-GEMM term of dL/dh_{t-1}
        da_rz = np.empty((m, 2 * H), dtype=h.dtype)  # [da_r | da_z] of step t (reset_after=False)
        drh = np.empty((m, H), dtype=h.dtype)  # da_n W_hn                   (reset_after=False)
        for t in range(T - 1, -1, -1):
            t0 = t - t % block  # the block's first step
            k0 = first[t] - first[t0]  # this step's first row in the block's buffers
            active = first[t + 1] - first[t]  # rows whose sequence includes step t; the
            if active > 0:  # others' dL/dh passes through unchanged
                if reset_after:
                    for i in range(active):
                        b, k = rows[i], k0 + i
                        dy_t = dy[_source_step(t, lengths[b], reverse), b, dy_slot]
                        _gate_grads(dh[i], dy_t, gates[t, b], h[t, b], hn[t, b], da[k], dgh[k])
                    _times(dgh[k0 : k0 + active], w_a, panels_a, dh_gemm[:active])
                else:
                    for i in range(active):
                        b, k = rows[i], k0 + i
                        dy_t = dy[_source_step(t, lengths[b], reverse), b, dy_slot]
                        _gate_grads_nz(dh[i], dy_t, gates[t, b], h[t, b], da_n[k], da_rz[i])
                    _times(da_n[k0 : k0 + active], w_n, panels_n, drh[:active])  # W_hn
                    for i in range(active):
                        b, k = rows[i], k0 + i
                        _gate_grads_r(
                            drh[i], gates[t, b], h[t, b], da_n[k], da_rz[i], dh[i], da[k],
                            rh_prev[k],
                        )  # fmt: skip
                    _times(da_rz[:active], w_a, panels_a, dh_gemm[:active])  # W_h[rz]
                _add(dh[:active], dh_gemm[:active])  # dh is now dL/dh_{t-1}
            if t == t0:  # the block is done: its share of the sums over steps and rows
                steps = min(block, T - t0)
                for s in range(steps + 1):
                    block_first[s] = first[t0 + s] - first[t0]
                n = block_first[steps]
                offsets = block_first[: steps + 1]
                if n > 0:
                    _gather_steps(x, t0, rows, offsets, xc[:n], lengths, reverse)  # x_t
                    _gather_steps(h, t0, rows, offsets, h_prev[:n], lengths, False)  # h_{t-1}
                    _gemm_tn(da[:n], xc[:n], dw_ih_block)  # Σ da_tᵀ x_t
                    _gemm_tn(dgh[:n], h_prev[:n], dw_hh_block)  # Σ dgh_tᵀ h_{t-1}
                    if not reset_after:  # the n rows multiply r ⊙ h_{t-1}: Σ da_nᵀ (r ⊙ h_{t-1})
                        _gemm_tn(da_n[:n], rh_prev[:n], dw_hh_block[2 * H :])
                    _add(dw_ih[c], dw_ih_block)
                    _add(dw_hh[c], dw_hh_block)
                    _add_column_sums(da[:n], db_ih[c])  # Σ da_t
                    _add_column_sums(dgh[:n], db_hh[c])  # Σ dgh_t
                    np.dot(da[:n], w_ih, dxc[:n])  # dL/dx_t = da_t W_ih
                for s in range(steps):
                    running = block_first[s + 1] - block_first[s]
                    for i in range(running):
                        b = rows[i]
                        dx[_source_step(t0 + s, lengths[b], reverse), b] = dxc[block_first[s] + i]
                    for i in range(running, m):  # padded steps: x had no effect
                        dx[t0 + s, rows[i]] = 0
        for i in range(m):
            dh0[rows[i]] = dh[i]


# ---------------------------------------------------------------------------------------------
# One batch row of one step: the fused gate math. Taking 1-d rows keeps the pointers LLVM must
# check for aliasing few, so these loops vectorise (the same loop over 2-d arrays ran 6x slower).


@numba.njit(**_JIT)
def _gates(gi, gh, b_hh, h_prev, h, gates, hn):
    """reset_after=True. gi (3H) = W_ih x_t + b_ih, gh (3H) = W_hh h_{t-1}; writes h_t (H),
    gates = [r_t | z_t | n_t] (3H) and hn = W_hn h_{t-1} + b_hn (H)."""
    H = h.shape[0]
    for j in range(H):
        r = sigmoid(gi[j] + gh[j] + b_hh[j])  # r_t
        z = sigmoid(gi[H + j] + gh[H + j] + b_hh[H + j])  # z_t
        hn_j = gh[2 * H + j] + b_hh[2 * H + j]  # W_hn h_{t-1} + b_hn
        n = tanh(gi[2 * H + j] + r * hn_j)  # n_t = tanh(gi_n + r_t ⊙ hn_t)
        h[j] = n + z * (h_prev[j] - n)  # h_t = (1 - z_t) n_t + z_t h_{t-1}
        gates[j] = r
        gates[H + j] = z
        gates[2 * H + j] = n
        hn[j] = hn_j


@numba.njit(**_JIT)
def _gates_rz(gi, gh, b_hh, h_prev, gates, rh):
    """reset_after=False, first half. gh (2H) = W_h[rz] h_{t-1}; writes r_t, z_t into gates
    and rh = r_t ⊙ h_{t-1}."""
    H = rh.shape[0]
    for j in range(H):
        r = sigmoid(gi[j] + gh[j] + b_hh[j])  # r_t
        gates[j] = r
        gates[H + j] = sigmoid(gi[H + j] + gh[H + j] + b_hh[H + j])  # z_t
        rh[j] = r * h_prev[j]


@numba.njit(**_JIT)
def _gates_n(gi, ghn, b_hh, h_prev, h, gates):
    """reset_after=False, second half. ghn (H) = W_hn (r_t ⊙ h_{t-1}); writes n_t and h_t."""
    H = h.shape[0]
    for j in range(H):
        z = gates[H + j]
        n = tanh(gi[2 * H + j] + ghn[j] + b_hh[2 * H + j])  # n_t
        h[j] = n + z * (h_prev[j] - n)  # h_t = (1 - z_t) n_t + z_t h_{t-1}
        gates[2 * H + j] = n


@numba.njit(**_JIT)
def _gate_grads(dh, dy, gates, h_prev, hn, da, dgh):
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


@numba.njit(**_JIT)
def _gate_grads_nz(dh, dy, gates, h_prev, da_n, da_rz):
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


@numba.njit(**_JIT)
def _gate_grads_r(drh, gates, h_prev, da_n, da_rz, dh, da, rh_prev):
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


# ---------------------------------------------------------------------------------------------
# Helpers for the compiled loops.


@numba.njit(**_JIT)
def _gemm_nt(a, w, out):
    """out = a @ wᵀ by BLAS."""
    np.dot(a, w.T, out)


@numba.njit(**_JIT)
def _gemm_tn(a, b, out):
    """out = aᵀ @ b by BLAS."""
    np.dot(a.T, b, out)


@numba.njit(**_JIT)
def _add_row_vector(a, v):
    """a[k] += v for every row k."""
    for k in range(a.shape[0]):
        row = a[k]
        for j in range(v.shape[0]):
            row[j] += v[j]


@numba.njit(**_JIT)
def _add(a, b):
    """a += b for 2-d arrays of one shape."""
    for i in range(a.shape[0]):
        row_a, row_b = a[i], b[i]
        for j in range(row_a.shape[0]):
            row_a[j] += row_b[j]


@numba.njit(**_JIT)
def _take_rows(a, rows, out):
    """out[i] = a[rows[i]] for a (B, k)."""
    for i in range(rows.shape[0]):
        out[i] = a[rows[i]]
    return out


@numba.njit(**_JIT)
def _step_offsets(lengths, rows, t0, first):
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


@numba.njit(**_JIT)
def _gather_steps(a, t0, rows, first, out, lengths, reverse):
    """out[first[s] + i] = a[t0 + s, rows[i]] for the running rows of each step (_step_offsets),
    or with reverse the step _source_step(t0 + s, ...) of a."""
    for s in range(first.shape[0] - 1):
        for i in range(first[s + 1] - first[s]):
            b = rows[i]
            out[first[s] + i] = a[_source_step(t0 + s, lengths[b], reverse), b]
    return out


@numba.njit(**_JIT)
def _source_step(t, length, reverse):
    """The step of x (and y, dy, dx) that step t of a sequence of `length` steps works on: t,
    or with reverse length - 1 - t (the sequence's valid part runs last step first)."""
    return length - 1 - t if reverse else t


@numba.njit(**_JIT)
def _chunk(B, n_chunks, c):
    """(first slot, row count) of chunk c: B rows split as evenly as possible."""
    q, r = B // n_chunks, B % n_chunks
    return c * q + min(c, r), q + (1 if c < r else 0)


@numba.njit(**_JIT)
def _add_column_sums(a, out):
    """out[j] += Σ_k a[k, j] (rows added in order)."""
    for k in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[j] += a[k, j]


@numba.njit(**_JIT)
def _times_transposed(a, w, w_t, panels, out):
    """out = a @ wᵀ for a (m, p) and w (n, p); w_t is wᵀ (p, n) or empty, panels are
    _numba_matmul.pack(w, True) or empty (_recurrent_operands).

    Several rows take _numba_matmul.matmul. A single row, which matmul would compute six
    times, takes _row_times on w_t if it is made, else dot products with the rows of w.
    """
    if a.shape[0] > 1:
        _numba_matmul.matmul(a, panels, out)
    elif w_t.shape[0] > 0:
        _row_times(a[0], w_t, out[0])
    else:
        for j in range(out.shape[1]):
            out[0, j] = _dot(a[0], w[j])


@numba.njit(**_JIT)
def _times(a, w, panels, out):
    """out = a @ w for a (m, p) and w (p, n); panels are _numba_matmul.pack(w, False) or
    empty. Several rows take _numba_matmul.matmul, a single row _row_times."""
    if a.shape[0] > 1:
        _numba_matmul.matmul(a, panels, out)
    else:
        _row_times(a[0], w, out[0])


@numba.njit(**_JIT)
def _row_times(u, w, out):
    """out = u @ w for one row u (p,) and w (p, n), by axpy sweeps over the rows of w (no
    reductions, which dominate short rows)."""
    out[:] = 0
    for q in range(u.shape[0]):
        u_q = u[q]
        for j in range(out.shape[0]):
            out[j] += u_q * w[q, j]


@numba.njit(cache=True, error_model="numpy", fastmath={"contract", "reassoc"}, nogil=True)
def _dot(u, v):
    """Σ_q u[q]·v[q] (vectorised: the reassociation that needs is allowed here only)."""
    total = u.dtype.type(0)
    for q in range(u.shape[0]):
        total += u[q] * v[q]
    return total
