"""grukern as a PyTorch layer: torch.library operators and a drop-in for torch.nn.GRU.

    from grukern.torch import GRU
    gru = GRU(16, 32, num_layers=2, bidirectional=True)   # torch.nn.GRU's arguments
    y, h_n = gru(x)            # x: Tensor (T, B, I) / (B, T, I) / (T, I), or a PackedSequence
    y.sum().backward()         # gradients from grukern's BPTT kernels

The kernels run inside three operators (torch.library), so that torch.compile, torch.export
and torch.onnx.export see one opaque op with known output shapes instead of tracing NumPy and
Numba:

    grukern::gru           inference (and dropout without autograd): y, h_n
    grukern::gru_train     y, h_n and the saved tensors BPTT reads (cuDNN's "reserve space"):
                           per (layer, direction) k = l·D + d the tape's h (T+1, B, H),
                           gates (T, B, 3H) and hn (T, B, H); then each layer l ≥ 1's input
                           in x's layout, (T, B, D·H) or (B, T, D·H) with batch_first; then,
                           with dropout, the masks of layers 0..L-2 (T, B, D·H)
    grukern::gru_backward  dy, dh_n and those saved tensors -> dx, dh0 and every weight's
                           gradient; it reads the forward's tape and recomputes nothing

An eager call that needs a tape runs the same work through an autograd.Function
(_EagerTraining) instead of grukern::gru_train: the operator's dispatch costs more than the
kernels at small sizes.

Tensors and arrays share memory both ways: weights, x and h0 reach the kernels as views
(`tensor.detach().numpy()` on the CPU, a CuPy view through `__cuda_array_interface__` on a GPU),
and every output comes back as a view of the array grukern allocated (`torch.from_numpy`,
`torch.as_tensor`). The only copies are those grukern.GRU makes itself (layout changes,
non-contiguous inputs) and the unpacking/repacking of a PackedSequence.

CPU tensors run grukern's numba backend ("auto"; "numpy" on request), CUDA tensors its CUDA
backend (needs CuPy: grukern[cuda12] or grukern[cuda13]). Only grukern._tensors depends on the
device (benchmarks/gpu_check.py checks that path on a GPU).

This module is not imported by `import grukern`: torch is optional.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
import weakref

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

import grukern
from grukern import _backends, _device, _tensors
from grukern._arguments import (
    check_dropout,
    checked_lengths,
    contiguous,
    layout_of,
    to_time_major,
)
from grukern.layer import LayerTape
from grukern.params import GRUParams
from grukern.tape import Tape

_DTYPES = (torch.float32, torch.float64)
_TAPE_ARRAYS = 3  # h, gates, hn per (layer, direction)


class GRUShapeError(ValueError, RuntimeError):
    """A tensor of the wrong shape. grukern raises ValueError for this, torch.nn.GRU
    RuntimeError: this is both, so code written against either catches it."""


class GRUTypeError(TypeError, ValueError, RuntimeError, AttributeError):
    """An argument of the wrong type or dtype. grukern raises TypeError for this; for the same
    mistake torch.nn.GRU raises ValueError (a dropout that is not a number, an input of another
    dtype), RuntimeError (an integer dtype, an hx of another dtype) or AttributeError (a
    non-tensor input): this is each of them."""


@dataclasses.dataclass(frozen=True)
class GRUConfig:
    """Everything `gru` needs besides tensors.

    dropout is applied between layers (0 disables it; the module passes 0 in eval mode); its
    masks come from np.random.default_rng(seed), so seed is required when dropout > 0.
    bias=False: the weights hold no biases (2 tensors per direction instead of 4).
    """

    bidirectional: bool = False
    batch_first: bool = False
    dropout: float = 0.0
    seed: int | None = None
    backend: str = "auto"
    bias: bool = True

    def __post_init__(self):
        if self.dropout and self.seed is None:
            raise ValueError(f"GRUConfig.seed must be an int when dropout > 0 ({self.dropout})")


def gru(x, h0, lengths, config: GRUConfig, weights) -> tuple[Tensor, Tensor]:
    """y, h_n of grukern's GRU on tensors, differentiable in x, h0 and every weight.

    x        (T, B, I), (B, T, I) with config.batch_first, or (T, I) unbatched
    h0       (L·D, B, H), (L·D, H) unbatched, or None for zeros
    lengths  None, or an int64 CPU tensor (B,) of valid steps per row (padded steps output 0)
    weights  torch.nn.GRU's flat weights, for each layer l and direction d in order l·D + d:
             weight_ih (3H, I or D·H), weight_hh (3H, H), then bias_ih (3H,), bias_hh (3H,)
             unless config.bias is False
    y        (T, B, D·H) in x's layout; h_n like h0

    Runs grukern::gru_train when autograd will need the tape, else grukern::gru (no tape).
    """
    per = _weights_per_direction(config.bias)
    D = 2 if config.bidirectional else 1
    if not weights or len(weights) % (per * D):
        names = "weight_ih, weight_hh" + (", bias_ih, bias_hh" if config.bias else "")
        raise ValueError(
            f"weights must be torch.nn.GRU's flat weights, {per * D} per layer ({names} per "
            f"direction), got {len(weights)}"
        )
    seed = None if not config.dropout else torch.tensor(config.seed, dtype=torch.int64)
    return _call(
        x, h0, lengths, list(weights), config.bias, config.bidirectional, config.batch_first,
        float(config.dropout), seed, config.backend,
    )  # fmt: skip


class GRU(torch.nn.Module):
    """torch.nn.GRU's interface and parameters, computed by grukern.

    Arguments are torch.nn.GRU's plus `backend`: "auto" (numba for CPU tensors, cuda for CUDA
    tensors), "numba", "numpy" or "cuda". Parameters have torch.nn.GRU's names, shapes, order
    and initialisation (uniform in ±1/√H), so state dicts load both ways and, under one
    torch.manual_seed, both modules start from the same weights. bias=False registers no bias
    parameters and runs the kernels with zero biases.

    Dropout between layers happens in training mode only; its masks are drawn from a NumPy
    generator seeded from torch's default generator (reproducible under torch.manual_seed, but
    not the same masks torch.nn.GRU would draw).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        *,
        backend: str = "auto",
        proj_size: int | None = None,
    ):
        super().__init__()
        if proj_size is not None:  # torch.nn.GRU refuses the argument, whatever its value
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        for name, value in (
            ("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)
        ):  # fmt: skip
            _check_size(name, value)
        for name, value in (
            ("bias", bias), ("batch_first", batch_first), ("bidirectional", bidirectional)
        ):  # fmt: skip
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
        try:
            dropout = check_dropout(dropout)
        except TypeError as error:  # torch.nn.GRU: ValueError
            raise GRUTypeError(str(error)) from None
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                f"dropout={dropout} acts between layers, so it does nothing with num_layers=1",
                UserWarning,
                stacklevel=2,
            )
        if backend not in _backends.known_backends():
            raise ValueError(
                f"backend must be one of {list(_backends.known_backends())}, got {backend!r}"
            )
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if dtype not in _DTYPES:  # torch.nn.GRU: RuntimeError for integer dtypes
            raise GRUTypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")

        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.num_layers = int(num_layers)
        self.bias, self.batch_first = bool(bias), bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.dropout, self.backend = float(dropout), backend
        self._weight_names = [  # torch.nn.GRU's _flat_weights_names order: l·D + d
            name for layer in range(self.num_layers) for d in range(self.directions)
            for name in self._register_weights(layer, d, device, dtype)
        ]  # fmt: skip
        self.reset_parameters()

    def _register_weights(self, layer: int, d: int, device, dtype) -> list[str]:
        """Register layer `layer`, direction d's parameters; return their names."""
        H = self.hidden_size
        layer_input = self.input_size if layer == 0 else self.directions * H
        shapes = [("weight_ih", (3 * H, layer_input)), ("weight_hh", (3 * H, H))]
        if self.bias:
            shapes += [("bias_ih", (3 * H,)), ("bias_hh", (3 * H,))]
        suffix = f"_l{layer}" + ("_reverse" if d else "")
        for name, shape in shapes:
            param = torch.nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
            self.register_parameter(name + suffix, param)
        return [name + suffix for name, _ in shapes]

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def reset_parameters(self) -> None:
        """torch.nn.GRU's initialisation: each parameter uniform in ±1/√H, in registration order."""
        bound = 1 / math.sqrt(self.hidden_size)
        for param in self.parameters():
            torch.nn.init.uniform_(param, -bound, bound)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"bias={self.bias}, batch_first={self.batch_first}, dropout={self.dropout}, "
            f"bidirectional={self.bidirectional}, backend={self.backend!r}"
        )

    def forward(self, input, hx=None):
        """(output, h_n) as torch.nn.GRU returns them; a PackedSequence in gives one out."""
        packed = isinstance(input, PackedSequence)
        if packed:  # padded (T, B, I) in the caller's batch order, lengths (B,) int64 on the CPU
            x, lengths = pad_packed_sequence(input)
        else:
            x, lengths = input, None
        weights = [getattr(self, name) for name in self._weight_names]  # as functional_call sets
        batch_first = self.batch_first and not packed  # packed data is time-major
        self._check_call(x, hx, weights[0].dtype, batch_first)
        dropout = self.dropout if self.training and self.num_layers > 1 else 0.0
        # A 0-d tensor, not an int, so that drawing it stays inside a torch.compile graph.
        seed = torch.randint(2**62, (), dtype=torch.int64) if dropout else None
        y, h_n = _call(
            x, hx, lengths, weights, self.bias, self.bidirectional, batch_first, dropout, seed,
            self.backend,
        )  # fmt: skip
        return (_pack_like(y, input) if packed else y), h_n

    def _check_call(self, x, hx, dtype: torch.dtype, batch_first: bool) -> None:
        """torch.nn.GRU's argument checks, naming `input` and `hx` (traceable by Dynamo: they
        read only shapes, dtypes and types)."""
        if not isinstance(x, torch.Tensor):
            raise GRUTypeError(f"input must be a Tensor or PackedSequence, got {type(x).__name__}")
        _check_input_shape(tuple(x.shape), self.input_size, batch_first)
        if dtype not in _DTYPES:
            raise TypeError(
                f"the module's parameters have dtype {dtype}; grukern computes in torch.float32 or"
                " torch.float64 (convert with module.float() or module.double())"
            )
        if x.dtype != dtype:
            raise GRUTypeError(
                f"input has dtype {x.dtype} but the module's parameters have dtype {dtype}; "
                "convert one of them (input.to(...) or module.to(...))"
            )
        if hx is None:
            return
        if not isinstance(hx, torch.Tensor):
            raise GRUTypeError(f"hx must be a Tensor or None, got {type(hx).__name__}")
        batch = () if x.dim() == 2 else (x.shape[0 if batch_first else 1],)
        expected = (self.num_layers * self.directions, *batch, self.hidden_size)
        if tuple(hx.shape) != expected:
            raise GRUShapeError(
                f"hx must have shape {expected} (num_layers·directions, "
                f"{'batch, ' if batch else ''}hidden_size), got {tuple(hx.shape)}"
            )
        if hx.dtype != dtype:
            raise GRUTypeError(f"hx has dtype {hx.dtype} but the parameters have dtype {dtype}")


