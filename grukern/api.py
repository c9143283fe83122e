"""The public entry points: validate once, bring x into time-major layout, pick a backend, call it.

Backends see only checked, C-contiguous, time-major arrays of the params' dtype:
x (T, B, I), h0 (B, H), dy (T, B, H), dh_n (B, H). Nothing here copies more than a layout
change needs, casts a dtype, or writes into a caller's array.

Device arrays (docs/cuda.md): x, h0, dy and dh_n may also be CUDA device arrays (CuPy, or any
object with __cuda_array_interface__, wrapped as CuPy without copying) and params may live on
the device (GRUParams.to_device()); those run only on backend="cuda", which returns CuPy arrays
for a device x and NumPy arrays for a NumPy x.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from grukern import _backends, _device, _segments
from grukern.params import GRUParams, check_float_dtype
from grukern.tape import Gradients, Layout, Tape


def forward(
    x: np.ndarray,
    params: GRUParams,
    h0: np.ndarray | None = None,
    *,
    backend: str = "auto",
    batch_first: bool = False,
    lengths: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run a GRU over x. Returns y (the state at every step) and h_n (the final state).

    x: (T, B, I), or (B, T, I) with batch_first=True, or (T, I) for one unbatched sequence.
    h0: (B, H), or (H,) for an unbatched x; zeros when None.
    lengths: None, or an integer array (B,) with 0 ≤ lengths[b] ≤ T for a padded batch:
    sequence b uses steps 0..lengths[b]-1, its outputs after them are exactly zero, and h_n[b]
    is its state after its own last step (h0[b] when lengths[b] = 0). Not for an unbatched x.
    y has x's layout with H features: (T, B, H), (B, T, H) or (T, H); h_n has h0's shape.
    """
    name, module = _backends.resolve(backend)
    params, x_tm, h0_tm, layout = _prepare(x, params, h0, batch_first)
    _check_placement(name, params, x_tm, h0_tm)
    y, h_n = module.forward(x_tm, params, h0_tm, _checked_lengths(lengths, x_tm.shape, layout))
    return _restore_y(y, layout), _restore_h(h_n, layout)


def forward_train(
    x: np.ndarray,
    params: GRUParams,
    h0: np.ndarray | None = None,
    *,
    backend: str = "auto",
    batch_first: bool = False,
    lengths: np.ndarray | None = None,
    segment: int | None = None,
) -> tuple[np.ndarray, np.ndarray, Tape]:
    """As forward, and also the Tape that backward() needs.

    segment=None keeps every step's gates: s·B·H·(5T+1) bytes (Tape). segment=k keeps only the
    states, s·B·H·(T+1) bytes, and backward recomputes the gates k steps at a time: about 5x
    less memory between forward and backward for one extra forward pass (grukern._segments).
    """
    name, module = _backends.resolve(backend)
    params, x_tm, h0_tm, layout = _prepare(x, params, h0, batch_first)
    _check_placement(name, params, x_tm, h0_tm)
    lengths = _checked_lengths(lengths, x_tm.shape, layout)
    if segment is None:
        y, h_n, tape = module.forward_train(x_tm, params, h0_tm, lengths)
    else:
        if not isinstance(segment, (int, np.integer)) or isinstance(segment, bool) or segment < 1:
            raise ValueError(f"segment must be None or a positive integer, got {segment!r}")
        y, h_n, tape = _segments.forward_train(module, x_tm, params, h0_tm, lengths, int(segment))
    tape = dataclasses.replace(tape, backend=name, layout=layout)
    return _restore_y(y, layout), _restore_h(h_n, layout), tape


def backward(tape: Tape, dy: np.ndarray | None = None, dh_n: np.ndarray | None = None) -> Gradients:
    """Gradients of a loss L given dL/dy (y's shape) and/or dL/dh_n (h_n's shape).

    At least one of dy and dh_n must be given; the other counts as zero. Runs on the backend
    that produced the tape. Returns Gradients(x, h0, params) in the layout of the forward call.
    """
    if not isinstance(tape, Tape):
        raise TypeError(
            f"tape must be the Tape returned by forward_train, got {type(tape).__name__}"
        )
    if dy is None and dh_n is None:
        raise ValueError("backward needs dy or dh_n (or both); both are None")
    _check_tape_params(tape)
    name, module = _backends.resolve(tape.backend)
    T, B, _ = tape.x.shape
    H = tape.params.hidden_size
    dtype = tape.params.dtype
    layout = tape.layout
    if dy is None:
        dy_tm = _device.zeros((T, B, H), dtype, like=tape.x)
    else:
        dy = _device.adopt("dy", dy)
        _check_array("dy", dy, dtype, _caller_shape(T, B, H, layout), device=True)
        dy_tm = _to_time_major(dy, layout)
    if dh_n is None:
        dh_n_tm = _device.zeros((B, H), dtype, like=tape.x)
    else:
        dh_n = _device.adopt("dh_n", dh_n)
        _check_array("dh_n", dh_n, dtype, _caller_shape(None, B, H, layout), device=True)
        dh_n_tm = _contiguous(dh_n.reshape(B, H))
    _check_placement(name, tape.params, dy_tm, dh_n_tm)
    if tape.segment is None:
        grads = module.backward(tape, dy_tm, dh_n_tm)
    else:
        grads = _segments.backward(module, tape, dy_tm, dh_n_tm)
    return Gradients(
        x=_restore_y(grads.x, layout), h0=_restore_h(grads.h0, layout), params=grads.params
    )


