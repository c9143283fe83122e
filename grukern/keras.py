"""grukern as a Keras 3 layer: keras.layers.GRU's arguments and weights, grukern's kernels.

    from grukern.keras import GRU
    inputs = keras.Input(shape=(None, 16))
    outputs = GRU(32, return_sequences=True)(inputs)        # keras.layers.GRU's arguments
    layer.set_weights(keras_gru.get_weights())               # and the other way round

Keras 3 on its torch backend only (the layer refuses any other backend when it is made). This
module sets KERAS_BACKEND=torch unless it is set, which only takes effect before keras is first
imported. The gradient flows through `KernelFunction`, a torch.autograd.Function that calls
grukern.forward_train and grukern.backward, taking weights and returning their gradients in
Keras's layout (NumPy copies inside convert them). docs/keras.md lists what is supported,
refused and different from keras.layers.GRU.

This module is not imported by `import grukern`: keras and torch are optional.
"""

from __future__ import annotations

import functools
import os
import weakref

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np
import torch
from torch.autograd.function import once_differentiable

import grukern
from grukern import _backends, _device, _tensors
from grukern.params import GRUParams, keras_columns, swap_rz

_DTYPES = ("float32", "float64")


class KernelFunction(torch.autograd.Function):
    """y, h_n = KernelFunction.apply(x, h0, kernel, recurrent_kernel, bias, lengths, steps,
    reset_after, backend): one grukern GRU under autograd, batch-first, weights in Keras's layout.

    x (B, T, I); h0 (B, H) or None for zeros; kernel (I, 3H), recurrent_kernel (H, 3H) and bias
    (2, 3H) with reset_after, (3H,) without, or None, gates [z, r, h]; lengths None or an int64
    NumPy array (B,) (padded steps output 0); steps None, or the order in which to read each
    row's steps (_take_steps). Returns y (B, T, H) and h_n (B, H), C-contiguous.

    Every copy (the layout changes between Keras's [z, r, h] columns and grukern's [r; z; n]
    rows) is a NumPy copy inside the Function, and every tensor it
    returns is C-contiguous, so that torch runs no parallel copy around the kernels: on 2 cores
    torch's OpenMP threads keep spinning after one and slowed the kernels that followed 2-4x
    (benchmarks/test_keras_paths.py).
    """

    @staticmethod
    def forward(ctx, x, h0, kernel, recurrent_kernel, bias, lengths, steps, reset_after, backend):
        params = _grukern_params(kernel, recurrent_kernel, bias, reset_after)
        x_a, h0_a = _tensors.arrays(x, h0)
        y, h_n, ctx.tape = grukern.forward_train(
            _take_steps(x_a, steps), params, h0_a, backend=backend, batch_first=True,
            lengths=lengths,
        )  # fmt: skip
        ctx.save_for_backward(x, kernel, recurrent_kernel, bias)  # version check
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None
        ctx.h0_given, ctx.steps, ctx.reset_after = h0 is not None, steps, reset_after
        return _tensors.tensor(y), _tensors.tensor(h_n)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_n):
        _, _, _, bias = ctx.saved_tensors  # raises if one was modified in place since forward
        if dy is None and dh_n is None:
            return (None,) * len(ctx.needs_input_grad)
        grads = grukern.backward(ctx.tape, *_tensors.arrays(dy, dh_n))
        keras_grads = _keras_layout(grads.params, ctx.reset_after, bias is not None)
        dx = _put_steps(grads.x, ctx.steps)
        all_grads = (dx, grads.h0 if ctx.h0_given else None, *keras_grads)
        tensors = [None if g is None else _tensors.tensor(g) for g in all_grads]
        tensors += [None, None, None, None]  # lengths, steps, reset_after, backend
        return tuple(
            g if needed else None for g, needed in zip(tensors, ctx.needs_input_grad, strict=True)
        )


