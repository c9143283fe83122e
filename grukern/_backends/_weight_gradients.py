"""The weight gradients of BPTT: sums over every valid step of products of the saved states and
the pre-activation gradients (docs/math.md §5). The NumPy reference and the CUDA backend share
this code: written with array operators only, it runs on NumPy and on CuPy arrays alike (cuBLAS
then does the products).
"""

from __future__ import annotations

import numpy as np

from grukern.params import GRUParams


def weight_gradients(x, h, gates, da, dgh, params: GRUParams, rows) -> GRUParams:
    """dL/dW and dL/db from the pre-activation gradients of every step.

    x (T, B, I), h (T+1, B, H) and gates (T, B, 3H) as the tape keeps them; da (T, B, 3H) =
    dL/d(gi_t), the input side; dgh (T, B, 3H) = dL/d(recurrent pre-activation), equal to da
    for reset_after=False. Every sum Σ_t runs over the rows (t, b) of the flattened steps that
    `rows` selects: the valid ones, t < lengths[b] (a mask or an index array where the arrays
    live), or slice(None) for all of them. A padded x_t is never multiplied, not even by zero.
    """
    H = params.hidden_size
    da, dgh = flat(da)[rows], flat(dgh)[rows]  #                                    (rows, 3H)
    x = flat(x)[rows]  # x_t                                                        (rows, I)
    h_prev = flat(h[:-1])[rows]  # h_{t-1}                                          (rows, H)
    if params.reset_after:
        dw_hh = dgh.T @ h_prev  # dL/dW_hh = Σ_t dgh_tᵀ h_{t-1}                    (3H, H)
    else:
        rh_prev = flat(gates[..., :H])[rows] * h_prev  # r_t ⊙ h_{t-1}             (rows, H)
        dw_hh = np.concatenate(  # NumPy's concatenate dispatches to CuPy's for CuPy arrays
            [
                dgh[:, : 2 * H].T @ h_prev,  # dL/dW_h[rz] = Σ_t dgh_rzᵀ h_{t-1}
                dgh[:, 2 * H :].T @ rh_prev,  # dL/dW_hn = Σ_t da_nᵀ (r ⊙ h_{t-1})
            ]
        )
    return GRUParams(
        w_ih=da.T @ x,  # dL/dW_ih = Σ_t da_tᵀ x_t                                  (3H, I)
        w_hh=dw_hh,
        b_ih=da.sum(axis=0),  # dL/db_ih = Σ_t Σ_b da_t                                (3H,)
        b_hh=dgh.sum(axis=0),  # dL/db_hh = Σ_t Σ_b dgh_t                              (3H,)
        reset_after=params.reset_after,
    )


def flat(a):
    """(T, B, k) -> (T·B, k); a view when a is contiguous."""
    return a.reshape(-1, a.shape[-1])