def _check_size(name: str, value) -> None:
    """A size argument must be a positive integer: TypeError if not an integer (as torch.nn.GRU
    raises; a GRUTypeError, since grukern.GRU raises ValueError), ValueError if below 1."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise GRUTypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_input_shape(shape: tuple, input_size: int, batch_first: bool) -> None:
    """input is (T, B, I), (B, T, I) with batch_first, or (T, I), with T ≥ 1 and I = input_size."""
    if len(shape) not in (2, 3):  # torch.nn.GRU: ValueError
        order = "B, T" if batch_first else "T, B"
        raise ValueError(
            f"input must have 3 dimensions ({order}, I), or 2 (T, I) for one unbatched "
            f"sequence; got shape {shape}"
        )
    if shape[-1] != input_size:
        raise GRUShapeError(
            f"input has {shape[-1]} features (last axis of shape {shape}) but input_size is "
            f"{input_size}"
        )
    if shape[1 if batch_first and len(shape) == 3 else 0] == 0:  # torch.nn.GRU refuses it too
        raise GRUShapeError(f"input must have at least one time step, got shape {shape}")


# -- the call: checks that need no data, then one operator ------------------------------------


def _call(x, h0, lengths, weights, bias, bidirectional, batch_first, dropout, seed, backend):
    """y, h_n through grukern::gru_train when autograd needs a tape, else grukern::gru.

    An exported program is for inference, so torch.export records grukern::gru (what
    onnx_translation_table translates) even when the parameters require grad.
    """
    _tensors.check_device(_device_of(x, h0, *weights), backend, "grukern.torch")
    args = x, h0, lengths, weights, bias, bidirectional, batch_first, dropout, seed, backend
    needs_tape = torch.is_grad_enabled() and not torch.compiler.is_exporting()
    if needs_tape and any(t is not None and t.requires_grad for t in (x, h0, *weights)):
        if torch.compiler.is_compiling():
            y, h_n, _ = torch.ops.grukern.gru_train(*args)
            return y, h_n
        return _EagerTraining.apply(*args[:3], args[4:], *weights)
    return torch.ops.grukern.gru(*args)


def _device_of(*tensors) -> torch.device:
    """The one device of all given tensors (None entries skipped)."""
    devices = {t.device for t in tensors if t is not None}
    if len(devices) != 1:
        raise ValueError(
            f"input, hx and the weights must be on one device, got {sorted(map(str, devices))}"
        )
    return devices.pop()


# -- the operators --------------------------------------------------------------------------------
# Arguments shared by the forward operators:
#   x, h0, lengths, weights  as `gru` takes them
#   bias                     whether weights hold biases (4 per direction) or not (2)
#   bidirectional, batch_first, backend
#   dropout, seed            dropout between layers; seed a 0-d int64 tensor (None when off)


# Defined through torch.library.Library rather than torch.library.custom_op: custom_op wraps
# each call in two more layers of Python (an autograd kernel for every operator, a check of the
# outputs), 1.5-2% of a compiled G3 training step (benchmarks/test_torch_paths.py). Only
# grukern::gru_train has an autograd kernel; no gradient flows through the other two.
_LIBRARY = torch.library.Library("grukern", "DEF")
_FORWARD_ARGUMENTS = (
    "Tensor x, Tensor? h0, Tensor? lengths, Tensor[] weights, bool bias, bool bidirectional, "
    "bool batch_first, float dropout, Tensor? seed, str backend"
)
_LIBRARY.define(f"gru({_FORWARD_ARGUMENTS}) -> (Tensor, Tensor)")
_LIBRARY.define(f"gru_train({_FORWARD_ARGUMENTS}) -> (Tensor, Tensor, Tensor[])")
_LIBRARY.define(
    "gru_backward(Tensor? dy, Tensor? dh_n, Tensor x, Tensor? lengths, Tensor[] weights, "
    "Tensor[] saved, bool bias, bool bidirectional, bool batch_first, str backend) "
    "-> (Tensor, Tensor, Tensor[])"
)


def _gru(x, h0, lengths, weights, bias, bidirectional, batch_first, dropout, seed, backend):
    """grukern::gru: y, h_n, keeping nothing for backward."""
    layer = _layer(weights, bias, bidirectional, batch_first, dropout, x.device, backend)
    x_a, h0_a, lengths_a = _tensors.arrays(x, h0, lengths)
    if dropout:  # dropout runs in forward_train, even when no tape is wanted
        y, h_n, _ = layer.forward_train(x_a, h0_a, lengths_a, rng=_rng(seed))
    else:
        y, h_n = layer(x_a, h0_a, lengths_a)
    return _tensors.tensor(y), _tensors.tensor(h_n)


def _train(x, h0, lengths, weights, bias, bidirectional, batch_first, dropout, seed, backend):
    """grukern::gru_train (also _EagerTraining's forward): y, h_n and the saved tensors
    grukern::gru_backward reads (module docstring)."""
    layer = _layer(weights, bias, bidirectional, batch_first, dropout, x.device, backend)
    x_a, h0_a, lengths_a = _tensors.arrays(x, h0, lengths)
    rng = _rng(seed) if dropout else None
    y, h_n, tape = layer.forward_train(x_a, h0_a, lengths_a, rng=rng)
    saved = [_tensors.tensor(a) for a in _saved_arrays(tape, layer.directions)]
    _hand_off(x, lengths, weights, saved, layer, tape)
    return _tensors.tensor(y), _tensors.tensor(h_n), saved


def _train_backward(
    dy, dh_n, x, lengths, weights, saved, bias, bidirectional, batch_first, backend
):
    """grukern::gru_backward (also _EagerTraining's backward): dx (x's shape), dh0 (h_n's
    shape) and each weight's gradient, given dy and/or dh_n (None counts as zero) and
    grukern::gru_train's x, lengths, weights and saved tensors."""
    dy_a, dh_n_a = _tensors.arrays(dy, dh_n)
    kept = _handed_off(x, lengths, weights, saved)
    if kept is None:  # saved tensors from elsewhere (a deserialised graph, a direct call)
        layer = _layer(weights, bias, bidirectional, batch_first, 0.0, x.device, backend)
        x_a, lengths_a = _tensors.arrays(x, lengths)
        tape = _layer_tape(layer, x_a, lengths_a, _tensors.arrays(*saved))
    else:
        layer, tape = kept
    grads = layer.backward(tape, dy=dy_a, dh_n=dh_n_a)
    per = _weights_per_direction(bias)
    dweights = [_tensors.tensor(a) for p in grads.params for a in p.arrays()[:per]]
    return _tensors.tensor(grads.x), _tensors.tensor(grads.h0), dweights


# The layer and LayerTape of each forward whose saved tensors are alive, for its backward.
# grukern::gru_backward receives tensors only, and rebuilding the layer and the tape from them
# cost more than the operator's dispatch (most of 0.1 ms between the kernels of a G3 training
# step, with caches cold). A forward leaves both here under its first saved tensor until that
# tensor is gone; a backward takes them when handed exactly the tensors that forward took and
# saved (the same objects, in eager and compiled graphs alike), else rebuilds them. An entry
# holds the other tensors, so that no id it compares can be reused while it lives, and the
# first one weakly, so that it does not outlive them. It also holds the weights' memory, which
# the layer's views do not own (_layer): a parameter given new memory before the backward
# leaves the old one to its tape.
_handoffs: dict[int, tuple] = {}  # id(saved[0]) -> (weakref to it, tensors, memory, layer, tape)


def _hand_off(x, lengths, weights, saved, layer, tape) -> None:
    key = id(saved[0])
    ref = weakref.ref(saved[0], lambda _: _handoffs.pop(key, None))
    memory = [w.detach() for w in weights]  # the weights' memory at the forward
    _handoffs[key] = ref, (x, lengths, *weights, *saved[1:]), memory, layer, tape


def _handed_off(x, lengths, weights, saved) -> tuple | None:
    """(layer, tape) of the forward that saved `saved` from x, lengths and weights, or None."""
    entry = _handoffs.get(id(saved[0]))
    if entry is None or entry[0]() is not saved[0]:
        return None
    _, tensors, _, layer, tape = entry
    given = (x, lengths, *weights, *saved[1:])
    if len(given) != len(tensors) or any(a is not b for a, b in zip(given, tensors, strict=True)):
        return None
    return layer, tape


for _name, _work in (("gru", _gru), ("gru_train", _train), ("gru_backward", _train_backward)):
    _LIBRARY.impl(_name, _work, "CompositeExplicitAutograd")  # CPU and CUDA tensors


@torch.library.register_fake("grukern::gru", lib=_LIBRARY)
def _gru_fake(x, h0, lengths, weights, bias, bidirectional, batch_first, dropout, seed, backend):
    y_shape, h_shape, _ = _output_shapes(x.shape, weights, bias, bidirectional, batch_first)
    return x.new_empty(y_shape), x.new_empty(h_shape)


@torch.library.register_fake("grukern::gru_train", lib=_LIBRARY)
def _gru_train_fake(
    x, h0, lengths, weights, bias, bidirectional, batch_first, dropout, seed, backend
):
    y_shape, h_shape, (T, B) = _output_shapes(x.shape, weights, bias, bidirectional, batch_first)
    H = weights[1].shape[1]
    D = 2 if bidirectional else 1
    L = len(weights) // (_weights_per_direction(bias) * D)
    per_tape = [(T + 1, B, H), (T, B, 3 * H), (T, B, H)]  # h, gates, hn
    masks = [(T, B, D * H)] * (L - 1)  # with dropout, after the inputs of layers 1..L-1
    inputs = [(B, T, D * H) if batch_first and len(x.shape) == 3 else (T, B, D * H)] * (L - 1)
    shapes = per_tape * (L * D) + inputs + (masks if dropout else [])
    return x.new_empty(y_shape), x.new_empty(h_shape), [x.new_empty(s) for s in shapes]


@torch.library.register_fake("grukern::gru_backward", lib=_LIBRARY)
def _gru_backward_fake(
    dy, dh_n, x, lengths, weights, saved, bias, bidirectional, batch_first, backend
):
    _, h_shape, _ = _output_shapes(x.shape, weights, bias, bidirectional, batch_first)
    return x.new_empty(x.shape), x.new_empty(h_shape), [w.new_empty(w.shape) for w in weights]


def _setup_context(ctx, inputs, output) -> None:
    _keep(ctx, inputs, output[2])
    ctx.mark_non_differentiable(*output[2])


def _keep(ctx, inputs, saved) -> None:
    """What _gradients reads: the inputs backward needs and grukern::gru_train's saved tensors."""
    x, h0, lengths, weights, bias, bidirectional, batch_first, _, _, backend = inputs
    # x and the weights are saved for torch's version check as much as for backward: changing
    # them in place before backward raises "modified by an inplace operation".
    ctx.save_for_backward(x, lengths, *weights, *saved)
    # An unused output's gradient stays None instead of a tensor of zeros: no memsets of the
    # saved tensors' size, after which torch's OpenMP threads spin on the cores that the
    # backward kernels are about to use.
    ctx.set_materialize_grads(False)
    ctx.n_weights, ctx.has_h0 = len(weights), h0 is not None
    ctx.config = bias, bidirectional, batch_first, backend


def _backward(ctx, dy, dh_n, _):
    if torch.is_grad_enabled():  # grukern::gru_backward has no autograd kernel to record
        raise RuntimeError(
            "grukern::gru_train is differentiable once: its backward has no derivative, so "
            "create_graph=True (double backward) is not supported"
        )
    dx, dh0, dweights = _gradients(ctx, dy, dh_n, torch.ops.grukern.gru_backward)
    return dx, dh0, None, dweights, None, None, None, None, None, None


def _gradients(ctx, dy, dh_n, backward) -> tuple:
    """dx, dh0 (None without an h0) and the weights' gradients (a list) by `backward`
    (grukern::gru_backward or its work), given dy like y and dh_n like h_n, None where no
    gradient reached that output; all None when neither did."""
    x, lengths, *rest = ctx.saved_tensors
    weights, saved = rest[: ctx.n_weights], rest[ctx.n_weights :]
    if dy is None and dh_n is None:
        return None, None, [None] * len(weights)
    dx, dh0, dweights = backward(dy, dh_n, x, lengths, weights, saved, *ctx.config)
    return dx, dh0 if ctx.has_h0 else None, dweights


torch.library.register_autograd(
    "grukern::gru_train", _backward, setup_context=_setup_context, lib=_LIBRARY
)


class _EagerTraining(torch.autograd.Function):
    """grukern::gru_train and its registered autograd, for eager calls: the same work and
    context, without the operator's dispatch and its flattening of the arguments on every call
    (0.1-0.2 ms of a training step). torch.compile and torch.export see the operators.

    apply(x, h0, lengths, (bias, bidirectional, batch_first, dropout, seed, backend), *weights)
    -> y, h_n."""

    @staticmethod
    def forward(ctx, x, h0, lengths, config, *weights):
        bias, bidirectional, batch_first, dropout, seed, backend = config
        inputs = x, h0, lengths, list(weights), bias, bidirectional, batch_first, dropout, seed
        y, h_n, saved = _train(*inputs, backend)
        _keep(ctx, (*inputs, backend), saved)
        return y, h_n

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_n):
        dx, dh0, dweights = _gradients(ctx, dy, dh_n, _train_backward)
        return dx, dh0, None, None, *dweights


