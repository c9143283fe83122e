"""The CUDA backend: cuBLAS products, fused numba.cuda kernels (_cuda_kernels).

Laid out as numpy_ref, the specification (docs/cuda.md):

    forward:  one input GEMM for all steps, gi = x W_ihᵀ + b_ih        (T·B, I) @ (I, 3H)
              then the time loop, by one of two algorithms:
                "standard":   per step a cuBLAS GEMM h_{t-1} W_hhᵀ (_cuda_gemm) and ONE fused
                              pointwise kernel (reset_after=False: two of each, W_hn needs r_t
                              first), the whole loop replayed as a CUDA graph (_cuda_graphs)
                "persistent": ONE cooperative launch for every step; each block keeps its
                              hidden units' rows of W_hh in shared memory and the grid syncs
                              once per step (no per-step launches, no re-reading W_hh)
    backward: the reversed loop, by the same two algorithms: "standard" per step one fused
              gradient kernel and one cuBLAS GEMM (two of each for reset_after=False),
              replayed as a graph; "persistent" one cooperative launch holding the units'
              columns of W_hh. Then the weight gradients and dL/dx as large GEMMs over every
              step at once.

"auto" takes "persistent" for 1 ≤ B ≤ PERSISTENT_MAX_BATCH (forward) or
PERSISTENT_BACKWARD_MAX_BATCH (backward) when its blocks fit (shared memory, co-resident
cooperative grid), else "standard"; both limits are 0 (their comment says why).
grukern.cuda_algorithm() overrides the choice.

Where arrays live (grukern._device): inputs may be NumPy arrays (uploaded) or CuPy arrays (used in
place); results are NumPy arrays for a NumPy x, else CuPy arrays. The tape stays on the device
(its x is the caller's x, as in every backend). Params on the host are uploaded at every call;
GRUParams.to_device() uploads them once.

Under numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) the same code runs on NumPy arrays with the
products done by NumPy and no graphs, and the persistent kernels run as one block (the
simulator's grid sync is only a block sync). The block sizes below are module constants so that
the simulator tests can make them tiny and tiny problems still span several blocks.
"""

from __future__ import annotations

import functools
import math
import threading
import warnings

import numpy as np
from numba import cuda, types

from grukern import _backends, _device
from grukern._backends import _cuda_gemm, _cuda_graphs
from grukern._backends import _cuda_kernels as kernels
from grukern._backends._cuda_gemm import gemm, transposed
from grukern._backends._weight_gradients import flat, weight_gradients
from grukern.params import GRUParams
from grukern.tape import Gradients, Tape

# Threads per block of the per-step ("standard") kernels: one thread per (batch row, unit).
POINTWISE_THREADS = 256
# Threads per block of the persistent kernel.
PERSISTENT_THREADS = 256
# Dynamic shared memory a persistent block may use: 48 KiB is what every CUDA GPU grants without
# an opt-in attribute, and lets several blocks share one SM, so big H still fits the grid.
PERSISTENT_SHARED_BYTES = 48 * 1024
# "auto" runs the persistent kernels for 1 ≤ B ≤ these batch sizes (when they fit), else the
# standard loops. 0: never. On an H200 the standard loops replayed as CUDA graphs beat both
# persistent kernels at every size measured (benchmarks/results/gpu-*.json, docs/cuda.md): a
# persistent step reads the previous vector from global memory at every multiply-add and ends
# in a grid sync, which costs more than a replayed cuBLAS GEMM and pointwise kernel.
PERSISTENT_MAX_BATCH = 0
PERSISTENT_BACKWARD_MAX_BATCH = 0


