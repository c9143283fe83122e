"""What a training forward pass keeps for backpropagation through time, and what BPTT returns."""

from __future__ import annotations

import dataclasses

import numpy as np

from grukern._device import describe
from grukern.params import GRUParams


@dataclasses.dataclass(frozen=True)
class Layout:
    """How the caller laid out x (the backends always see time-major (T, B, I))."""

    batch_first: bool = False  # x was (B, T, I)
    unbatched: bool = False  # x was (T, I): one sequence, no batch axis


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Tape:
    """Everything backward() needs, saved by forward_train().

    Per time step t (1 ≤ t ≤ T) the tape keeps the state h_t, the gate activations
    r_t, z_t, n_t and, for reset_after=True, the recurrent candidate term
    hn_t = W_hn h_{t-1} + b_hn (for reset_after=False backward recomputes r_t ⊙ h_{t-1}).

        x      (T, B, I)    time-major input, in the caller's time order; referenced, not
                            copied (do not modify it before backward)
        h      (T+1, B, H)  h[0] = h0, h[t] = h_t
        gates  (T, B, 3H)   [r_t | z_t | n_t] along the last axis
        hn     (T, B, H)    W_hn h_{t-1} + b_hn; None when reset_after=False
        params              the GRUParams of the forward pass (referenced, not copied)
        lengths (B,)        int64 sequence lengths, or None when every row runs all T steps.
                            At a padded step (t ≥ lengths[b]) row b's state is held,
                            h[t+1, b] = h[t, b], and its gates are unspecified (never read).
        reverse             whether step t of row b read x[lengths[b] - 1 - t, b]
                            (_backends/_directions.py); h, gates and hn are in step order

    Memory owned by the tape, in bytes, with s = itemsize (4 for float32, 8 for float64):

        reset_after=True:   s · B · H · (5T + 1)
        reset_after=False:  s · B · H · (4T + 1)

    plus x when forward_train had to make it time-major (batch_first input): s · T · B · I.

    With forward_train(..., segment=k) the tape keeps only h (gates and hn are None), owning
    s · B · H · (T + 1) bytes; backward recomputes the gates k steps at a time (_segments).
    `nbytes` reports what the tape owns, excluding x and params.
    """

    x: np.ndarray
    h: np.ndarray
    gates: np.ndarray | None
    hn: np.ndarray | None
    params: GRUParams
    backend: str = ""
    layout: Layout = Layout()
    segment: int | None = None  # steps per recomputed segment, when gates are not kept
    lengths: np.ndarray | None = None
    reverse: bool = False

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays saved for backward (h, gates, hn), excluding x and params."""
        return sum(a.nbytes for a in (self.h, self.gates, self.hn) if a is not None)

    def __repr__(self) -> str:
        T, B, I = self.x.shape
        return (
            f"Tape(T={T}, B={B}, I={I}, H={self.h.shape[2]}, dtype={self.h.dtype}, "
            f"backend={self.backend!r}, nbytes={self.nbytes}, segment={self.segment}, "
            f"lengths={'None' if self.lengths is None else 'given'}, reverse={self.reverse})"
        )


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Gradients:
    """Gradients of a scalar loss with respect to every input of a GRU forward pass.

    x has the shape and layout of the forward's x, h0 that of its h0 ((B, H), or (H,) for an
    unbatched x), and params is a GRUParams holding dL/dw_ih, dL/dw_hh, dL/db_ih, dL/db_hh.
    """

    x: np.ndarray
    h0: np.ndarray
    params: GRUParams

    def __repr__(self) -> str:
        return (
            f"Gradients(x={describe(self.x)}, h0={describe(self.h0)}, params=dL/d {self.params!r})"
        )