def _output_shapes(x_shape, weights, bias, bidirectional, batch_first):
    """y's and h_n's shapes, and (T, B) (B = 1 unbatched), from x's shape and the weights."""
    D = 2 if bidirectional else 1
    states = len(weights) // _weights_per_direction(bias)  # L·D
    H = weights[1].shape[1]  # weight_hh_l0 (3H, H)
    if len(x_shape) == 2:
        T, B, batch = x_shape[0], 1, ()
    else:
        T, B = (x_shape[1], x_shape[0]) if batch_first else (x_shape[0], x_shape[1])
        batch = (B,)
    return (*x_shape[:-1], D * H), (states, *batch, H), (T, B)


def _weights_per_direction(bias: bool) -> int:
    return 4 if bias else 2  # weight_ih, weight_hh[, bias_ih, bias_hh]


def _rng(seed: Tensor) -> np.random.Generator:
    return np.random.default_rng(int(seed.item()))


# The layer of the last call with the same weights and configuration, for the next such call:
# building one (a view of every weight, a GRUParams per direction, the layer's checks) took
# 15 us, a third of a one-step inference call through the module. A layer depends only on the
# configuration and the weights' memory (address, shape, strides, dtype), which key it. Its
# arrays are views that do not own that memory, so that an entry keeps no weights alive; a
# call takes it only while it holds tensors at those addresses. An entry goes when the weight
# tensor it was made from goes. CPU tensors only: a CuPy view always holds its tensor.
_layers: dict[tuple, tuple] = {}  # key -> (weakref to the first weight, layer)