def forward(
    x,
    params: GRUParams,
    h0,
    lengths: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    call = _Call(x, params, h0, lengths)
    B, H = call.B, call.H
    h = call.states()
    scratch_gates = _empty((1, B, 3 * H), call.dtype)  # overwritten every step, not kept
    scratch_hn = _empty((1, B, H), call.dtype)
    call.run_forward(h, scratch_gates, scratch_hn)
    h_n = h[call.T].copy()
    return call.to_caller(call.outputs(h, copy=False)), call.to_caller(h_n)


def forward_train(
    x,
    params: GRUParams,
    h0,
    lengths: np.ndarray | None = None,
):
    call = _Call(x, params, h0, lengths)
    T, B, H = call.T, call.B, call.H
    h = call.states()
    gates = _empty((T, B, 3 * H), call.dtype)
    hn = _empty((T if params.reset_after else 1, B, H), call.dtype)
    call.run_forward(h, gates, hn)
    tape = Tape(
        x=x, h=h, gates=gates, hn=hn if params.reset_after else None, params=params,
        lengths=lengths,
    )  # fmt: skip
    return call.to_caller(call.outputs(h, copy=True)), call.to_caller(h[T].copy()), tape


def backward(tape: Tape, dy, dh_n) -> Gradients:
    xp = _device.array_module()
    params = tape.params.to_device()
    T, B, I = tape.x.shape
    H = params.hidden_size
    dtype = params.dtype
    x = xp.asarray(tape.x)
    valid = _ValidRows(xp, tape.lengths, T, B)
    lengths = _device_lengths(xp, tape.lengths, T, B)
    dy = xp.asarray(dy)
    da = _empty((T, B, 3 * H), dtype)  # dL/d(gi_t)
    dgh = _empty((T, B, 3 * H), dtype) if params.reset_after else da  # dL/d(gh_t); = da if False
    dh = xp.asarray(dh_n).copy()  # dL/dh_T on entry; the loop leaves dL/dh0 in it
    if _choose_algorithm(B, H, dtype, "persistent_backward") == "persistent":
        _persistent_backward(dy, dh, tape, params.w_hh, lengths, da, dgh)
    else:
        _standard_backward(dy, dh, tape, params.w_hh, lengths, da, dgh)
    grads = weight_gradients(x, tape.h, tape.gates, da, dgh, params, valid.rows)
    dx = _empty((T, B, I), dtype)
    xp.matmul(flat(da), params.w_ih, out=flat(dx))  # dL/dx_t = da_t W_ih
    if _device.is_device_array(tape.x) or xp is np:
        return Gradients(x=dx, h0=dh, params=grads)
    return Gradients(x=dx.get(), h0=dh.get(), params=grads.to_host())


def _empty(shape, dtype):
    """Every array a kernel or a product must fill is allocated here (tests poison it with NaN)."""
    return _device.array_module().empty(shape, dtype=dtype)


class _Call:
    """One forward call: its inputs on the device, and where its results go."""

    def __init__(self, x, params: GRUParams, h0, lengths):
        self.xp = _device.array_module()
        self.host_caller = isinstance(x, np.ndarray) and self.xp is not np
        self.params = params.to_device()
        self.x = self.xp.asarray(x)
        self.h0 = self.xp.asarray(h0)
        self.T, self.B, _ = x.shape
        self.H = params.hidden_size
        self.dtype = params.dtype
        self.lengths = lengths
        self.valid = _ValidRows(self.xp, lengths, self.T, self.B)
        self.device_lengths = _device_lengths(self.xp, lengths, self.T, self.B)

    def states(self):
        """(T+1, B, H) with h[0] = h0; the kernels write h[1:]."""
        h = _empty((self.T + 1, self.B, self.H), self.dtype)
        h[0] = self.h0
        return h

    def run_forward(self, h, gates, hn) -> None:
        """gi for every step (one GEMM), then the time loop of the chosen algorithm."""
        p = self.params
        gi = self.valid.project(self.x, p.w_ih, 3 * self.H)  # x_t W_ihᵀ, 0 at padded steps
        gi += p.b_ih
        if _choose_algorithm(self.B, self.H, self.dtype) == "persistent":
            _persistent_forward(gi, p, self.device_lengths, h, gates, hn)
        else:
            _standard_forward(gi, p, self.device_lengths, h, gates, hn)

    def outputs(self, h, copy: bool):
        """y (T, B, H) from the states: h[1:], zero at padded steps (t ≥ lengths[b])."""
        if self.lengths is None:
            return h[1:].copy() if copy else h[1:]
        valid = self.xp.arange(self.T)[:, None] < self.device_lengths[None, :]  # (T, B)
        return self.xp.where(valid[:, :, None], h[1:], self.xp.zeros((), dtype=self.dtype))

    def to_caller(self, a):
        """A result where the caller's x lives: copied to the host for a NumPy x."""
        return a.get() if self.host_caller else a


class _ValidRows:
    """The rows (t, b), t < lengths[b], of the flattened (T·B, k) step arrays: the only rows of
    x that any product reads, so that whatever a padded x holds (NaN, inf) changes nothing.

    Without padding that is every row and the products read x in place; with padding, x's
    valid rows are gathered (a copy of those rows only) and the products run over them.
    """

    def __init__(self, xp, lengths: np.ndarray | None, T: int, B: int):
        self.xp = xp
        self.shape = (T, B)
        padded = lengths is not None and B > 0 and int(lengths.min()) < T
        valid = np.arange(T)[:, None] < lengths[None, :] if padded else None  # (T, B)
        self.index = None if valid is None else xp.asarray(np.flatnonzero(valid))
        self.rows = slice(None) if self.index is None else self.index  # for indexing (T·B, k)

    def take(self, a):
        """The valid rows of a (T, B, k): a (T·B, k) view without padding, else a gathered copy."""
        return flat(a) if self.index is None else flat(a)[self.index]

    def project(self, x, w, k: int):
        """x_t wᵀ at every valid row, 0 at padded ones: (T, B, I) @ (k, I)ᵀ -> (T, B, k)."""
        if self.index is None:
            out = _empty((*self.shape, k), x.dtype)
            self.xp.matmul(flat(x), w.T, out=flat(out))
        else:
            out = self.xp.zeros((*self.shape, k), dtype=x.dtype)
            flat(out)[self.index] = self.take(x) @ w.T
        return out


def _device_lengths(xp, lengths, T: int, B: int):
    """The kernels always take lengths (B,) int64 on the device; None means all T steps."""
    return xp.full(B, T, dtype=np.int64) if lengths is None else xp.asarray(lengths)


def _views(*arrays):
    """The arrays as numba kernel arguments: zero-copy numba views of CuPy arrays on a GPU (made
    once per call, cheaper to pass per launch); the NumPy arrays themselves under the simulator."""
    if _device.simulated():
        return arrays
    return tuple(cuda.as_cuda_array(a, sync=False) for a in arrays)


def _configured(kernel, blocks: int, threads: int, stream, shared_bytes: int = 0):
    """kernel[blocks, threads, stream, shared_bytes], without numba's warning that a grid of
    fewer than 128 blocks under-uses the GPU: one thread per batch row and unit makes small
    grids at small B·H, by design (the standard loop is bound by its GEMM there, and the
    persistent kernels want one block per SM), so the warning would only be noise to users."""
    from numba.core.errors import NumbaPerformanceWarning

    # catch_warnings swaps the process's filters: two threads inside it at once could leave the
    # wrong ones installed, hence the lock.
    with _warnings_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore", NumbaPerformanceWarning)
        return kernel[blocks, threads, stream, shared_bytes]


_warnings_lock = threading.Lock()


def _pointwise_launch(n: int) -> tuple[int, int]:
    """(blocks, threads) covering n threads of a per-step kernel."""
    return max(1, math.ceil(n / POINTWISE_THREADS)), POINTWISE_THREADS


def _standard_forward(gi, p: GRUParams, lengths, h, gates, hn) -> None:
    """Per step one cuBLAS GEMM and one fused kernel (two of each for reset_after=False), issued
    from Python or replayed as a CUDA graph (_cuda_graphs: the loop runs only to be issued or
    captured, so a replay makes none of its kernel arguments)."""
    T, B, H = h.shape[0] - 1, h.shape[1], h.shape[2]
    launch = _pointwise_launch(B * H)
    if p.reset_after:
        gh = _empty((B, 3 * H), h.dtype)  # h_{t-1} W_hhᵀ
        w_t = transposed(p.w_hh, B)
        arrays = (gi, gh, p.b_hh, lengths, h, gates, hn)

        def loop(stream):
            step, views = _configured(kernels.step_forward, *launch, stream), _views(*arrays)
            for t in range(T):
                gemm(h[t], w_t, gh)
                step(*views, t)

        weights = (w_t,)
    else:
        gh = _empty((B, 2 * H), h.dtype)  # h_{t-1} W_h[rz]ᵀ
        rh = _empty((B, H), h.dtype)  # r_t ⊙ h_{t-1}
        ghn = _empty((B, H), h.dtype)  # (r_t ⊙ h_{t-1}) W_hnᵀ
        w_rz_t, w_n_t = transposed(p.w_hh[: 2 * H], B), transposed(p.w_hh[2 * H :], B)
        arrays = (gi, gh, ghn, rh, p.b_hh, lengths, h, gates)

        def loop(stream):
            k_gi, k_gh, k_ghn, k_rh, k_b_hh, k_lengths, k_h, k_gates = _views(*arrays)
            first_half = _configured(kernels.step_forward_rz, *launch, stream)
            second_half = _configured(kernels.step_forward_n, *launch, stream)
            for t in range(T):
                gemm(h[t], w_rz_t, gh)
                first_half(k_gi, k_gh, k_b_hh, k_h, k_gates, k_rh, t)
                gemm(rh, w_n_t, ghn)
                second_half(k_gi, k_ghn, k_b_hh, k_lengths, k_h, k_gates, t)

        weights = (w_rz_t, w_n_t)
    _cuda_gemm.prepare()
    _cuda_graphs.run(("standard_forward", launch, p.reset_after), (*arrays, *weights), loop)


def _standard_backward(dy, dh, tape: Tape, w_hh, lengths, da, dgh) -> None:
    """The reversed loop: per step one fused gradient kernel and one cuBLAS GEMM (two of each for
    reset_after=False), issued from Python or replayed as a CUDA graph; then dh += dL/dh0's
    recurrent part."""
    xp = _device.array_module()
    T, (B, H) = tape.h.shape[0] - 1, dh.shape
    dh_rec = xp.zeros((B, H), dtype=dh.dtype)  # the recurrent-product part of dL/dh_t
    launch = _pointwise_launch(B * H)
    if tape.params.reset_after:
        arrays = (dy, dh, dh_rec, tape.gates, tape.h, tape.hn, lengths, da, dgh)

        def loop(stream):
            step, views = _configured(kernels.step_backward, *launch, stream), _views(*arrays)
            for t in reversed(range(T)):
                step(*views, t)
                gemm(dgh[t], w_hh, dh_rec)  # dgh_t W_hh                          (B, H)

    else:
        drh = _empty((B, H), dh.dtype)  # da_n W_hn = dL/d(r_t ⊙ h_{t-1})
        arrays = (dy, dh, dh_rec, tape.gates, tape.h, lengths, da, drh)

        def loop(stream):
            w_rz, w_n = w_hh[: 2 * H], w_hh[2 * H :]
            k_dy, k_dh, k_dh_rec, k_gates, k_h, k_lengths, k_da, k_drh = _views(*arrays)
            first_half = _configured(kernels.step_backward_nz, *launch, stream)
            second_half = _configured(kernels.step_backward_r, *launch, stream)
            for t in reversed(range(T)):
                first_half(k_dy, k_dh, k_dh_rec, k_gates, k_h, k_lengths, k_da, t)
                gemm(da[t, :, 2 * H :], w_n, drh)
                second_half(k_drh, k_dh, k_gates, k_h, k_lengths, k_da, t)
                gemm(da[t, :, : 2 * H], w_rz, dh_rec)  # [da_r | da_z] W_h[rz]

    _cuda_gemm.prepare()
    _cuda_graphs.run(("standard_backward", launch, tape.params.reset_after), (*arrays, w_hh), loop)
    dh += dh_rec  # dL/dh0


def _persistent_forward(gi, p: GRUParams, lengths, h, gates, hn) -> None:
    """The whole time loop in one cooperative launch (_cuda_kernels.persistent_forward)."""
    B, H = h.shape[1], h.shape[2]
    rh = _empty((0, 0) if p.reset_after else (B, H), h.dtype)  # r_t ⊙ h_{t-1} of every unit
    arrays = (gi, p.w_hh, p.b_hh, lengths, h, gates, hn, rh)
    _launch_persistent("persistent_forward", B, H, arrays)


def _persistent_backward(dy, dh, tape: Tape, w_hh, lengths, da, dgh) -> None:
    """The whole reversed loop and dL/dh0 in one cooperative launch
    (_cuda_kernels.persistent_backward)."""
    B, H = dh.shape
    hn = tape.hn
    if not tape.params.reset_after:  # hn is not kept, and dgh is da (not passed twice)
        hn = dgh = _empty((0, 0, 0), dh.dtype)
    arrays = (dy, dh, tape.gates, tape.h, hn, lengths, w_hh, da, dgh)
    _launch_persistent("persistent_backward", B, H, arrays)


def _launch_persistent(name: str, B: int, H: int, arrays) -> None:
    """One cooperative launch of a persistent kernel on CuPy's current stream, issued or
    replayed as a one-node CUDA graph (which spares the host the launch's argument handling)."""
    dtype = arrays[0].dtype
    units = _persistent_units(B, H, dtype.itemsize)
    shared_bytes = kernels.shared_size(B, H, units, PERSISTENT_THREADS) * dtype.itemsize
    blocks = math.ceil(H / units)
    kernel = getattr(kernels, name)

    def launch(stream):
        configured = _configured(kernel, blocks, PERSISTENT_THREADS, stream, shared_bytes)
        configured(*_views(*arrays), units)

    _cuda_graphs.run((name, blocks, units, PERSISTENT_THREADS, shared_bytes), arrays, launch)


def _choose_algorithm(B: int, H: int, dtype, kernel: str = "persistent_forward") -> str:
    """The algorithm of this call's forward (kernel="persistent_forward") or backward
    ("persistent_backward"): grukern.cuda_algorithm()'s, or the automatic one."""
    requested = _backends.cuda_algorithm_in_effect()
    if requested == "standard":
        return "standard"
    reason = _persistent_obstacle(B, H, np.dtype(dtype).itemsize, kernel)
    if requested == "persistent":
        if reason is not None:
            raise ValueError(f"the persistent CUDA algorithm cannot run this problem: {reason}")
        return "persistent"
    forward = kernel == "persistent_forward"
    max_batch = PERSISTENT_MAX_BATCH if forward else PERSISTENT_BACKWARD_MAX_BATCH
    return "persistent" if reason is None and 0 < B <= max_batch else "standard"


def _persistent_obstacle(
    B: int, H: int, itemsize: int, kernel: str = "persistent_forward"
) -> str | None:
    """Why a persistent kernel cannot run (B, H) in this dtype here, or None if it can."""
    if B == 0:
        return "the batch is empty (B=0): there are no rows to share between blocks"
    units = _persistent_units(B, H, itemsize)
    if units == 0:
        return (
            f"one hidden unit's rows of W_hh (H={H}) and the buffers for B={B} rows need more "
            f"than PERSISTENT_SHARED_BYTES={PERSISTENT_SHARED_BYTES} bytes of shared memory"
        )
    blocks = math.ceil(H / units)
    shared_bytes = kernels.shared_size(B, H, units, PERSISTENT_THREADS) * itemsize
    most = _max_cooperative_blocks(kernel, PERSISTENT_THREADS, shared_bytes, itemsize)
    if blocks > most:
        return f"it needs {blocks} blocks of {units} units; the GPU holds {most} co-resident"
    return None


def _persistent_units(B: int, H: int, itemsize: int) -> int:
    """Hidden units per persistent block: enough blocks for every SM, as many units as the
    shared memory allows beyond that; 0 if not even one fits. All H under the simulator."""
    device = _device_id()
    return _units_per_block(B, H, itemsize, PERSISTENT_THREADS, PERSISTENT_SHARED_BYTES, device)


def _device_id() -> int:
    """The current GPU's number (0 under the simulator): GPUs of one machine may differ."""
    return 0 if _device.simulated() else cuda.get_current_device().id


@functools.lru_cache(maxsize=256)
def _units_per_block(
    B: int, H: int, itemsize: int, threads: int, shared_bytes: int, device: int
) -> int:
    if _device.simulated():
        units = H  # one block: the simulator's grid sync only synchronises a block
    else:
        units = math.ceil(H / cuda.get_current_device().MULTIPROCESSOR_COUNT)
    while units and kernels.shared_size(B, H, units, threads) * itemsize > shared_bytes:
        units -= 1
    return units


def _max_cooperative_blocks(kernel: str, threads: int, shared_bytes: int, itemsize: int) -> int:
    """Blocks of a persistent kernel that can be co-resident on this GPU (1 when simulated);
    compiles the kernel for this dtype if needed (its register count matters)."""
    return _cooperative_blocks(kernel, threads, shared_bytes, itemsize, _device_id())


@functools.lru_cache(maxsize=256)
def _cooperative_blocks(kernel: str, threads: int, shared_bytes: int, itemsize: int, device: int):
    if _device.simulated():
        return 1
    real = types.float32 if itemsize == 4 else types.float64
    compiled = getattr(kernels, kernel).compile(kernels.signatures(real)[kernel])
    return compiled.max_cooperative_grid_blocks(threads, shared_bytes)
