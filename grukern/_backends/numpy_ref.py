"""The NumPy reference backend: the readable specification of grukern's GRU.

Every fast backend is tested against this module, and this module is tested against PyTorch,
Keras, ONNX Runtime and finite differences. It is laid out as the fast kernels are:

    forward:  one input GEMM for all steps -> time loop (recurrent GEMM + gate math) -> tape
    backward: reversed time loop (gate gradients + recurrent GEMM) -> weight GEMMs over all steps
              (_weight_gradients.py, shared with the CUDA backend)

Notation (docs/math.md derives every line; gate rows are stacked [r; z; n]):

    gi_t = W_ih x_t + b_ih                               input projection, (B, 3H) per step
    gh_t = W_hh h_{t-1} + b_hh                           recurrent projection (reset_after=True)
    r_t  = σ(gi_r + gh_r)        z_t = σ(gi_z + gh_z)
    n_t  = tanh(gi_n + r_t ⊙ hn_t),  hn_t = W_hn h_{t-1} + b_hn          (reset_after=True)
    n_t  = tanh(gi_n + W_hn (r_t ⊙ h_{t-1}) + b_hn)                      (reset_after=False)
    h_t  = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}

Variable lengths: sequence b runs steps 0..lengths[b]-1. At a padded step t ≥ lengths[b] its
state is held (h_t = h_{t-1}) and its output y_t is exactly zero, so h_n holds each sequence's
state after its own last step. x at a padded step is never read: the products with x and the
sums over steps run over the valid rows (t, b), t < lengths[b], only, so whatever the padding
holds (NaN, inf) changes nothing, and its dL/dx is exactly zero.

Shapes: x (T, B, I), h0 (B, H), y (T, B, H), lengths (B,) int64 or None. Inputs are trusted: the
API validated them.
"""

from __future__ import annotations

import numpy as np

from grukern._activations import sigmoid
from grukern._backends._weight_gradients import flat, weight_gradients
from grukern.params import GRUParams
from grukern.tape import Gradients, Tape


