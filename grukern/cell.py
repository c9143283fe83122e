"""grukern.GRUCell: one step at a time, the streaming API (audio frames, sensor ticks, tokens).

    cell = grukern.GRUCell(params)            # checks and prepares the weights once
    h = None                                  # zeros at the first step
    for x_t in stream:                        # x_t (B, I), or (I,) for one sequence
        h = cell(x_t, h)                      # h_t (B, H), or (H,)

    h = np.zeros((B, H), np.float32)
    for x_t in stream:
        cell(x_t, h, out=h)                   # in place: no allocation per step

Each call checks the shapes and dtypes of what it is given (a few attribute reads; a wrong shape
is still a clear error) and computes h_t = GRU(x_t, h_{t-1}) as grukern.forward does for T = 1,
to rounding, on any backend. On the numba backend, a few rows take a lean kernel with nothing
around it (_numba_cell); more rows take the backend's forward. The cell reads the
params' arrays at every call, so updating them in place (training) takes effect at the next
step; params that are not C-contiguous are copied once, at construction.
"""

from __future__ import annotations

import numpy as np

from grukern import _backends, _device
from grukern._arguments import check_array, check_placement, contiguous, contiguous_params
from grukern.params import GRUParams


class GRUCell:
    """One GRU step per call with fixed params: cell(x_t, h=None, *, out=None) -> h_t."""

    def __init__(self, params: GRUParams, *, backend: str = "auto"):
        if not isinstance(params, GRUParams):
            raise TypeError(f"params must be a GRUParams, got {type(params).__name__}")
        params.validate()
        self.backend, self._module = _backends.resolve(backend)
        self.params = contiguous_params(params)
        self.input_size, self.hidden_size = params.input_size, params.hidden_size
        self.dtype = params.dtype
        if self.backend == "numba":
            from grukern._backends import _numba_cell

            self._lean, self._lean_rows = _numba_cell.run, _numba_cell.LEAN_ROWS
        else:
            self._lean = None

    def __repr__(self) -> str:
        return f"grukern.GRUCell({self.params!r}, backend={self.backend!r})"

    def __call__(self, x, h=None, *, out=None):
        """h_t for x_t (B, I) or (I,) and h = h_{t-1} (B, H) or (H,), zeros when None. out, if
        given, receives h_t (h's shape; it may be h itself) and is returned."""
        if not self._plain(x) or x.ndim > 2 or x.shape[-1] != self.input_size:
            x = self._checked("x", x, self.input_size)
        H = self.hidden_size
        state_shape = (H,) if x.ndim == 1 else (x.shape[0], H)
        xp = np if type(x) is np.ndarray else _device.module_of(x)  # where x lives
        if h is None:
            h = xp.zeros(state_shape, self.dtype)
        elif not self._plain(h) or h.shape != state_shape:
            h = self._checked("h", h, H, state_shape)
        if out is None:
            out = xp.empty(state_shape, self.dtype)
        elif not self._plain(out) or out.shape != state_shape:
            out = self._checked("out", out, H, state_shape, written=True)
        if x.ndim == 1:
            x, h_rows, out_rows = x[None], h[None], out[None]
        else:
            h_rows, out_rows = h, out
        if self._lean is not None and x.shape[0] <= self._lean_rows:
            self._lean(x, h_rows, self.params, out_rows)
        else:
            _, h_n = self._module.forward(x[None], self.params, h_rows)
            out_rows[...] = h_n
        return out

    def _plain(self, a) -> bool:
        """a is a C-contiguous NumPy array of the params' dtype: what most calls pass, checked
        in a few attribute reads (anything else goes through _checked)."""
        return type(a) is np.ndarray and a.dtype == self.dtype and a.flags.c_contiguous

    def _checked(self, name: str, a, features: int, shape=None, *, written: bool = False):
        """a, C-contiguous, after the checks grukern.forward makes: type, dtype, shape, and
        where it lives. An array the cell writes must be C-contiguous already."""
        a = _device.adopt(name, a)
        check_array(name, a, self.dtype, device=True)
        check_placement(self.backend, self.params, a)
        if shape is None:
            if a.ndim not in (1, 2) or a.shape[-1] != features:
                raise ValueError(
                    f"{name} must have shape (B, {features}) or ({features},), got {a.shape}"
                )
        elif a.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
        if written and not a.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous: the cell writes h_t into it")
        return contiguous(a)