def gru(x, h0, kernel, recurrent_kernel, bias, lengths, steps, *, reset_after, backend):
    """y, h_n as KernelFunction computes them (same arguments), through the Function only when
    autograd will need it, else through grukern.forward (which keeps no tape)."""
    tensors = (x, h0, kernel, recurrent_kernel, bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return KernelFunction.apply(
            x, h0, kernel, recurrent_kernel, bias, lengths, steps, reset_after, backend
        )
    params = _grukern_params(kernel, recurrent_kernel, bias, reset_after)
    x_a, h0_a = _tensors.arrays(x, h0)
    y, h_n = grukern.forward(
        _take_steps(x_a, steps), params, h0_a, backend=backend, batch_first=True, lengths=lengths
    )
    return _tensors.tensor(y), _tensors.tensor(h_n)


@keras.saving.register_keras_serializable(package="grukern")
class GRU(keras.layers.Layer):
    """keras.layers.GRU computed by grukern's kernels (Keras 3, torch backend).

    Arguments are keras.layers.GRU's, with these limits: activation "tanh" and
    recurrent_activation "sigmoid" only; recurrent_dropout 0 and stateful False only; unroll and
    use_cudnn ("auto" or False) are accepted and have no effect; masks must be right-padded
    (each row some valid steps, then only masked ones). `backend` picks grukern's backend:
    "auto" (numba for CPU tensors, cuda for CUDA tensors), "numba", "numpy" or "cuda".

    Weights have keras.layers.GRU's names, shapes, order and gate order (z, r, h): kernel
    (I, 3H), recurrent_kernel (H, 3H), bias (2, 3H) with reset_after=True or (3H,) without,
    so get_weights()/set_weights() lists move between the two layers both ways.
    """

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        reset_after=True,
        use_cudnn="auto",
        zero_output_for_mask=False,
        backend="auto",
        **kwargs,
    ):
        _check_keras_backend()
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        _check_units(units)
        self.units = int(units)
        self.activation = _only_activation("activation", activation, "tanh")
        self.recurrent_activation = _only_activation(
            "recurrent_activation", recurrent_activation, "sigmoid"
        )
        for name, value in (
            ("use_bias", use_bias), ("return_sequences", return_sequences),
            ("return_state", return_state), ("go_backwards", go_backwards),
            ("unroll", unroll), ("reset_after", reset_after),
            ("zero_output_for_mask", zero_output_for_mask),
        ):  # fmt: skip
            _check_bool(name, value)
        self.use_bias, self.reset_after = use_bias, reset_after
        self.return_sequences, self.return_state = return_sequences, return_state
        self.go_backwards, self.unroll = go_backwards, unroll
        self.zero_output_for_mask = zero_output_for_mask
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = keras.regularizers.get(recurrent_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.recurrent_constraint = keras.constraints.get(recurrent_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.dropout = _check_dropout(dropout)
        _refuse_unsupported(recurrent_dropout, stateful, use_cudnn)
        self.recurrent_dropout, self.stateful, self.use_cudnn = 0.0, False, use_cudnn
        if backend not in _backends.known_backends():
            raise ValueError(
                f"backend must be one of {list(_backends.known_backends())}, got {backend!r}"
            )
        self.backend = backend
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed=seed)  # as keras's GRUCell
        self.input_spec = keras.layers.InputSpec(ndim=3)
        self.supports_masking = True

    # -- Keras's layer protocol ----------------------------------------------------------------

    def build(self, sequences_shape, initial_state_shape=None):
        if self.compute_dtype not in _DTYPES:
            raise TypeError(
                f"grukern.keras.GRU computes in float32 or float64; the layer's dtype policy "
                f"{self.dtype_policy.name!r} computes in {self.compute_dtype}"
            )
        input_dim, H = sequences_shape[-1], self.units
        if input_dim is None:
            raise ValueError(
                f"the last axis (features) of the input must be known; got {sequences_shape}"
            )
        self.kernel = self.add_weight(
            shape=(input_dim, 3 * H),
            name="kernel",
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.recurrent_kernel = self.add_weight(
            shape=(H, 3 * H),
            name="recurrent_kernel",
            initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(2, 3 * H) if self.reset_after else (3 * H,),
                name="bias",
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )

    def call(self, sequences, initial_state=None, mask=None, training=False):
        """sequences (B, T, I); initial_state (B, H), or a list of one; mask (B, T) or None.
        Returns keras.layers.GRU's outputs: y (B, T, H) or (B, H), then h_n (B, H) with
        return_state."""
        if isinstance(initial_state, (list, tuple)):
            (initial_state,) = initial_state
        x = self._dropped_out(sequences, training)
        lengths = None if mask is None else _right_padded_lengths(mask)
        steps = _backward_steps(lengths, x.shape[1]) if self.go_backwards else None
        bias = None if self.bias is None else self.bias.value
        y, h_n = gru(
            x,
            initial_state,
            self.kernel.value,
            self.recurrent_kernel.value,
            bias,
            lengths,
            steps,
            reset_after=self.reset_after,
            backend=_backend(x.device, self.backend),
        )
        output = self._sequence_output(y, h_n, lengths) if self.return_sequences else h_n
        if not self.return_sequences and lengths is not None:
            output = h_n * self._last_output_kept(lengths, x.shape[1], x.device)
        return (output, h_n) if self.return_state else output

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        batch, steps = sequences_shape[0], sequences_shape[1]
        state = (batch, self.units)
        output = (batch, steps, self.units) if self.return_sequences else state
        return (output, state) if self.return_state else output

    def compute_mask(self, _, mask):
        mask = keras.tree.flatten(mask)[0]  # (B, T): passed on only with the sequence output
        output_mask = mask if self.return_sequences else None
        return [output_mask, None] if self.return_state else output_mask

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        config = {
            "units": self.units,
            "activation": self.activation,
            "recurrent_activation": self.recurrent_activation,
            "use_bias": self.use_bias,
            "kernel_initializer": serialize(self.kernel_initializer),
            "recurrent_initializer": serialize(self.recurrent_initializer),
            "bias_initializer": serialize(self.bias_initializer),
            "kernel_regularizer": serialize(self.kernel_regularizer),
            "recurrent_regularizer": serialize(self.recurrent_regularizer),
            "bias_regularizer": serialize(self.bias_regularizer),
            "activity_regularizer": serialize(self.activity_regularizer),
            "kernel_constraint": serialize(self.kernel_constraint),
            "recurrent_constraint": serialize(self.recurrent_constraint),
            "bias_constraint": serialize(self.bias_constraint),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
            "unroll": self.unroll,
            "reset_after": self.reset_after,
            "use_cudnn": self.use_cudnn,
            "zero_output_for_mask": self.zero_output_for_mask,
            "backend": self.backend,
        }
        return {**super().get_config(), **config}

    # -- the pieces of call --------------------------------------------------------------------

    def _dropped_out(self, sequences, training):
        """sequences with one input dropout mask (B, I) over every step in training, as
        keras.layers.GRU: a mask is drawn at every call when dropout > 0, used in training."""
        if not self.dropout:
            return sequences
        mask = keras.random.dropout(
            keras.ops.ones_like(sequences[:, 0, :]), rate=self.dropout, seed=self.seed_generator
        )  # (B, I): 0, or 1 / (1 - dropout)
        return sequences * mask[:, None, :] if training else sequences

    def _sequence_output(self, y, h_n, lengths):
        """Keras's output sequence (B, T, H) from grukern's y (B, T, H), whose padded steps
        are zero. Keras repeats the previous output at a masked step (or writes 0
        with zero_output_for_mask), its first output before any valid step being 0."""
        if lengths is None:
            return y
        T = y.shape[1]
        steps = torch.arange(T, device=y.device)
        lengths_t = torch.from_numpy(lengths).to(y.device)
        if self.go_backwards:  # Keras reads the T-L masked steps first: shift right by T-L
            shift = (steps[None, :] - (T - lengths_t)[:, None]).clamp(min=0)  # (B, T)
            y = torch.gather(y, 1, shift[:, :, None].expand(-1, -1, y.shape[2]))
            return y * (shift + (T - lengths_t)[:, None] == steps)[:, :, None]  # 0 before them
        if self.zero_output_for_mask:
            return y
        held = (steps[None, :] >= lengths_t[:, None]) & (lengths_t[:, None] > 0)  # (B, T)
        return y + held[:, :, None] * h_n[:, None, :]

    def _last_output_kept(self, lengths, T, device):
        """(B, 1) 1 where Keras's last output is h_n, 0 where it is zero: rows with no valid
        step, and with zero_output_for_mask rows whose last step is masked."""
        masked_last = self.zero_output_for_mask and not self.go_backwards
        kept = lengths == T if masked_last else lengths > 0
        return torch.from_numpy(kept[:, None]).to(device=device, dtype=self.kernel.value.dtype)


# -- argument checks ---------------------------------------------------------------------------


def _check_keras_backend() -> None:
    name = keras.backend.backend()
    if name != "torch":
        raise RuntimeError(
            f"grukern.keras.GRU runs on Keras's torch backend only; this Keras runs on {name!r} "
            "(set KERAS_BACKEND=torch before keras is first imported, or use keras.layers.GRU)"
        )


def _check_units(units) -> None:
    if not isinstance(units, (int, np.integer)) or isinstance(units, bool) or units < 1:
        raise ValueError(f"units must be a positive integer, got {units!r}")


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")


def _only_activation(name: str, value, supported: str) -> str:
    """The activation's name when it is the one grukern's kernels compute, else ValueError."""
    if keras.activations.get(value) is not keras.activations.get(supported):
        raise ValueError(
            f"{name} must be {supported!r} (the only one grukern's kernels compute), got {value!r}"
        )
    return supported


def _check_dropout(dropout) -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating)):
        raise TypeError(f"dropout must be a float in [0, 1), got {dropout!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    return float(dropout)


def _refuse_unsupported(recurrent_dropout, stateful, use_cudnn) -> None:
    if recurrent_dropout != 0:
        raise ValueError(
            f"recurrent_dropout must be 0, got {recurrent_dropout!r}: Keras multiplies h_(t-1) "
            "by a dropout mask inside each step, which grukern's kernels do not do (use "
            "keras.layers.GRU for recurrent dropout)"
        )
    if stateful is not False:
        raise ValueError(
            f"stateful must be False, got {stateful!r}: grukern.keras.GRU keeps no state between "
            "batches (pass initial_state to call, or use keras.layers.GRU)"
        )
    if use_cudnn not in ("auto", False):
        raise ValueError(
            f"use_cudnn must be 'auto' or False, got {use_cudnn!r}: grukern.keras.GRU runs "
            "grukern's kernels, never cuDNN"
        )


def _right_padded_lengths(mask) -> np.ndarray:
    """Valid steps per row (B,) int64 of a mask (B, T) whose rows are True then False (right
    padding); ValueError for any other mask."""
    valid = mask.detach().cpu().numpy().astype(bool, copy=False)  # (B, T)
    lengths = valid.sum(axis=1, dtype=np.int64)
    right_padded = np.arange(valid.shape[1])[None, :] < lengths[:, None]
    if not np.array_equal(valid, right_padded):
        rows = np.flatnonzero((valid != right_padded).any(axis=1))
        raise ValueError(
            "grukern.keras.GRU supports right-padded masks only (each row: valid steps, then "
            f"masked ones); rows {rows[:5].tolist()} of the mask are not right-padded"
        )
    return lengths


def _backward_steps(lengths, T: int):
    """The steps go_backwards reads (_take_steps): every row backwards, slice(None, None, -1),
    without a mask; with one (right-padded, `lengths` (B,)) an int64 array (B, T) that reads
    each row's valid steps L-1, ..., 0 first and leaves its padded steps in place. (Keras's
    loop reads the padded steps first, but masked steps change no state.)"""
    if lengths is None:
        return slice(None, None, -1)
    steps = np.arange(T)[None, :]  # (1, T)
    return np.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)


