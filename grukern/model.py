"""A small head and the classic sequence model, trainable without a framework.

    GRU(H, return_sequences) -> Dense(K) -> sigmoid, binary cross-entropy, any grukern.optim

The model is Keras's `Input((None, I)) -> GRU(H, return_sequences=True) -> Dense(K, sigmoid)`
compiled with loss="binary_crossentropy": batch-first x (B, T, I), targets (B, T, K), and the
loss averaged over batch, time and outputs as Keras does for return_sequences=True.
"""

from __future__ import annotations

import numpy as np

from grukern._activations import sigmoid
from grukern.layer import GRU
from grukern.params import GRUParams, check_float_dtype, init_params


def bce_with_logits(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean binary cross-entropy of σ(logits) against targets in [0, 1], and dL/dlogits.

    Per element: −[y log σ(z) + (1 − y) log(1 − σ(z))] = max(z, 0) − z y + log(1 + e^(−|z|)),
    finite for any z; its derivative is σ(z) − y. L is the mean over all N elements.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"targets must have the logits' shape {logits.shape}, got {targets.shape}")
    losses = np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
    return float(losses.mean()), (sigmoid(logits) - targets) / logits.size


class Dense:
    """logits = x @ kernel + bias over the last axis; kernel (H, K) as Keras stores it."""

    def __init__(self, kernel: np.ndarray, bias: np.ndarray):
        if kernel.ndim != 2 or bias.shape != kernel.shape[1:] or bias.dtype != kernel.dtype:
            raise ValueError(
                f"Dense needs kernel (H, K) and bias (K,) of one dtype, got kernel "
                f"{kernel.shape} {kernel.dtype} and bias {bias.shape} {bias.dtype}"
            )
        self.kernel = kernel
        self.bias = bias

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x @ self.kernel + self.bias  # (..., H) -> (..., K)

    def backward(self, x: np.ndarray, dlogits: np.ndarray):
        """(dL/dx (..., H), dL/dkernel (H, K), dL/dbias (K,)) from dL/dlogits (..., K)."""
        flat_x = x.reshape(-1, x.shape[-1])
        flat_d = dlogits.reshape(-1, dlogits.shape[-1])
        return dlogits @ self.kernel.T, flat_x.T @ flat_d, flat_d.sum(axis=0)


class SequenceClassifier:
    """GRU(hidden_size, return_sequences=True) -> Dense(outputs) -> sigmoid, per time step.

    Weights start as Keras initialises this model (Glorot-uniform kernels, orthogonal
    recurrent kernel, zero biases), drawn from `seed`; from_keras copies a Keras model's.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        outputs: int = 1,
        *,
        reset_after: bool = True,
        backend: str = "auto",
        dtype=np.float32,
        seed=None,
    ):
        dtype = check_float_dtype("dtype", dtype)
        gru_seed, dense_seed = np.random.SeedSequence(seed).spawn(2)
        params = init_params(
            input_size, hidden_size, dtype=dtype, seed=gru_seed, reset_after=reset_after,
            init="keras",
        )  # fmt: skip
        self.gru = GRU.from_params([params], batch_first=True, backend=backend)
        limit = np.sqrt(6.0 / (hidden_size + outputs))  # Glorot-uniform
        kernel = np.random.default_rng(dense_seed).uniform(-limit, limit, (hidden_size, outputs))
        self.dense = Dense(kernel.astype(dtype), np.zeros(outputs, dtype=dtype))

    def parameters(self) -> list:
        """[GRUParams, dense kernel, dense bias]: the structure optimizers and grads share."""
        return [self.gru.params[0], self.dense.kernel, self.dense.bias]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities (B, T, K) for x (B, T, I)."""
        y, _ = self.gru(x)
        return sigmoid(self.dense(y))

    def loss_and_grads(self, x: np.ndarray, targets: np.ndarray):
        """(mean BCE loss, probabilities (B, T, K), grads in the structure of parameters())."""
        y, _, tape = self.gru.forward_train(x)  # (B, T, H)
        logits = self.dense(y)  # (B, T, K)
        loss, dlogits = bce_with_logits(logits, targets)
        dy, dkernel, dbias = self.dense.backward(y, dlogits)
        gru_grads = self.gru.backward(tape, dy=dy).params[0]
        return loss, sigmoid(logits), [gru_grads, dkernel, dbias]

    def train_step(self, x: np.ndarray, targets: np.ndarray, optimizer):
        """One optimizer step on a batch; returns (loss, probabilities) before the update."""
        loss, probabilities, grads = self.loss_and_grads(x, targets)
        optimizer.step(grads)
        return loss, probabilities

    def fit(self, x, targets, optimizer, *, epochs: int, batch_size: int) -> dict:
        """Keras's fit(shuffle=False): batches in order; per epoch the loss and accuracy
        (σ > 0.5 against targets) averaged over samples, as Keras's progress bar reports."""
        history = {"loss": [], "accuracy": []}
        for _ in range(epochs):
            loss_sum = correct = 0.0
            for start in range(0, len(x), batch_size):
                batch = slice(start, start + batch_size)
                loss, probabilities = self.train_step(x[batch], targets[batch], optimizer)
                loss_sum += loss * len(x[batch])
                correct += ((probabilities > 0.5) == targets[batch]).mean() * len(x[batch])
            history["loss"].append(loss_sum / len(x))
            history["accuracy"].append(float(correct / len(x)))
        return history

    # -- Keras interchange -------------------------------------------------------------------

    @classmethod
    def from_keras(cls, model, *, backend: str = "auto") -> SequenceClassifier:
        """Copy the weights of a Keras model Input -> GRU(return_sequences=True) -> Dense."""
        gru_layer, dense_layer = _gru_and_dense(model)
        params = GRUParams.from_keras(gru_layer)
        kernel, bias = (np.array(w) for w in dense_layer.get_weights())
        if kernel.dtype != params.dtype:
            raise TypeError(
                f"the model's Dense has dtype {kernel.dtype} but its GRU has {params.dtype}"
            )
        classifier = cls.__new__(cls)
        classifier.gru = GRU.from_params([params], batch_first=True, backend=backend)
        classifier.dense = Dense(kernel, bias)
        return classifier

    def keras_weights(self) -> list[np.ndarray]:
        """model.set_weights(...) input for the matching Keras model (copies)."""
        return [
            *self.gru.params[0].to_keras_weights(),
            self.dense.kernel.copy(),
            self.dense.bias.copy(),
        ]


def _gru_and_dense(model):
    """The GRU and Dense layers of a Keras model of the classic shape, or a clear error."""
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    kinds = [type(layer).__name__ for layer in layers]
    if kinds != ["GRU", "Dense"]:
        raise ValueError(f"model must be Input -> GRU -> Dense, got layers {kinds}")
    gru_layer, dense_layer = layers
    if not gru_layer.return_sequences:
        raise ValueError("the model's GRU must have return_sequences=True")
    activation = dense_layer.activation.__name__
    if activation != "sigmoid":
        raise ValueError(f"the model's Dense must use activation='sigmoid', got {activation!r}")
    return gru_layer, dense_layer
