"""The Numba CPU backend: one parallel region per call, fused and allocation-free time loops.

Batch rows are independent in the forward and in the reversed loop, so the batch is split into
chunks of rows and each thread does all the work of its chunks inside a single `prange`
(_numba_loops: the loops and their arguments; _numba_rows: one row of one step; _numba_builds:
the serial and parallel builds):

    forward, per chunk:   gi = x_chunk W_ihᵀ + b_ih, one GEMM per block of steps,
                          time loop: recurrent product + one fused pass over the gates,
                          writing h_t (and the tape)
    backward, per chunk:  reversed loop: fused gate gradients + recurrent product; after each
                          block of steps, its share of the chunk's partial dW_ih, dW_hh, db and
                          its dx (GEMMs)
    after the prange:     partial weight gradients summed in chunk order

With fewer rows than threads (streaming, B = 1 to a few) and many hidden units, a call splits
the units instead (_Plan; _numba_loops.forward_units_loop, backward_units_loop): each thread
owns a part of the units of every row, reads only its rows of W_ih and W_hh (which stay in its
cache), and the threads meet once or twice per step to share h_t (or dL/dh_t). The backward of
reset_after=False always splits the batch.

No sum is split between threads and the reduction order is fixed, so results are bitwise
reproducible. There are as many chunks (or parts) as grukern's thread budget allows (_threads),
whatever number of threads a call is admitted to, so one budget gives the same bits in any
calling thread; across budgets results agree to rounding (the split decides which product
loop a row takes and how the weight-gradient sums are split).

Products: the per-chunk GEMMs call BLAS (np.dot in compiled code, SciPy's BLAS), held at one
thread while a kernel runs (_threads.run). The per-step recurrent products are
_numba_matmul's register-tiled kernel on weights packed once per call, or for a single row dot
products with a weight's rows (an axpy sweep in the backward), as are the unit split's forward
products (_numba_dots; its backward's are BLAS products).
Large outputs and tapes reuse the memory of earlier calls (_memory). Compilation happens at the
first call per dtype and build, cached on disk.
"""

from __future__ import annotations

import functools

import numpy as np

from grukern import _memory, _threads
from grukern._arguments import in_memory_order, is_batch_major
from grukern._backends import _numba_cell, _numba_matmul
from grukern._backends._directions import Slot
from grukern._backends._numba_builds import kernels
from grukern.params import GRUParams
from grukern.tape import Gradients, Tape

# Calls with fewer forward FLOPs (6·T·B·H·(I+H)) than this run serially: starting and joining
# threads would cost more than it saves, and far more on a busy machine.
PARALLEL_MIN_FLOPS = 2_000_000