def forward(
    x: np.ndarray,
    params: GRUParams,
    h0: np.ndarray,
    lengths: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """y (T, B, H) and h_n (B, H); keeps nothing for backward."""
    valid = _valid_steps(x.shape[0], h0.shape[0], lengths)  # (T, B, 1)
    gi = _input_projection(x, params, valid)  # (T, B, 3H)
    y = np.empty((x.shape[0], *h0.shape), dtype=x.dtype)
    h = h0
    for t in range(x.shape[0]):
        h_t, _, _ = _step(gi[t], h, params)
        h = np.where(valid[t], h_t, h)  # a padded step holds the state: h_t = h_{t-1}
        y[t] = np.where(valid[t], h, 0)  # and outputs exactly zero
    return y, h.copy()


def forward_train(
    x: np.ndarray,
    params: GRUParams,
    h0: np.ndarray,
    lengths: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, Tape]:
    """y (T, B, H), h_n (B, H) and the Tape of everything backward needs."""
    T, (B, H) = x.shape[0], h0.shape
    valid = _valid_steps(T, B, lengths)  # (T, B, 1)
    gi = _input_projection(x, params, valid)  # (T, B, 3H)
    h = np.empty((T + 1, B, H), dtype=x.dtype)  # h[0] = h0, h[t] = h_t
    gates = np.empty((T, B, 3 * H), dtype=x.dtype)  # [r_t | z_t | n_t]
    hn = np.empty((T, B, H), dtype=x.dtype) if params.reset_after else None
    h[0] = h0
    for t in range(T):
        h_t, gates[t], hn_t = _step(gi[t], h[t], params)
        h[t + 1] = np.where(valid[t], h_t, h[t])  # a padded step holds the state
        if hn is not None:
            hn[t] = hn_t
    tape = Tape(x=x, h=h, gates=gates, hn=hn, params=params, lengths=lengths)
    return np.where(valid, h[1:], 0), h[T].copy(), tape


def backward(tape: Tape, dy: np.ndarray, dh_n: np.ndarray) -> Gradients:
    """Backpropagation through time: gradients of the loss given dL/dy (T, B, H), dL/dh_n (B, H).

    The loop runs t = T..1 carrying dh = dL/dh_t. Per step it forms the gradients of the gate
    pre-activations, da_t = [da_r | da_z | da_n] (B, 3H), and their recurrent-side counterpart
    dgh_t; all weight gradients are then two large products over every step at once.
    A padded step (t ≥ lengths[b]) passed the state through unchanged and output a constant
    zero: its dh flows straight on, and its dy, da and dgh are zero.
    """
    params = tape.params
    T, B, H = tape.gates.shape[0], tape.h.shape[1], params.hidden_size
    valid = _valid_steps(T, B, tape.lengths)  # (T, B, 1)
    da = np.empty((T, B, 3 * H), dtype=dy.dtype)  # dL/d(gi_t): input-side pre-activation grads
    dgh = np.empty((T, B, 3 * H), dtype=dy.dtype)  # dL/d(gh_t), recurrent-side (docs/math.md)
    dh = dh_n.copy()  # dL/dh_t, starting at t = T
    for t in reversed(range(T)):
        dh = dh + np.where(valid[t], dy[t], 0)  # total gradient reaching h_t
        da_t, dgh_t, dh_prev = _step_backward(dh, tape, t)
        da[t] = np.where(valid[t], da_t, 0)
        dgh[t] = np.where(valid[t], dgh_t, 0)
        dh = np.where(valid[t], dh_prev, dh)  # dh is now dL/dh_{t-1}
    # Weight gradients and dL/dx: large products over every step at once.
    rows = valid.reshape(-1)  # the rows (t, b) every sum over steps runs over        (T·B,)
    grads = weight_gradients(tape.x, tape.h, tape.gates, da, dgh, params, rows)
    dx = _input_gradient(da, params, valid)  # dL/dx_t = da_t W_ih               (T, B, I)
    return Gradients(x=dx, h0=dh, params=grads)


def _valid_steps(T: int, B: int, lengths: np.ndarray | None) -> np.ndarray:
    """valid[t, b] = t < lengths[b]: whether step t is part of sequence b        (T, B, 1)."""
    if lengths is None:
        return np.ones((T, B, 1), dtype=bool)
    return (np.arange(T)[:, None] < lengths[None, :])[:, :, None]


def _input_projection(x: np.ndarray, params: GRUParams, valid: np.ndarray) -> np.ndarray:
    """gi_t = W_ih x_t + b_ih at every valid step, in one (rows, I) @ (I, 3H) product over the
    valid rows; 0 at padded steps, whose x is never read                           (T, B, 3H)."""
    T, B, _ = x.shape
    rows = valid.reshape(T * B)  # which rows (t, b) of the flattened steps are valid
    gi = np.zeros((T * B, 3 * params.hidden_size), dtype=x.dtype)
    gi[rows] = flat(x)[rows] @ params.w_ih.T + params.b_ih  # one BLAS call, not T small ones
    return gi.reshape(T, B, gi.shape[1])


def _input_gradient(da: np.ndarray, params: GRUParams, valid: np.ndarray) -> np.ndarray:
    """dL/dx_t = da_t W_ih at every valid step; exactly 0 at padded steps          (T, B, I)."""
    T, B, _ = da.shape
    rows = valid.reshape(T * B)
    dx = np.zeros((T * B, params.input_size), dtype=da.dtype)
    dx[rows] = flat(da)[rows] @ params.w_ih
    return dx.reshape(T, B, params.input_size)


def _step(gi_t: np.ndarray, h_prev: np.ndarray, params: GRUParams):
    """One forward step. Returns h_t (B, H), [r_t | z_t | n_t] (B, 3H) and hn_t (B, H) or None."""
    H = params.hidden_size
    w_hh, b_hh = params.w_hh, params.b_hh
    gi_r, gi_z, gi_n = gi_t[:, :H], gi_t[:, H : 2 * H], gi_t[:, 2 * H :]
    if params.reset_after:
        gh = h_prev @ w_hh.T + b_hh  # gh_t = W_hh h_{t-1} + b_hh               (B, 3H)
        r = sigmoid(gi_r + gh[:, :H])  # r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
        z = sigmoid(gi_z + gh[:, H : 2 * H])  # z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
        hn = gh[:, 2 * H :]  # hn_t = W_hn h_{t-1} + b_hn
        n = np.tanh(gi_n + r * hn)  # n_t = tanh(W_in x_t + b_in + r_t ⊙ hn_t)
    else:
        gh_rz = h_prev @ w_hh[: 2 * H].T + b_hh[: 2 * H]  # W_h[rz] h_{t-1} + b_h[rz]  (B, 2H)
        r = sigmoid(gi_r + gh_rz[:, :H])  # r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
        z = sigmoid(gi_z + gh_rz[:, H:])  # z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
        hn = None
        # n_t = tanh(W_in x_t + b_in + W_hn (r_t ⊙ h_{t-1}) + b_hn)
        n = np.tanh(gi_n + (r * h_prev) @ w_hh[2 * H :].T + b_hh[2 * H :])
    h = (1 - z) * n + z * h_prev  # h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}
    return h, np.concatenate([r, z, n], axis=1), hn


def _step_backward(dh: np.ndarray, tape: Tape, t: int):
    """One reversed step: from dh = dL/dh_t to (da_t, dgh_t, dL/dh_{t-1}), each (B, ·).

    Only the recurrent part of the gradient flows on through dh; everything that reaches the
    weights and x leaves through da_t and dgh_t.
    """
    w_hh = tape.params.w_hh
    H = tape.params.hidden_size
    h_prev = tape.h[t]  # h_{t-1}
    r, z, n = tape.gates[t, :, :H], tape.gates[t, :, H : 2 * H], tape.gates[t, :, 2 * H :]
    dn = dh * (1 - z)  # ∂h_t/∂n_t = 1 - z_t
    dz = dh * (h_prev - n)  # ∂h_t/∂z_t = h_{t-1} - n_t
    dh_prev = dh * z  # ∂h_t/∂h_{t-1}, direct path = z_t
    da_n = dn * (1 - n * n)  # tanh' = 1 - n_t²
    da_z = dz * z * (1 - z)  # σ' = z_t (1 - z_t)
    if tape.params.reset_after:
        hn = tape.hn[t]  # W_hn h_{t-1} + b_hn
        dr = da_n * hn  # a_n = gi_n + r_t ⊙ hn_t  =>  ∂a_n/∂r_t = hn_t
        da_r = dr * r * (1 - r)  # σ' = r_t (1 - r_t)
        dgh = np.concatenate([da_r, da_z, da_n * r], axis=1)  # dL/d(gh_t); ∂a_n/∂hn_t = r_t
        dh_prev = dh_prev + dgh @ w_hh  # through gh_t = W_hh h_{t-1} + b_hh
    else:
        drh = da_n @ w_hh[2 * H :]  # dL/d(r_t ⊙ h_{t-1}) = da_n W_hn            (B, H)
        dr = drh * h_prev
        da_r = dr * r * (1 - r)  # σ' = r_t (1 - r_t)
        dgh = np.concatenate([da_r, da_z, da_n], axis=1)  # dL/d(recurrent pre-activations)
        dh_prev = dh_prev + drh * r + dgh[:, : 2 * H] @ w_hh[: 2 * H]  # via r ⊙ h and W_h[rz] h
    da = np.concatenate([da_r, da_z, da_n], axis=1)  # dL/d(gi_t)
    return da, dgh, dh_prev
