"""Optimisers that update parameter arrays in place: SGD, SGD with momentum, Adam; and global-norm
gradient clipping.

Parameters and gradients are given as matching structures of arrays: one array, a GRUParams,
or a list/tuple of those (for example `gru.params + [dense.kernel, dense.bias]`). Arrays may be
NumPy arrays or device arrays (CuPy); only array arithmetic and in-place operators are used.
`step(grads)` overwrites every parameter array in place and nothing else; gradients are not
modified (except by clip_grad_norm, which says so). Optimiser state (momentum, moments) lives
in arrays of the parameters' own kind, shape and dtype.
"""

from __future__ import annotations

import math
import numbers

from grukern.params import GRUParams


def leaves(tree) -> list:
    """The arrays of a parameter or gradient structure, in a fixed order."""
    if isinstance(tree, GRUParams):
        return list(tree.arrays())
    if isinstance(tree, (list, tuple)):
        return [leaf for item in tree for leaf in leaves(item)]
    if hasattr(tree, "shape") and hasattr(tree, "dtype"):
        return [tree]
    raise TypeError(
        f"parameters must be arrays, GRUParams, or lists of them; got {type(tree).__name__}"
    )


class Optimizer:
    """Holds the parameter arrays; subclasses define how one gradient array updates one param."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0):
        _check_non_negative("lr", lr)
        _check_non_negative("weight_decay", weight_decay)
        self.params = leaves(params)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.steps = 0

    def step(self, grads) -> None:
        """Update every parameter in place from gradients of the same structure."""
        grads = leaves(grads)
        if len(grads) != len(self.params):
            raise ValueError(
                f"grads has {len(grads)} arrays but the optimizer holds {len(self.params)}"
            )
        for k, (param, grad) in enumerate(zip(self.params, grads, strict=True)):
            if grad.shape != param.shape or grad.dtype != param.dtype:
                raise ValueError(
                    f"grads[{k}] has shape {grad.shape} and dtype {grad.dtype}; its parameter "
                    f"has shape {param.shape} and dtype {param.dtype}"
                )
        self.steps += 1
        for k, (param, grad) in enumerate(zip(self.params, grads, strict=True)):
            if self.weight_decay:
                grad = grad + self.weight_decay * param  # L2: ∇(λ/2 ‖θ‖²) = λθ
            self._update(k, param, grad)

    def _update(self, k: int, param, grad) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """θ ← θ − η g, or with momentum μ (torch's form): v ← μ v + g, θ ← θ − η v."""

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, lr, weight_decay)
        _check_non_negative("momentum", momentum)
        self.momentum = float(momentum)
        self.velocity = [_zeros_like(p) for p in self.params] if momentum else []

    def _update(self, k, param, grad):
        if self.momentum:
            velocity = self.velocity[k]
            velocity *= self.momentum
            velocity += grad  # v ← μ v + g
            grad = velocity
        param -= self.lr * grad  # θ ← θ − η v


class Adam(Optimizer):
    """Adam with Keras's defaults and Keras's update (keras.optimizers.Adam):

        m ← β1 m + (1 − β1) g          v ← β2 v + (1 − β2) g²
        θ ← θ − α m / (√v + ε),        α = η √(1 − β2^t) / (1 − β1^t)

    epsilon="torch" adds ε to the bias-corrected √v̂ instead, as torch.optim.Adam does:
    θ ← θ − η m̂ / (√v̂ + ε) with m̂ = m / (1 − β1^t), v̂ = v / (1 − β2^t).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-7,
        weight_decay: float = 0.0,
        epsilon: str = "keras",
    ):
        super().__init__(params, lr, weight_decay)
        for name, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0 <= beta < 1:
                raise ValueError(f"{name} must lie in [0, 1), got {beta!r}")
        _check_non_negative("eps", eps)
        if epsilon not in ("keras", "torch"):
            raise ValueError(f"epsilon must be 'keras' or 'torch', got {epsilon!r}")
        self.beta1, self.beta2, self.eps, self.epsilon = float(beta1), float(beta2), eps, epsilon
        self.m = [_zeros_like(p) for p in self.params]
        self.v = [_zeros_like(p) for p in self.params]

    def _update(self, k, param, grad):
        m, v = self.m[k], self.v[k]
        m += (grad - m) * (1 - self.beta1)  # m ← β1 m + (1 − β1) g
        v += (grad * grad - v) * (1 - self.beta2)  # v ← β2 v + (1 − β2) g²
        correction1 = 1 - self.beta1**self.steps
        correction2 = 1 - self.beta2**self.steps
        if self.epsilon == "keras":
            alpha = self.lr * math.sqrt(correction2) / correction1
            param -= (m * alpha) / (v**0.5 + self.eps)
        else:
            param -= (self.lr / correction1) * m / (v**0.5 / math.sqrt(correction2) + self.eps)


def clip_grad_norm(grads, max_norm: float) -> float:
    """Scale all gradients in place so that their global L2 norm is at most max_norm.

    Returns the norm before clipping (as torch.nn.utils.clip_grad_norm_ does). Gradients are
    left untouched when the norm is within the limit.
    """
    _check_non_negative("max_norm", max_norm)
    arrays = leaves(grads)
    norm = math.sqrt(sum(float((g * g).sum()) for g in arrays))
    if norm > max_norm:
        scale = max_norm / norm
        for g in arrays:
            g *= scale
    return norm


def _zeros_like(a):
    """Zeros of a's kind (NumPy or device array), shape and dtype."""
    zeros = a.copy()
    zeros[...] = 0
    return zeros


def _check_non_negative(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