def _take_steps(a, steps):
    """a (B, T, k) with row b's step t taken from step steps[b, t] (an array), or with the
    time axis sliced by `steps` (a slice); a itself when steps is None."""
    if steps is None or isinstance(steps, slice):
        return a if steps is None else a[:, steps]
    rows = np.arange(a.shape[0])[:, None]  # (B, 1)
    return a[rows, _device.module_of(a).asarray(steps)]  # asarray: steps is a NumPy array


def _put_steps(a, steps):
    """The inverse of _take_steps, C-contiguous: the gradient of x from that of _take_steps(x)."""
    if steps is None:
        return a
    xp = _device.module_of(a)
    if isinstance(steps, slice):
        return xp.ascontiguousarray(a[:, steps])
    out = xp.empty_like(a)
    out[np.arange(a.shape[0])[:, None], xp.asarray(steps)] = a  # steps is a permutation per row
    return out


def _backend(device, backend: str) -> str:
    """The grukern backend that runs this layer's tensors on `device`."""
    _tensors.check_device(device, backend, "grukern.keras.GRU")
    return _tensors.backend_for(device, backend)


def _grukern_params(kernel, recurrent_kernel, bias, reset_after: bool) -> GRUParams:
    """GRUParams (copies, [r; z; n] rows) of Keras-layout weight tensors; zero biases where
    Keras has none (with reset_after=False its one bias adds where b_ih does).

    The copies of the last weights converted are kept while those tensors hold the same values,
    which torch's version counters tell (every in-place change, an optimizer step or a
    set_weights, counts; writes through a NumPy view of a tensor do not, as for autograd): a
    call of a layer whose weights did not change (inference) converts nothing."""
    tensors = (kernel, recurrent_kernel, bias)
    versions = (reset_after, *(None if t is None else (t.data_ptr(), t._version) for t in tensors))
    kept = _converted.get(id(kernel))
    if kept is not None and kept[0] == versions and all(map(_refers_to, kept[1], tensors)):
        return kept[2]
    params = _converted_params(kernel, recurrent_kernel, bias, reset_after)
    forget = functools.partial(_forget, id(kernel))
    refs = (
        weakref.ref(kernel, forget),
        *(None if t is None else weakref.ref(t) for t in tensors[1:]),
    )
    _converted[id(kernel)] = versions, refs, params
    return params