def _layer(weights, bias, bidirectional, batch_first, dropout, device, backend) -> grukern.GRU:
    """A grukern.GRU running the given tensors' memory (zero biases when bias is False)."""
    config = bias, bidirectional, batch_first, dropout, _tensors.backend_for(device, backend)
    if device.type != "cpu" or not all(w.is_contiguous() for w in weights):
        # The kernels read C-contiguous weights: .contiguous() copies the others, every call.
        return _new_layer(_tensors.arrays(*(w.contiguous() for w in weights)), *config)
    key = (*config, *((w.data_ptr(), w.shape, w.stride(), w.dtype) for w in weights))
    entry = _layers.get(key)
    if entry is not None:
        return entry[1]
    layer = _new_layer(_tensors.unowned_arrays(*weights), *config)

    def forget(ref):
        if _layers.get(key, (None,))[0] is ref:  # not an entry made later under the same key
            _layers.pop(key, None)

    _layers[key] = weakref.ref(weights[0], forget), layer
    return layer


def _new_layer(arrays, bias, bidirectional, batch_first, dropout, backend) -> grukern.GRU:
    """The grukern.GRU of torch.nn.GRU's flat weights as arrays (zero biases without bias)."""
    per = _weights_per_direction(bias)
    params = []  # one per (layer, direction), l·D + d
    for k in range(0, len(arrays), per):
        w_ih, w_hh, *biases = arrays[k : k + per]
        if not bias:
            xp = _device.module_of(w_hh)
            biases = [xp.zeros(w_hh.shape[0], dtype=w_hh.dtype) for _ in range(2)]
        params.append(GRUParams(w_ih, w_hh, *biases))
    return grukern.GRU.from_params(
        params, bidirectional=bidirectional, batch_first=batch_first, dropout=dropout,
        backend=backend,
    )  # fmt: skip