def _prepare(x, params, h0, batch_first):
    """Check every argument of a forward call; return (params, x, h0, layout), time-major."""
    if not isinstance(params, GRUParams):
        raise TypeError(f"params must be a GRUParams, got {type(params).__name__}")
    params.validate()
    check_batch_first(batch_first)
    dtype = params.dtype
    x = _device.adopt("x", x)
    _check_array("x", x, dtype, device=True)
    check_sequence_shape("x", x.shape, params.input_size, batch_first, "params.input_size")
    layout = layout_of(x, batch_first)
    x_tm = _to_time_major(x, layout)
    B, H = x_tm.shape[1], params.hidden_size
    if h0 is None:
        h0_tm = _device.zeros((B, H), dtype, like=x)
    else:
        h0 = _device.adopt("h0", h0)
        _check_array("h0", h0, dtype, _caller_shape(None, B, H, layout), device=True)
        h0_tm = _contiguous(h0.reshape(B, H))
    return _contiguous_params(params), x_tm, h0_tm, layout


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


def _check_array(name, value, dtype, expected_shape=None, *, device=False):
    """Check a NumPy array argument; device=True also accepts a CuPy array (adopted before)."""
    if device and _device.is_device_array(value):
        pass
    elif not isinstance(value, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy.ndarray, got {type(value).__name__} "
            "(convert it with np.asarray(..., dtype=params.dtype))"
        )
    check_float_dtype(name, value.dtype)
    if value.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {value.dtype} but the params have dtype {dtype}; convert one of "
            "them explicitly (grukern never casts silently)"
        )
    if expected_shape is not None and value.shape != expected_shape:
        raise ValueError(f"{name} must have shape {expected_shape}, got {value.shape}")


def _checked_lengths(lengths, x_shape: tuple[int, int, int], layout: Layout) -> np.ndarray | None:
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


def _check_placement(backend: str, params: GRUParams, *arrays) -> None:
    """Device arrays and device params run only on the CUDA backend."""
    if backend == "cuda" or not _device.device_arrays_possible():
        return
    if params.on_device or any(_device.is_device_array(a) for a in arrays):
        raise TypeError(
            f"CUDA device arrays and device params run only on backend='cuda'; backend "
            f"{backend!r} needs NumPy arrays (GRUParams.to_host(), cupy.asnumpy(...))"
        )


def _check_tape_params(tape: Tape) -> None:
    """The params a tape references must still have the shapes of its forward pass."""
    tape.params.validate()
    I = tape.x.shape[2]
    H = tape.h.shape[2]
    if (tape.params.input_size, tape.params.hidden_size) != (I, H):
        raise ValueError(
            f"tape.params changed shape since forward_train: the tape was recorded with "
            f"input_size={I}, hidden_size={H}, the params now have "
            f"input_size={tape.params.input_size}, hidden_size={tape.params.hidden_size}"
        )


_LAYOUTS = {
    (batch_first, unbatched): Layout(batch_first, unbatched)
    for batch_first in (False, True)
    for unbatched in (False, True)
}


def _contiguous(a: np.ndarray) -> np.ndarray:
    """a itself when C-contiguous, else a C-contiguous copy (NumPy or CuPy, where a lives)."""
    return a if a.flags.c_contiguous else a.copy(order="C")


def _contiguous_params(params: GRUParams) -> GRUParams:
    arrays = params.arrays()
    if all(a.flags.c_contiguous for a in arrays):
        return params
    return GRUParams(*(_contiguous(a) for a in arrays), reset_after=params.reset_after)


def _to_time_major(a: np.ndarray, layout: Layout) -> np.ndarray:
    """(T, B, k), (B, T, k) or (T, k) -> C-contiguous (T, B, k); copies only if needed."""
    if layout.unbatched:
        a = a[:, None, :]
    elif layout.batch_first:
        a = a.transpose(1, 0, 2)
    return _contiguous(a)


def _caller_shape(T: int | None, B: int, k: int, layout: Layout) -> tuple[int, ...]:
    """Shape in the caller's layout of a sequence (T given) or of a state (T None), k features."""
    if T is None:
        return (k,) if layout.unbatched else (B, k)
    if layout.unbatched:
        return (T, k)
    return (B, T, k) if layout.batch_first else (T, B, k)


def _restore_y(y_tm: np.ndarray, layout: Layout) -> np.ndarray:
    """(T, B, k) -> the caller's layout, C-contiguous: (T, B, k), (B, T, k) or (T, k)."""
    if layout.unbatched:
        return y_tm[:, 0, :]
    if layout.batch_first:
        return y_tm.transpose(1, 0, 2).copy(order="C")
    return y_tm


def _restore_h(h_tm: np.ndarray, layout: Layout) -> np.ndarray:
    """(B, H) -> (H,) for an unbatched call, else unchanged."""
    return h_tm[0] if layout.unbatched else h_tm
