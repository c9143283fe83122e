"""Argument checks and layouts shared by every entry point (grukern.api, grukern.GRU,
grukern.torch): each check is written once, here.

The backends see only checked, C-contiguous, time-major arrays of the params' dtype:
x (T, B, I), h0 (B, H), dy (T, B, H), dh_n (B, H). Nothing here copies more than a layout
change needs, casts a dtype, or writes into a caller's array. Errors name the argument, the
expected and the actual value.
"""

from __future__ import annotations

import numpy as np

from grukern import _device
from grukern.params import GRUParams, check_float_dtype
from grukern.tape import Layout


def check_dropout(dropout) -> float:
    """dropout as a float in [0, 1] (1 drops every output between layers, as torch's does)."""
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating)):
        raise TypeError(f"dropout must be a float in [0, 1], got {dropout!r}")
    if not 0 <= dropout <= 1:
        raise ValueError(f"dropout must lie in [0, 1], got {dropout!r}")
    return float(dropout)


def initial_state(h0, *, dtype, layout: Layout, like, B: int, H: int, states: int | None = None):
    """h0 checked and made (B, H), or (states, B, H) for a layer's stacked states; zeros where
    `like` lives when None. Its caller shape is h_n's: (B, H) or (H,), after `states` if given."""
    stack = () if states is None else (states,)
    if h0 is None:
        if type(like) is np.ndarray:  # the common case, without the device lookups
            return np.zeros((*stack, B, H), dtype)
        return _device.zeros((*stack, B, H), dtype, like=like)
    if (  # the common case, in a few reads: a batched host state as the kernels take it
        type(h0) is np.ndarray
        and h0.dtype == dtype
        and h0.shape == (*stack, B, H)
        and not layout.unbatched
        and h0.flags.c_contiguous
    ):
        return h0
    h0 = _device.adopt("h0", h0)
    check_array("h0", h0, dtype, (*stack, *caller_shape(None, B, H, layout)), device=True)
    return contiguous(h0.reshape(*stack, B, H))


def upstream_gradients(dy, dh_n, *, dtype, layout: Layout, like, T: int, B: int, features: int,
                       H: int, states: int | None = None):  # fmt: skip
    """dL/dy and dL/dh_n checked and made time-major; None counts as zeros (not both).

    dy has y's shape in the caller's layout with `features` per step -> (T, B, features).
    dh_n has h_n's shape: (B, H) or (H,) -> (B, H); with `states` (a layer's stacked states)
    (states, B, H) or (states, H) -> (states, B, H). New zero arrays are made where `like` lives.
    """
    if dy is None and dh_n is None:
        raise ValueError("backward needs dy or dh_n (or both); both are None")
    stack = () if states is None else (states,)
    if dy is None:
        dy_tm = _device.zeros((T, B, features), dtype, like=like)
    else:
        dy = _device.adopt("dy", dy)
        check_array("dy", dy, dtype, caller_shape(T, B, features, layout), device=True)
        dy_tm = to_time_major(dy, layout)
    if dh_n is None:
        dh_n_tm = _device.zeros((*stack, B, H), dtype, like=like)
    else:
        dh_n = _device.adopt("dh_n", dh_n)
        check_array("dh_n", dh_n, dtype, (*stack, *caller_shape(None, B, H, layout)), device=True)
        dh_n_tm = contiguous(dh_n.reshape(*stack, B, H))
    return dy_tm, dh_n_tm


def check_sequence_shape(name, shape, input_size, batch_first, size_name) -> None:
    """A sequence is (T, B, I), (B, T, I) with batch_first, or (T, I) unbatched, with I equal
    to input_size (called size_name in the message)."""
    shape = tuple(shape)
    if len(shape) not in (2, 3):
        order = "B, T" if batch_first else "T, B"
        raise ValueError(
            f"{name} must have 3 dimensions ({order}, I), or 2 (T, I) for one unbatched "
            f"sequence; got shape {shape}"
        )
    if shape[-1] != input_size:
        raise ValueError(
            f"{name} has {shape[-1]} features (last axis of shape {shape}) but {size_name} is "
            f"{input_size}"
        )


def check_batch_first(batch_first) -> None:
    if not isinstance(batch_first, (bool, np.bool_)):
        raise TypeError(f"batch_first must be a bool, got {type(batch_first).__name__}")


def layout_of(x: np.ndarray, batch_first: bool) -> Layout:
    """The Layout of a 2-d (unbatched) or 3-d x; batch_first matters only for 3-d."""
    return _LAYOUTS[bool(batch_first) and x.ndim == 3, x.ndim == 2]


def check_array(name, value, dtype, expected_shape=None, *, device=False):
    """Check a NumPy array argument; device=True also accepts a CuPy array (adopted before)."""
    if type(value) is np.ndarray and value.dtype == dtype:  # the common case, in two reads
        if expected_shape is not None and value.shape != expected_shape:
            raise ValueError(f"{name} must have shape {expected_shape}, got {value.shape}")
        return
    if device and _device.is_device_array(value):
        pass
    elif not isinstance(value, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy.ndarray, got {type(value).__name__} "
            "(convert it with np.asarray(..., dtype=params.dtype))"
        )
    check_dtype(name, value.dtype, dtype)
    if expected_shape is not None and value.shape != expected_shape:
        raise ValueError(f"{name} must have shape {expected_shape}, got {value.shape}")


