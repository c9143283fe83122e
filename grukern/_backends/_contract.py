"""What a backend is: the functions the API and the layers call, and their arguments.

Every backend module implements one of two contracts, and tests/test_backend_contract.py checks
each module's signatures against it:

    Plain:  forward, forward_train and backward of one direction, in time order. The NumPy
            reference and the CUDA backend implement this; `_backends.resolve` wraps them in
            _directions.ByCopies, which adds the rest by copies.
    Full:   Plain plus what a bidirectional layer asks: reverse=True runs each sequence's valid
            part backwards in time, out=Slot(...) writes y into one direction's half of the
            layer's output, and backward takes dy as such a Slot (_directions.py). The Numba
            backend implements this in its kernels.

Arguments arrive checked by the API (grukern.api): time-major arrays of the params' dtype,
NumPy or (CUDA backend) CuPy, C-contiguous, except that a full backend's sequence arrays (x, dy,
and a Slot's array) may be views of batch-major memory, a batch_first caller's arrays in place,
which it reads and writes in that order (ByCopies makes them C-contiguous for a plain one):

    x (T, B, I), h0 (B, H), lengths (B,) int64 or None (sequence b runs steps 0..lengths[b]-1),
    dy (T, B, H), dh_n (B, H); params a GRUParams; tape the Tape its own forward_train made.

Returns: forward -> (y (T, B, H), h_n (B, H)); forward_train -> (y, h_n, Tape); backward ->
Gradients. Inputs are never modified. A backend module's other names are private (_name).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from grukern._backends._directions import Slot
from grukern.params import GRUParams
from grukern.tape import Gradients, Tape


class PlainBackend(Protocol):
    """One direction, in time order."""

    def forward(
        self, x: np.ndarray, params: GRUParams, h0: np.ndarray, lengths: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def forward_train(
        self, x: np.ndarray, params: GRUParams, h0: np.ndarray, lengths: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, Tape]: ...

    def backward(self, tape: Tape, dy: np.ndarray, dh_n: np.ndarray) -> Gradients: ...


class Backend(Protocol):
    """What `_backends.resolve` returns: either direction, y into a Slot, dy from one."""

    def forward(
        self,
        x: np.ndarray,
        params: GRUParams,
        h0: np.ndarray,
        lengths: np.ndarray | None = None,
        reverse: bool = False,
        out: Slot | None = None,
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def forward_train(
        self,
        x: np.ndarray,
        params: GRUParams,
        h0: np.ndarray,
        lengths: np.ndarray | None = None,
        reverse: bool = False,
        out: Slot | None = None,
    ) -> tuple[np.ndarray, np.ndarray, Tape]: ...

    def backward(self, tape: Tape, dy: np.ndarray | Slot, dh_n: np.ndarray) -> Gradients: ...
