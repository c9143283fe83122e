"""The standard loops' per-step products: cuBLAS GEMMs that a CUDA graph can capture.

CuPy refuses to call cuBLAS while a stream is being captured (its setStream raises
NotImplementedError), though cuBLAS itself supports capture. So the per-step products call
cuBLAS here, through ctypes, on handles of grukern's own: one per thread and device, as a cuBLAS
handle must not be used by two threads at once, made before any capture (prepare()), and never
destroyed, as graphs captured through a handle use its workspace (cuBLAS's default pool). One
ctypes call also costs the host less than a cupy.matmul.

Under the CUDA simulator the products are NumPy's.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from grukern import _device

_OP_N, _OP_T = 0, 1  # cublasOperation_t
_REALS = (np.float32, np.float64)
_handles: dict = {}  # (thread ident, device id) -> _Handle; a new thread may reuse a dead one's
_handles_lock = threading.Lock()
_library_lock = threading.Lock()
_library: list = []  # [ctypes.CDLL] once loaded


def gemm(a, b, out) -> None:
    """out = a @ b on CuPy's current stream, for 2-D arrays whose rows or columns are contiguous
    (any row or column stride): (m, k) @ (k, n) -> (m, n), out row-major."""
    if _device.simulated():
        np.matmul(a, b, out=out)
        return
    if out.size == 0:
        return
    if a.shape[1] == 0:
        out.fill(0)
        return
    arguments = column_major_arguments(a, b, out)
    _handle().gemm(*arguments, b.data.ptr, a.data.ptr, out)


def transposed(w, m: int):
    """wᵀ as the second operand of products (m, k) @ wᵀ: the transposed view, or a contiguous
    copy of it, whichever cuBLAS multiplies faster at this shape on this GPU. cuBLAS's kernel
    for a transposed operand is several times slower at some small shapes and faster at others
    (docs/cuda.md), so the choice is measured, once per shape, device and dtype. The copy
    costs one pass over w per call, outside the time loop."""
    if _device.simulated() or m == 0:
        return w.T
    import cupy

    key = (m, *w.shape, w.dtype.str, cupy.cuda.Device().id)
    with _layouts_lock:
        if key not in _layouts:
            _layouts[key] = _faster_layout(w, m)
    return w.T if _layouts[key] == "view" else cupy.ascontiguousarray(w.T)


_layouts: dict = {}  # (m, n, k, dtype, device) -> "view" or "copy"
_layouts_lock = threading.Lock()


def _faster_layout(w, m: int) -> str:
    import cupy

    a = cupy.ones((m, w.shape[1]), dtype=w.dtype)
    out = cupy.empty((m, w.shape[0]), dtype=w.dtype)
    seconds = {}
    for layout, operand in (("view", w.T), ("copy", cupy.ascontiguousarray(w.T))):
        for _ in range(3):  # warm-up: the handle, cuBLAS's choice of kernel
            gemm(a, operand, out)
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        for _ in range(20):
            gemm(a, operand, out)
        stop.record()
        stop.synchronize()
        seconds[layout] = cupy.cuda.get_elapsed_time(start, stop)
    return min(seconds, key=seconds.get)


def column_major_arguments(a, b, out) -> tuple[int, ...]:
    """cuBLAS's (op_1, op_2, m, n, k, ld_1, ld_2, ld_out) for out = a @ b of row-major views:
    cuBLAS is column-major, and row-major out (m, n) is column-major outᵀ (n, m) = bᵀ aᵀ, so
    its first operand is b and its second a."""
    m, k = a.shape
    n = b.shape[1]
    if not a.dtype == b.dtype == out.dtype or out.dtype.type not in _REALS:
        raise TypeError(
            f"gemm needs one dtype, float32 or float64, got {a.dtype}, {b.dtype} and {out.dtype}"
        )
    op_b, ld_b = _layout(b, "b")
    op_a, ld_a = _layout(a, "a")
    op_out, ld_out = _layout(out, "out")
    if op_out != _OP_N:
        raise ValueError(f"out must have contiguous rows, got strides {out.strides}")
    return op_b, op_a, n, m, k, ld_b, ld_a, ld_out


def _layout(x, name: str) -> tuple[int, int]:
    """(operation, leading dimension) that makes cuBLAS read row-major x (r, c) as xᵀ: OP_N
    with its row stride when its rows are contiguous, OP_T with its column stride when its
    columns are."""
    rows, columns = x.shape
    step0, step1 = (s // x.itemsize for s in x.strides)
    if (step0 <= 0 and rows > 1) or (step1 <= 0 and columns > 1):
        raise ValueError(f"{name} needs positive strides, got {x.strides}")
    if step1 == 1 or columns == 1:  # x[i, j] at i·step0 + j: column-major xᵀ, leading step0
        return _OP_N, max(step0 if rows > 1 else columns, 1)
    if step0 == 1 or rows == 1:  # x[i, j] at i + j·step1: column-major x, leading step1
        return _OP_T, max(step1 if columns > 1 else rows, 1)
    raise ValueError(f"{name} needs contiguous rows or columns, got strides {x.strides}")


class _Handle:
    """A cuBLAS handle, and the stream it was last set to."""

    def __init__(self):
        self.lib = _load()
        self.pointer = ctypes.c_void_p()
        _check(self.lib.cublasCreate_v2(ctypes.byref(self.pointer)), "cublasCreate_v2")
        self.stream = None
        self.one = {np.float32: ctypes.c_float(1), np.float64: ctypes.c_double(1)}
        self.zero = {np.float32: ctypes.c_float(0), np.float64: ctypes.c_double(0)}

    def gemm(self, op_1, op_2, m, n, k, ld_1, ld_2, ld_out, first, second, out) -> None:
        """Column-major out (m, n) = op_1(first) op_2(second) on CuPy's current stream."""
        import cupy

        stream = cupy.cuda.get_current_stream().ptr
        if stream != self.stream:
            _check(self.lib.cublasSetStream_v2(self.pointer, ctypes.c_void_p(stream)), "stream")
            self.stream = stream
        real = out.dtype.type
        function = self.lib.cublasSgemm_v2 if real is np.float32 else self.lib.cublasDgemm_v2
        status = function(
            self.pointer, op_1, op_2, m, n, k,
            ctypes.byref(self.one[real]), ctypes.c_void_p(first), ld_1,
            ctypes.c_void_p(second), ld_2,
            ctypes.byref(self.zero[real]), ctypes.c_void_p(out.data.ptr), ld_out,
        )  # fmt: skip
        _check(status, "gemm")


def prepare() -> None:
    """Make this thread's handle for the current device now, outside any capture (no-op under
    the simulator)."""
    if not _device.simulated():
        _handle()


def _handle() -> _Handle:
    import cupy

    key = (threading.get_ident(), cupy.cuda.Device().id)
    handle = _handles.get(key)
    if handle is None:
        with _handles_lock:
            handle = _handles[key] = _Handle()
    return handle


def _load() -> ctypes.CDLL:
    """The libcublas CuPy loaded (by its soname, which finds the loaded copy first)."""
    with _library_lock:
        if not _library:
            import cupy
            from cupy_backends.cuda.libs import cublas  # noqa: F401  (loads libcublas)

            major = cupy.cuda.runtime.runtimeGetVersion() // 1000
            library = ctypes.CDLL(f"libcublas.so.{major}")
            for name in ("cublasSgemm_v2", "cublasDgemm_v2"):
                getattr(library, name).argtypes = [
                    ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                    ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                    ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                ]  # fmt: skip
            _library.append(library)
        return _library[0]


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"cuBLAS {what} failed with status {status}")