def _refers_to(ref, tensor) -> bool:
    return tensor is None if ref is None else ref() is tensor


def _forget(key: int, _) -> None:
    _converted.pop(key, None)


# id(kernel tensor) -> (the versions _grukern_params converted the tensors in, weak references
# to them, the GRUParams), until the kernel tensor is gone
_converted: dict[int, tuple] = {}


def _converted_params(kernel, recurrent_kernel, bias, reset_after: bool) -> GRUParams:
    kernel_a, recurrent_a, bias_a = _tensors.arrays(kernel, recurrent_kernel, bias)
    w_ih, w_hh = swap_rz(kernel_a.T), swap_rz(recurrent_a.T)  # (3H, I), (3H, H)
    xp = _device.module_of(w_hh)
    zeros = xp.zeros(w_hh.shape[0], dtype=w_hh.dtype)
    if bias_a is None:
        b_ih, b_hh = zeros, zeros
    elif reset_after:  # rows: input bias, recurrent bias
        b_ih, b_hh = swap_rz(bias_a[0]), swap_rz(bias_a[1])
    else:
        b_ih, b_hh = swap_rz(bias_a), zeros
    return GRUParams(w_ih, w_hh, b_ih, b_hh, reset_after=reset_after)


def _keras_layout(grads: GRUParams, reset_after: bool, use_bias: bool) -> tuple:
    """Gradients in grukern's layout -> (kernel (I, 3H), recurrent_kernel (H, 3H), bias or
    None) in Keras's layout, C-contiguous like the weights (torch would copy them otherwise)."""
    xp = _device.module_of(grads.w_hh)
    dkernel, drecurrent = keras_columns(grads.w_ih), keras_columns(grads.w_hh)  # (I | H, 3H)
    if not use_bias:
        return dkernel, drecurrent, None
    if reset_after:
        return dkernel, drecurrent, xp.stack([swap_rz(grads.b_ih), swap_rz(grads.b_hh)])
    return dkernel, drecurrent, swap_rz(grads.b_ih)  # b_hh is a constant zero


def swap_grus(model):
    """A copy of a Keras model (functional or Sequential) with every keras.layers.GRU replaced
    by a grukern.keras.GRU of the same configuration, and every weight copied: the same model
    computed by grukern. The copy is not compiled."""

    def clone(layer):
        cls = GRU if type(layer) is keras.layers.GRU else type(layer)
        return cls.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy
