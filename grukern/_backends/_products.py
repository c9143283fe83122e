"""The large matrix products of a GRU, shared by the CPU backends (NumPy/BLAS, all threads).

None of these depends on the time recurrence, so each is one big GEMM over all T·B rows:
the input projection before the time loop, and x's and the weights' gradients after the
reversed loop (docs/math.md §5–6). Shapes are time-major: x (T, B, I), da (T, B, 3H).
"""

from __future__ import annotations

import numpy as np

from grukern.params import GRUParams
from grukern.tape import Tape


def input_projection(x: np.ndarray, params: GRUParams) -> np.ndarray:
    """gi_t = W_ih x_t + b_ih for every step at once: one (T·B, I) @ (I, 3H) product."""
    T, B, _ = x.shape
    gi = _flat(x) @ params.w_ih.T  # one BLAS call; a 3-d matmul would make T small ones
    gi += params.b_ih
    return gi.reshape(T, B, -1)  # (T, B, 3H)


def input_gradient(da: np.ndarray, params: GRUParams) -> np.ndarray:
    """dL/dx_t = da_t W_ih for every step at once                                (T, B, I)."""
    T, B, _ = da.shape
    return (_flat(da) @ params.w_ih).reshape(T, B, -1)


def weight_gradients(tape: Tape, da: np.ndarray, dgh: np.ndarray) -> GRUParams:
    """dL/dW and dL/db from the pre-activation gradients of every step.

    da (T, B, 3H) = dL/d(gi_t), the input side; dgh (T, B, 3H) = dL/d(recurrent pre-activation)
    (for reset_after=False dgh equals da; docs/math.md §5).
    """
    params = tape.params
    H = params.hidden_size
    h_prev = _flat(tape.h[:-1])  # h_{t-1} for every step                    (T·B, H)
    if params.reset_after:
        dw_hh = _flat(dgh).T @ h_prev  # dL/dW_hh = Σ_t dgh_tᵀ h_{t-1}          (3H, H)
    else:
        rh_prev = _flat(tape.gates[..., :H]) * h_prev  # r_t ⊙ h_{t-1}             (T·B, H)
        dw_hh = np.concatenate(
            [
                _flat(dgh[..., : 2 * H]).T @ h_prev,  # dL/dW_h[rz] = Σ_t dgh_rzᵀ h_{t-1}
                _flat(dgh[..., 2 * H :]).T @ rh_prev,  # dL/dW_hn = Σ_t da_nᵀ (r ⊙ h_{t-1})
            ]
        )
    return GRUParams(
        w_ih=_flat(da).T @ _flat(tape.x),  # dL/dW_ih = Σ_t da_tᵀ x_t            (3H, I)
        w_hh=dw_hh,
        b_ih=_flat(da).sum(axis=0),  # dL/db_ih = Σ_t Σ_b da_t                    (3H,)
        b_hh=_flat(dgh).sum(axis=0),  # dL/db_hh = Σ_t Σ_b dgh_t                  (3H,)
        reset_after=params.reset_after,
    )


def _flat(a: np.ndarray) -> np.ndarray:
    """(T, B, k) -> (T·B, k); a view when a is contiguous."""
    return a.reshape(-1, a.shape[-1])