def check_dtype(name, actual, expected) -> None:
    """An array argument's dtype must be a float dtype equal to the params' dtype."""
    check_float_dtype(name, actual)
    if actual != expected:
        raise TypeError(
            f"{name} has dtype {actual} but the params have dtype {expected}; convert one of "
            "them explicitly (grukern never casts silently)"
        )


def checked_lengths(lengths, x_shape: tuple[int, int, int], layout: Layout) -> np.ndarray | None:
    """lengths as the backends take it, a new C-contiguous int64 array (B,), or None."""
    if lengths is None:
        return None
    if layout.unbatched:
        raise ValueError(
            "lengths is for a padded batch; x is one unbatched sequence of shape "
            f"{x_shape[::2]} (slice it to its length instead)"
        )
    if not isinstance(lengths, np.ndarray):
        raise TypeError(
            f"lengths must be a numpy.ndarray of integers, got {type(lengths).__name__} "
            "(convert it with np.asarray(..., dtype=np.int64))"
        )
    if lengths.dtype.kind not in "iu":
        raise TypeError(f"lengths must have an integer dtype, got {lengths.dtype}")
    T, B, _ = x_shape
    if lengths.shape != (B,):
        raise ValueError(f"lengths must have shape ({B},) (one per batch row), got {lengths.shape}")
    if B and (lengths.min() < 0 or lengths.max() > T):
        raise ValueError(
            f"lengths must lie in [0, T] = [0, {T}], got values from {lengths.min()} to "
            f"{lengths.max()}"
        )
    return lengths.astype(np.int64)  # a copy: the tape keeps it


def check_placement(backend: str, params: GRUParams, *arrays) -> None:
    """Device arrays and device params run only on the CUDA backend."""
    if backend == "cuda" or not _device.device_arrays_possible():
        return
    if params.on_device or any(_device.is_device_array(a) for a in arrays):
        raise TypeError(
            f"CUDA device arrays and device params run only on backend='cuda'; backend "
            f"{backend!r} needs NumPy arrays (GRUParams.to_host(), cupy.asnumpy(...))"
        )


_LAYOUTS = {
    (batch_first, unbatched): Layout(batch_first, unbatched)
    for batch_first in (False, True)
    for unbatched in (False, True)
}
TIME_MAJOR = _LAYOUTS[False, False]


def contiguous(a: np.ndarray) -> np.ndarray:
    """a itself when C-contiguous, else a C-contiguous copy (NumPy or CuPy, where a lives)."""
    return a if a.flags.c_contiguous else a.copy(order="C")


def contiguous_params(params: GRUParams) -> GRUParams:
    """params itself when its arrays are C-contiguous, else a GRUParams of contiguous copies."""
    w_ih, w_hh, b_ih, b_hh = arrays = params.arrays()
    if (  # spelled out: a one-step call is mostly such overheads
        w_ih.flags.c_contiguous
        and w_hh.flags.c_contiguous
        and b_ih.flags.c_contiguous
        and b_hh.flags.c_contiguous
    ):
        return params
    return GRUParams(*(contiguous(a) for a in arrays), reset_after=params.reset_after)


def to_time_major(a: np.ndarray, layout: Layout) -> np.ndarray:
    """(T, B, k), (B, T, k) or (T, k) -> (T, B, k). A batch-first NumPy array comes back as its
    transposed view, which the Numba kernels read and write in place (and the other backends
    copy, _directions.ByCopies); anything else C-contiguous, copied only if needed."""
    if layout.unbatched:
        a = a[:, None, :]
    elif layout.batch_first:
        a = a.transpose(1, 0, 2)
        if not _device.is_device_array(a):
            return a
    return contiguous(a)


def is_batch_major(a) -> bool:
    """Whether a sequence array (T, B, ...) is a view of batch-major memory (B, T, ...), as
    to_time_major returns a batch_first caller's array."""
    return not a.flags.c_contiguous and a.swapaxes(0, 1).flags.c_contiguous


def sequence_empty(shape: tuple, dtype, like):
    """An uninitialised (T, B, ...) array where `like` lives, laid out in like's memory order (a
    batch-major one the kernels fill in place, and restore_y returns without a copy)."""
    return in_memory_order(shape, is_batch_major(like), lambda s: _device.empty(s, dtype, like))


def in_memory_order(shape: tuple, batch_major: bool, empty):
    """A (T, B, ...) array from the allocator empty(shape): with batch_major, the transposed
    view of an array empty((B, T, ...))."""
    if not batch_major:
        return empty(shape)
    T, B, *rest = shape
    return empty((B, T, *rest)).swapaxes(0, 1)


def caller_shape(T: int | None, B: int, k: int, layout: Layout) -> tuple[int, ...]:
    """Shape in the caller's layout of a sequence (T given) or of a state (T None), k features."""
    if T is None:
        return (k,) if layout.unbatched else (B, k)
    if layout.unbatched:
        return (T, k)
    return (B, T, k) if layout.batch_first else (T, B, k)


def restore_y(y_tm: np.ndarray, layout: Layout) -> np.ndarray:
    """(T, B, k) -> the caller's layout, C-contiguous: (T, B, k), (B, T, k) or (T, k)."""
    if layout.unbatched:
        return y_tm[:, 0, :]
    if layout.batch_first:
        return contiguous(y_tm.transpose(1, 0, 2))  # no copy if the kernels wrote it so
    return y_tm


def restore_h(h_tm: np.ndarray, layout: Layout) -> np.ndarray:
    """(B, H) -> (H,) for an unbatched call, else unchanged."""
    return h_tm[0] if layout.unbatched else h_tm