def forward(
    x: np.ndarray,
    params: GRUParams,
    h0: np.ndarray,
    lengths: np.ndarray | None = None,
    reverse: bool = False,
    out: Slot | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    T, (B, H) = x.shape[0], h0.shape
    if T == 1 and B == 1 and lengths is None and out is None:
        # One step of one row (streaming): the lean kernel, whose arithmetic for one row is
        # this loop's, so the bits are the same, without the loop's overheads.
        y, h_n = np.empty((1, 1, H), dtype=x.dtype), np.empty((1, H), dtype=x.dtype)
        _numba_cell.run_forward(x, h0, params, y, h_n)
        return y, h_n
    batch_major = is_batch_major(x if out is None else out.array)
    if out is None and lengths is None and not reverse and not batch_major:
        # y[t] is the state h_{t+1}: the kernels write every state into y's memory (y = h[1:])
        # and copy none (G5 forward: 23.8 -> 23.5 ms).
        h = _states(h0, T + 1)
        y, direction = h[1:, :, None], 0
    else:
        h = _states(h0, min(T, 1) + 1)  # the last two states only
        y, direction = _y_and_direction(out, (T, B, H), x.dtype, batch_major)
    # Scratch, overwritten every step and not returned: plain np.empty, which is faster for
    # small arrays than _empty (a one-step call is mostly such overheads).
    scratch_gates = np.empty((1, B, 3 * H), dtype=x.dtype)
    scratch_hn = np.empty((1, B, H), dtype=x.dtype)
    group = (h, y, direction, scratch_gates, scratch_hn)
    _run_forward(x, params, lengths, reverse, group, batch_major)
    return y[:, :, direction], h[T % h.shape[0]].copy()


def forward_train(
    x: np.ndarray,
    params: GRUParams,
    h0: np.ndarray,
    lengths: np.ndarray | None = None,
    reverse: bool = False,
    out: Slot | None = None,
) -> tuple[np.ndarray, np.ndarray, Tape]:
    T, (B, H) = x.shape[0], h0.shape
    batch_major = is_batch_major(x if out is None else out.array)
    h = _states(h0, T + 1)  # every state, for the tape
    y, direction = _y_and_direction(out, (T, B, H), x.dtype, batch_major)
    gates = _empty((T, B, 3 * H), dtype=x.dtype)
    hn = _empty((T if params.reset_after else 1, B, H), dtype=x.dtype)
    _run_forward(x, params, lengths, reverse, (h, y, direction, gates, hn), batch_major)
    tape = Tape(
        x=x, h=h, gates=gates, hn=hn if params.reset_after else None, params=params,
        lengths=lengths, reverse=reverse,
    )  # fmt: skip
    return y[:, :, direction], h[T].copy(), tape


def backward(tape: Tape, dy: np.ndarray | Slot, dh_n: np.ndarray) -> Gradients:
    params = tape.params
    T, B, I = tape.x.shape
    H = params.hidden_size
    dtype = dh_n.dtype
    dy, direction = (dy.array, dy.index) if isinstance(dy, Slot) else (dy[:, :, None], 0)
    if T == 0:  # nothing to propagate through: the gradient passes straight to h0
        zero_grads = GRUParams(*(np.zeros_like(a) for a in params.arrays()), params.reset_after)
        return Gradients(x=np.empty((0, B, I), dtype=dtype), h0=dh_n.copy(), params=zero_grads)
    plan = _plan(T, B, I, H, BACKWARD_UNITS_BELOW if params.reset_after else 0)
    C = plan.n_chunks
    batch_major = is_batch_major(tape.x)  # as the forward ran
    dx, dh0 = _sequence_empty((T, B, I), dtype, batch_major), _empty((B, H), dtype=dtype)
    partial_sums = (  # per chunk: dw_ih, dw_hh, db_ih, db_hh
        _empty((C, 3 * H, I), dtype=dtype),
        _empty((C, 3 * H, H), dtype=dtype),
        _empty((C, 3 * H), dtype=dtype),
        _empty((C, 3 * H), dtype=dtype),
    )
    hn = tape.hn if params.reset_after else np.empty((0, B, H), dtype=dtype)
    schedule = _schedule(tape.lengths, tape.reverse, plan, batch_major)
    x, dy = _in_order(tape.x, batch_major), _in_order(dy, batch_major)

    def work():  # packing the weights is work too, and so is adding up the chunks' sums
        build = kernels(plan.parallel and _threads.parallel_builds(), params.reset_after)
        grads = (_memory_order(dx, batch_major), dh0, *partial_sums)
        args = (
            (dy, direction, dh_n), (x, tape.h, tape.gates, hn), _weights(params, True, plan),
            schedule, grads,
        )  # fmt: skip
        if plan.units is None:
            build.backward(*args)
        else:
            build.backward_units(*args, plan.units)
        return [_chunk_sum(a) for a in partial_sums]

    sums = _threads.run(plan.threads, plan.limit_blas, work)
    return Gradients(x=dx, h0=dh0, params=GRUParams(*sums, params.reset_after))


def _chunk_sum(partial: np.ndarray) -> np.ndarray:
    """The chunks' partial sums (C, ...) added in chunk order. One chunk's is returned as it
    is: a fresh array of a large weight's size costs page faults (1-2 ms at 3H x H = 3072 x 1024)
    for a copy."""
    if partial.shape[0] == 1:
        return partial[0]
    return np.sum(partial, axis=0, out=_empty(partial.shape[1:], partial.dtype))


def _memory_order(a: np.ndarray, batch_major: bool) -> np.ndarray:
    """The C-contiguous array the kernels index for a sequence array a (T, B, ...) laid out in
    the call's order: a itself, or with batch_major its (B, T, ...) transpose."""
    return a.swapaxes(0, 1) if batch_major else a


def _in_order(a: np.ndarray, batch_major: bool) -> np.ndarray:
    """_memory_order of an input sequence array, copied into the call's order if it is laid
    out otherwise (as a layer's input after dropout can be)."""
    a = _memory_order(a, batch_major)
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _sequence_empty(shape: tuple, dtype, batch_major: bool) -> np.ndarray:
    """A (T, B, ...) array to fill, laid out in the call's order (_empty)."""
    return in_memory_order(shape, batch_major, lambda s: _empty(s, dtype))


def _empty(shape, dtype) -> np.ndarray:
    """Every array a kernel must fill is allocated here (tests poison it with NaN); large ones
    reuse the memory of earlier calls (_memory)."""
    return _memory.empty(shape, dtype)


def _y_and_direction(out: Slot | None, shape, dtype, batch_major: bool) -> tuple[np.ndarray, int]:
    """(array (T, B, D, H), direction) the kernels write y into: out's, or a (T, B, 1, H) array
    of our own in the call's order (no Slot object: a one-step call is mostly such
    overheads)."""
    if out is not None:
        return out.array, out.index
    T, B, H = shape
    return _sequence_empty((T, B, 1, H), dtype, batch_major), 0


def _states(h0: np.ndarray, ring: int) -> np.ndarray:
    """(ring, B, H) with h[0] = h0; the forward writes h_t into h[t % ring]."""
    h = _empty((ring, *h0.shape), dtype=h0.dtype)
    h[0] = h0
    return h


def _run_forward(x, params: GRUParams, lengths, reverse: bool, out: tuple, batch_major) -> None:
    """Run the forward kernels on x (T, B, I) into the out group, whose y is laid out in the
    call's order (batch_major); x is brought to it."""
    T, B, I = x.shape
    plan = _plan(T, B, I, params.hidden_size, FORWARD_UNITS_BELOW)
    h, y, direction, gates, hn = out
    out = (h, _memory_order(y, batch_major), direction, gates, hn)
    x = _in_order(x, batch_major)
    schedule = _schedule(lengths, reverse, plan, batch_major)
    _threads.run(plan.threads, plan.limit_blas, _forward_work, x, params, schedule, out, plan)


def _forward_work(x, params: GRUParams, schedule: tuple, out: tuple, plan: _Plan) -> None:
    """The admitted part of a forward: packing the weights is work too."""
    build = kernels(plan.parallel and _threads.parallel_builds(), params.reset_after)
    weights = _weights(params, False, plan)
    if plan.units is None:
        build.forward(x, weights, schedule, out)
    else:
        build.forward_units(x, weights, schedule, out, plan.units)


def _schedule(lengths: np.ndarray | None, reverse: bool, plan: _Plan, batch_major: bool) -> tuple:
    """The schedule group of the loops (_numba_loops).

    Rows are dealt to the chunks longest first, round robin, so each chunk holds its rows in
    descending length (the running rows of a step are a prefix) and gets a fair share of the
    long and the short sequences; chunk c owns order[b0 : b0 + m] (_numba_rows.chunk).
    Without lengths every row runs all T steps in batch order (the plan's arrays: a one-step
    call is mostly overhead, so nothing is allocated)."""
    if lengths is None:
        return plan.all_rows[reverse, batch_major]
    B, n_chunks = len(lengths), plan.n_chunks
    longest_first = np.argsort(-lengths, kind="stable")
    position = np.arange(B)
    chunk = position % n_chunks
    q, r = divmod(B, n_chunks)
    order = np.empty(B, dtype=np.int64)
    order[chunk * q + np.minimum(chunk, r) + position // n_chunks] = longest_first
    return lengths, order, False, reverse, n_chunks, batch_major


def _weights(params: GRUParams, backward: bool, plan: _Plan) -> tuple:
    """The weights group of a forward or a backward call (_numba_loops says what each is):
    panels if plan.panels, of wᵀ in the forward (of W_ih's too if plan.projection_panels) and
    of w in the backward, else empty; for the unit split's forward, a buffer for its parts'
    panels of W_a if plan.unit_panels, else an empty one."""
    H = params.hidden_size
    unused, unused_panels = _UNUSED[params.dtype], _NO_PANELS[params.dtype]
    projection = plan.projection_panels and not backward
    panels_ih = _numba_matmul.pack(params.w_ih, True, _empty) if projection else unused_panels
    if params.reset_after:
        w_a, w_n = params.w_hh, unused
    else:
        w_a, w_n = params.w_hh[: 2 * H], params.w_hh[2 * H :]
    forms = []
    for w in (w_a, w_n):
        panels = w.size > 0 and plan.panels
        forms += [w, _numba_matmul.pack(w, not backward, _empty) if panels else unused_panels]
    if plan.units is not None and not backward:
        forms[1] = _unit_panels(w_a, plan) if plan.unit_panels else _NO_UNIT_PANELS[params.dtype]
    return (params.w_ih, panels_ih, params.b_ih, params.b_hh, *forms)


def _unit_panels(w_a: np.ndarray, plan: _Plan) -> np.ndarray:
    """An unfilled buffer for the panels of each part's rows of w_a (forward_units_loop)."""
    n_gates, width = w_a.shape[0] // w_a.shape[1], _numba_matmul.panel_width(w_a.dtype)
    wide = int(np.max(np.diff(plan.units)))
    shape = (len(plan.units) - 1, -(-n_gates * wide // width), w_a.shape[1], width)
    return _empty(shape, w_a.dtype)


# The empty arrays that stand for a weight matrix and a set of panels a call does not use, one
# per dtype (shared: never written; made once because a one-step call is mostly such overheads).
_UNUSED = {np.dtype(t): np.empty((0, 0), dtype=t) for t in (np.float32, np.float64)}
_NO_PANELS = {
    dtype: np.empty((0, 0, _numba_matmul.panel_width(dtype)), dtype=dtype) for dtype in _UNUSED
}
_NO_UNIT_PANELS = {
    dtype: np.empty((0, 0, 0, _numba_matmul.panel_width(dtype)), dtype=dtype) for dtype in _UNUSED
}


class _Plan:
    """How one call runs: split by batch rows into n_chunks chunks, or (units not None) by
    hidden units into parts for the _units loops; which build; which products."""

    def __init__(self, T: int, B: int, I: int, H: int, threads: int, split_units: bool):
        self.units = _unit_parts(H, threads) if split_units else None
        self.n_chunks = 1 if split_units else max(1, min(B, threads))
        self.threads = len(self.units) - 1 if split_units else self.n_chunks
        self.parallel = self.threads > 1
        # lengths and order when every row runs all T steps in batch order (the kernels only
        # read them; not marked read-only, which Numba would compile a second time for)
        self.all_steps = np.full(B, T, dtype=np.int64)
        self.batch_order = np.arange(B, dtype=np.int64)
        # Panels for the products of several rows, and of single rows where W_hh is small and
        # the steps many (_numba_rows.times_transposed; else dot products: the packing costs a
        # pass over W_hh per call). None for the unit split, whose products are dot products.
        single_row_panels = T >= ROW_PANELS_MIN_STEPS and H <= ROW_PANELS_MAX_HIDDEN
        self.panels = (self.n_chunks < B or single_row_panels) and not split_units
        # The forward's input projection by _numba_matmul too, on W_ih's panels, where the
        # inputs are wide enough (PROJECTION_PANELS_MIN_INPUT); else by BLAS.
        self.projection_panels = self.panels and I >= PROJECTION_PANELS_MIN_INPUT
        # The unit split's forward packs each part's rows of W_hh where that repays the pass
        # over W_hh (UNIT_PANELS_MIN_STEPS)
        self.unit_panels = split_units and T >= UNIT_PANELS_MIN_STEPS
        # Serial, with products below OpenBLAS's threading threshold (m·n·k ≤ 4·65536): no
        # BLAS call can start threads, so the microseconds of limiting them are saved.
        tiny = T * B * 3 * H * max(I, H) <= 4 * 65536
        self.limit_blas = not (tiny and self.threads == 1)
        # The schedules without lengths, forward and reverse, in either order (_schedule)
        self.all_rows = {
            (reverse, batch_major): (
                self.all_steps,
                self.batch_order,
                True,
                reverse,
                self.n_chunks,
                batch_major,
            )
            for reverse in (False, True)
            for batch_major in (False, True)
        }


def _unit_parts(H: int, threads: int) -> np.ndarray:
    """Boundaries (P + 1,) of the parts of the hidden units: as many parts as threads, each a
    whole number of 16 units (a 64-byte vector of float32) but the last, none empty."""
    width = 16 * -(-H // (16 * threads))
    return np.array([*range(0, H, width), H], dtype=np.int64)


# The decomposition a plan takes: None chooses by the rule below; "batch" or "units" forces
# one at every size (tests run every decomposition this way).
FORCED_SPLIT: str | None = None

# The unit split pays a parallel region per step (two with reset_after=False), which the batch
# split does not; it wins where the batch leaves threads idle, or where each thread would
# stream all of W_hh per step for its few rows, and the units are many enough that a step is
# long. A call splits the units when B < UNITS_BELOW · threads and H ≥
# UNITS_MIN_HIDDEN (measured on 2 cores: docs/internals.md; the backward gains less from the
# split than the forward, and loses at a few rows of H = 1024).
FORWARD_UNITS_BELOW = 3
BACKWARD_UNITS_BELOW = 1
UNITS_MIN_HIDDEN = 384

# The unit split's forward packs each part's rows of W_hh into panels (_numba_matmul) for
# T >= UNIT_PANELS_MIN_STEPS: the pass over W_hh (0.05 / 0.15 / 1.5 ms per part at H = 512 /
# 1024 / 2048, 1 thread) repays faster steps. Measured on 2 cores (AVX-512, 32 MB L3), B = 1,
# forward ms, dot products / panels, medians of 5 interleaved rounds: H = 512: T = 10 0.46 /
# 0.46, T = 20 0.75 / 0.69, T = 50 1.66 / 1.33; H = 1024: T = 10 1.79 / 2.10, T = 20 2.81 /
# 2.99, T = 30 4.04 / 3.63, T = 50 6.24 / 5.10 (B = 4, T = 20: 3.86 / 4.21); H = 2048: T = 10
# 11.6 / 12.6, T = 20 19.8 / 19.4, T = 30 25.5 / 24.4.
UNIT_PANELS_MIN_STEPS = 24

# The batch split's forward projects its inputs by _numba_matmul from this input size (forward,
# 2 threads, ms, _numba_matmul / BLAS, medians of 5 interleaved rounds: AVX-512 G1 (I = 32)
# 0.222 / 0.217, G2 (I = 1) 0.183 / 0.176, G3 (I = 128) 1.796 / 1.794, G4 (I = 512) 47.97 /
# 49.46, G5 (I = 256) 24.34 / 24.77; compiled for AVX2 on the same machine: G3 3.54 / 3.49, G4
# 93.8 / 94.7, G5 47.8 / 47.2).
PROJECTION_PANELS_MIN_INPUT = 128

# A single row's product takes packed panels (_numba_matmul.row_matmul) from this many steps
# and up to this hidden size (measured: 1 thread, 3H x H by one row, row_matmul against dot
# products: 78 / 173 ns at H = 32, 5.2 / 8.3 µs at H = 256).
ROW_PANELS_MIN_STEPS = 8
ROW_PANELS_MAX_HIDDEN = 256


@functools.lru_cache(maxsize=64)
def _cached_plan(T: int, B: int, I: int, H: int, threads: int, split_units: bool) -> _Plan:
    return _Plan(T, B, I, H, threads, split_units)


def _plan(T: int, B: int, I: int, H: int, units_below: int = 0) -> _Plan:
    """The plan of a call whose loop has a unit split taken for B < units_below · threads (0:
    the loop has none)."""
    large = 6 * T * B * H * (I + H) >= PARALLEL_MIN_FLOPS
    threads = _threads.get_num_threads() if large or FORCED_SPLIT == "units" else 1
    if FORCED_SPLIT is None:
        few_rows = B // threads < units_below  # B < units_below · threads
        split_units = threads > 1 and few_rows and H >= UNITS_MIN_HIDDEN
    else:
        split_units = units_below > 0 and FORCED_SPLIT == "units"
    if not split_units and B == 1:  # one row: one chunk
        threads = 1
    return _cached_plan(T, B, I, H, threads, split_units)