def _saved_arrays(tape: LayerTape, D: int) -> list:
    """The arrays backward reads, in grukern::gru_train's order (module docstring)."""
    per_tape = [a for t in tape.tapes for a in (t.h, t.gates, t.hn)]
    layer_inputs = [t.x for t in tape.tapes[D::D]]  # layers 1.., read by both directions
    if tape.layout.batch_first:  # (B, T, ·), C-contiguous as the fake says: batch-major
        layer_inputs = [contiguous(a.transpose(1, 0, 2)) for a in layer_inputs]  # no copy
    return [*per_tape, *layer_inputs, *tape.masks]


def _layer_tape(layer: grukern.GRU, x, lengths, saved: list) -> LayerTape:
    """The LayerTape of the forward that produced `saved` (_saved_arrays) from x and lengths."""
    D, states = layer.directions, len(layer.params)
    layout = layout_of(x, layer.batch_first)
    x_tm = to_time_major(x, layout)  # the same view (or copy) the forward ran on
    lengths = checked_lengths(lengths, x_tm.shape, layout)
    per_tape, rest = saved[: _TAPE_ARRAYS * states], saved[_TAPE_ARRAYS * states :]
    inputs = rest[: layer.num_layers - 1]  # in x's layout
    layer_inputs = [x_tm, *(a.transpose(1, 0, 2) if layout.batch_first else a for a in inputs)]
    masks = tuple(rest[layer.num_layers - 1 :])
    name, _ = _backends.resolve(layer.backend)
    tapes = []
    for k in range(states):
        h, gates, hn = per_tape[_TAPE_ARRAYS * k : _TAPE_ARRAYS * (k + 1)]
        tape = Tape(
            x=layer_inputs[k // D], h=h, gates=gates, hn=hn, params=layer.params[k],
            backend=name, lengths=lengths, reverse=k % D == 1,
        )  # fmt: skip
        tapes.append(tape)
    return LayerTape(tuple(tapes), masks, lengths, layout, name)


# -- tensors <-> grukern -----------------------------------------------------------------------


def _pack_like(y: Tensor, like: PackedSequence) -> PackedSequence:
    """y (T, B, k), padded in the caller's batch order, packed with `like`'s batch sizes and
    order, as torch.nn.GRU packs its output."""
    if like.sorted_indices is not None:
        y = y.index_select(1, like.sorted_indices)  # batch rows in like's (length-sorted) order
    valid = torch.arange(y.shape[1]) < like.batch_sizes[:, None]  # (T, B): row b runs at step t
    valid = valid.to(y.device)
    return PackedSequence(y[valid], like.batch_sizes, like.sorted_indices, like.unsorted_indices)


# -- ONNX ------------------------------------------------------------------------------------------


def onnx_translation_table() -> dict:
    """{grukern::gru: its ONNX translation} for torch.onnx.export(..., dynamo=True,
    custom_translation_table=onnx_translation_table()): standard ONNX GRU nodes (opset 18),
    one per layer. Needs onnxscript."""
    return {torch.ops.grukern.gru.default: _onnx_gru}


def _onnx_gru(x, h0, lengths, weights, bias, bidirectional, batch_first, dropout, seed, backend):
    """grukern::gru as ONNX GRU nodes (linear_before_reset=1, gates [z; r; h]), traced by the
    exporter: x, h0 and weights are its symbolic values, the other arguments Python values."""
    from onnxscript import opset18 as op

    if lengths is not None or dropout:
        raise NotImplementedError(
            "grukern::gru exports to ONNX without lengths (PackedSequence) and without dropout "
            "(export the module in eval mode)"
        )
    D = 2 if bidirectional else 1
    per = _weights_per_direction(bias)
    H = weights[1].shape[1]  # weight_hh_l0 (3H, H)
    unbatched = len(x.shape) == 2
    if unbatched:  # (T, I) -> (T, 1, I)
        x = op.Unsqueeze(x, [1])
    elif batch_first:  # (B, T, I) -> (T, B, I)
        x = op.Transpose(x, perm=[1, 0, 2])
    if h0 is not None and unbatched:
        h0 = op.Unsqueeze(h0, [1])  # (L·D, H) -> (L·D, 1, H)
    states = []
    for layer in range(len(weights) // (per * D)):
        directions = [weights[(layer * D + d) * per : (layer * D + d + 1) * per] for d in range(D)]
        W = op.Concat(*(op.Unsqueeze(_onnx_gates(w[0], H), [0]) for w in directions), axis=0)
        R = op.Concat(*(op.Unsqueeze(_onnx_gates(w[1], H), [0]) for w in directions), axis=0)
        B = None
        if bias:  # (D, 6H): [Wb_zrh | Rb_zrh] per direction
            B = op.Concat(
                *(op.Unsqueeze(op.Concat(_onnx_gates(w[2], H), _onnx_gates(w[3], H), axis=0), [0])
                  for w in directions),
                axis=0,
            )  # fmt: skip
        initial = None if h0 is None else op.Slice(h0, [layer * D], [(layer + 1) * D], [0])
        Y, Y_h = op.GRU(
            x, W, R, B, None, initial, hidden_size=H, linear_before_reset=1,
            direction="bidirectional" if bidirectional else "forward",
        )  # fmt: skip
        # Y (T, D, B, H) -> (T, B, D·H): [forward | reverse] along features, as torch lays it
        x = op.Reshape(op.Transpose(Y, perm=[0, 2, 1, 3]), [0, 0, -1])
        states.append(Y_h)
    h_n = op.Concat(*states, axis=0)  # (L·D, B, H)
    if unbatched:
        return op.Squeeze(x, [1]), op.Squeeze(h_n, [1])
    return (op.Transpose(x, perm=[1, 0, 2]) if batch_first else x), h_n


def _onnx_gates(a, H: int):
    """torch's gate blocks [r; z; n] along axis 0 as ONNX's [z; r; h] (GRUParams.to_onnx).
    Slices, not one Split: the exporter folds single-output ops on weights into constants."""
    from onnxscript import opset18 as op

    r, z, n = (op.Slice(a, [g * H], [(g + 1) * H], [0]) for g in range(3))
    return op.Concat(z, r, n, axis=0)
