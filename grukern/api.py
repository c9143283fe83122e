"""The public entry points: validate once (_arguments), bring x into time-major layout, pick a
backend, call it.

Device arrays (docs/cuda.md): x, h0, dy and dh_n may also be CUDA device arrays (CuPy, or any
object with __cuda_array_interface__, wrapped as CuPy without copying) and params may live on
the device (GRUParams.to_device()); those run only on backend="cuda", which returns CuPy arrays
for a device x and NumPy arrays for a NumPy x.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from grukern import _backends, _device, _segments
from grukern._arguments import (
    TIME_MAJOR,
    check_array,
    check_batch_first,
    check_placement,
    check_sequence_shape,
    checked_lengths,
    contiguous_params,
    initial_state,
    layout_of,
    restore_h,
    restore_y,
    to_time_major,
    upstream_gradients,
)
from grukern.params import GRUParams
from grukern.tape import Gradients, Tape


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
    check_placement(name, params, x_tm, h0_tm)
    y, h_n = module.forward(x_tm, params, h0_tm, checked_lengths(lengths, x_tm.shape, layout))
    return restore_y(y, layout), restore_h(h_n, layout)


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
    check_placement(name, params, x_tm, h0_tm)
    lengths = checked_lengths(lengths, x_tm.shape, layout)
    if segment is None:
        y, h_n, tape = module.forward_train(x_tm, params, h0_tm, lengths)
    else:
        if not isinstance(segment, (int, np.integer)) or isinstance(segment, bool) or segment < 1:
            raise ValueError(f"segment must be None or a positive integer, got {segment!r}")
        y, h_n, tape = _segments.forward_train(module, x_tm, params, h0_tm, lengths, int(segment))
    tape = dataclasses.replace(tape, backend=name, layout=layout)
    return restore_y(y, layout), restore_h(h_n, layout), tape


def backward(tape: Tape, dy: np.ndarray | None = None, dh_n: np.ndarray | None = None) -> Gradients:
    """Gradients of a loss L given dL/dy (y's shape) and/or dL/dh_n (h_n's shape).

    At least one of dy and dh_n must be given; the other counts as zero. Runs on the backend
    that produced the tape. Returns Gradients(x, h0, params) in the layout of the forward call.
    """
    if not isinstance(tape, Tape):
        raise TypeError(
            f"tape must be the Tape returned by forward_train, got {type(tape).__name__}"
        )
    _check_tape_params(tape)
    name, module = _backends.resolve(tape.backend)
    T, B, _ = tape.x.shape
    H = tape.params.hidden_size
    dy_tm, dh_n_tm = upstream_gradients(
        dy, dh_n, dtype=tape.params.dtype, layout=tape.layout, like=tape.x, T=T, B=B,
        features=H, H=H,
    )  # fmt: skip
    check_placement(name, tape.params, dy_tm, dh_n_tm)
    if tape.segment is None:
        grads = module.backward(tape, dy_tm, dh_n_tm)
    else:
        grads = _segments.backward(module, tape, dy_tm, dh_n_tm)
    return Gradients(
        x=restore_y(grads.x, tape.layout), h0=restore_h(grads.h0, tape.layout), params=grads.params
    )


def _prepare(x, params, h0, batch_first):
    """Check every argument of a forward call; return (params, x, h0, layout), time-major."""
    ready = _ready_as_given(x, params, h0, batch_first)
    if ready is not None:
        return ready
    if not isinstance(params, GRUParams):
        raise TypeError(f"params must be a GRUParams, got {type(params).__name__}")
    params.validate()
    check_batch_first(batch_first)
    dtype = params.dtype
    x = _device.adopt("x", x)
    check_array("x", x, dtype, device=True)
    check_sequence_shape("x", x.shape, params.input_size, batch_first, "params.input_size")
    layout = layout_of(x, batch_first)
    x_tm = to_time_major(x, layout)
    h0_tm = initial_state(
        h0, dtype=dtype, layout=layout, like=x, B=x_tm.shape[1], H=params.hidden_size
    )
    return contiguous_params(params), x_tm, h0_tm, layout


def _ready_as_given(x, params, h0, batch_first):
    """(params, x, h0, layout) when the arguments are already what the kernels take: host
    arrays of the params' dtype, x (T, B, I) C-contiguous, h0 None or (B, H) C-contiguous.
    Decided in a few reads, as a one-step call is mostly such overheads; None for anything
    else, which the full checks then take (and name what is wrong)."""
    if not (type(params) is GRUParams and type(x) is np.ndarray and batch_first is False):
        return None
    params.validate()
    w_ih, w_hh = params.w_ih, params.w_hh
    dtype = w_hh.dtype
    if not (
        type(w_hh) is np.ndarray
        and x.dtype == dtype
        and x.ndim == 3
        and x.shape[2] == w_ih.shape[1]
        and x.flags.c_contiguous
    ):
        return None
    B, H = x.shape[1], w_hh.shape[1]
    if h0 is None:
        h0 = np.zeros((B, H), dtype)
    elif not (
        type(h0) is np.ndarray
        and h0.dtype == dtype
        and h0.shape == (B, H)
        and h0.flags.c_contiguous
    ):
        return None
    return contiguous_params(params), x, h0, TIME_MAJOR


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
