"""grukern as a PyTorch layer: an autograd Function and a drop-in for torch.nn.GRU.

    from grukern.torch import GRU
    gru = GRU(16, 32, num_layers=2, bidirectional=True)   # torch.nn.GRU's arguments
    y, h_n = gru(x)            # x: Tensor (T, B, I) / (B, T, I) / (T, I), or a PackedSequence
    y.sum().backward()         # gradients from grukern's BPTT kernels

Tensors and arrays share memory both ways: weights, x and h0 reach the kernels as views
(`tensor.detach().numpy()` on the CPU, a CuPy view through `__cuda_array_interface__` on a GPU),
and y, h_n and every gradient come back as views of the arrays grukern allocated
(`torch.from_numpy`, `torch.as_tensor`). The only copies are those grukern.GRU makes itself
(layout changes, non-contiguous inputs) and the unpacking/repacking of a PackedSequence.

CPU tensors run grukern's numba backend ("auto"; "numpy" on request), CUDA tensors its CUDA
backend (needs CuPy: grukern[cuda12] or grukern[cuda13]). Only `_backend_for`, `_arrays` and
`_tensor` depend on the device (benchmarks/gpu_check.py checks that path on a GPU).

This module is not imported by `import grukern`: torch is optional.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import torch
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

import grukern
from grukern import _backends, _device
from grukern._arguments import check_batch_first, check_dropout, check_sequence_shape
from grukern.params import GRUParams, check_size

_WEIGHTS_PER_DIRECTION = 4  # weight_ih, weight_hh, bias_ih, bias_hh (GRUParams.arrays() order)
_DTYPES = (torch.float32, torch.float64)


@dataclasses.dataclass(frozen=True)
class GRUConfig:
    """Everything GRUFunction needs besides tensors.

    dropout is applied between layers (0 disables it; the module passes 0 in eval mode); its
    masks come from np.random.default_rng(seed), so seed is required when dropout > 0.
    """

    bidirectional: bool = False
    batch_first: bool = False
    dropout: float = 0.0
    seed: int | None = None
    backend: str = "auto"

    def __post_init__(self):
        if self.dropout and self.seed is None:
            raise ValueError(f"GRUConfig.seed must be an int when dropout > 0 ({self.dropout})")


class GRUFunction(torch.autograd.Function):
    """y, h_n = GRUFunction.apply(x, h0, lengths, config, *weights): grukern.GRU under autograd.

    x        (T, B, I), (B, T, I) with config.batch_first, or (T, I) unbatched
    h0       (L·D, B, H), (L·D, H) unbatched, or None for zeros
    lengths  None, or an int64 CPU tensor (B,) of valid steps per row (padded steps output 0)
    weights  torch.nn.GRU's flat weights, for each layer l and direction d in order l·D + d:
             weight_ih (3H, I or D·H), weight_hh (3H, H), bias_ih (3H,), bias_hh (3H,)
    y        (T, B, D·H) in x's layout; h_n like h0

    The LayerTape is kept on ctx; x and the weights are referenced, not copied, so modifying them
    in place before backward raises (torch's saved-tensor version check), as for torch's own ops.
    """

    @staticmethod
    def forward(ctx, x, h0, lengths, config, *weights):
        keep_tape = any(ctx.needs_input_grad)
        y, h_n, ctx.layer, ctx.tape = _run(x, h0, lengths, config, weights, keep_tape=keep_tape)
        ctx.save_for_backward(x, *weights)  # for the version check only: the tape reads them
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not zeros
        return y, h_n

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_n):
        # dy like y, dh_n like h_n; None where no gradient reached that output.
        _ = ctx.saved_tensors  # raises if x or a weight was modified in place since forward
        if dy is None and dh_n is None:
            return (None,) * len(ctx.needs_input_grad)
        dy_a, dh_n_a = _arrays(dy, dh_n)
        grads = ctx.layer.backward(ctx.tape, dy=dy_a, dh_n=dh_n_a)
        dweights = (_tensor(a) for p in grads.params for a in p.arrays())
        all_grads = (_tensor(grads.x), _tensor(grads.h0), None, None, *dweights)
        return tuple(
            g if needed else None for g, needed in zip(all_grads, ctx.needs_input_grad, strict=True)
        )


def gru(x, h0, lengths, config: GRUConfig, weights) -> tuple[torch.Tensor, torch.Tensor]:
    """y, h_n as GRUFunction computes them (same arguments, weights as a sequence), through
    GRUFunction when autograd will need it, else through the layer alone (no tape kept)."""
    tensors = (x, h0, *weights)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return GRUFunction.apply(x, h0, lengths, config, *weights)
    y, h_n, _, _ = _run(x, h0, lengths, config, weights, keep_tape=False)
    return y, h_n


class GRU(torch.nn.Module):
    """torch.nn.GRU's interface and parameters, computed by grukern.

    Arguments are torch.nn.GRU's (bias must be True) plus `backend`: "auto" (numba for CPU
    tensors, cuda for CUDA tensors), "numba", "numpy" or "cuda". Parameters have torch.nn.GRU's
    names, shapes, order and initialisation (uniform in ±1/√H), so state dicts load both ways
    and, under one torch.manual_seed, both modules start from the same weights.

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
            check_size(name, value)
        if bias is not True:
            raise ValueError(
                f"bias must be True, got {bias!r}: grukern's kernels always add bias_ih and "
                "bias_hh (for a bias-free GRU, zero them and set requires_grad=False)"
            )
        check_batch_first(batch_first)
        if not isinstance(bidirectional, bool):
            raise TypeError(f"bidirectional must be a bool, got {type(bidirectional).__name__}")
        dropout = check_dropout(dropout)
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
        if dtype not in _DTYPES:
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")

        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.bidirectional = bias, batch_first, bidirectional
        self.dropout, self.backend = float(dropout), backend
        D, H = self.directions, hidden_size
        self._weight_names = []  # torch.nn.GRU's _flat_weights_names order: l·D + d, then 4 each
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else D * H
            for d in range(D):
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                for name, shape in (
                    ("weight_ih", (3 * H, layer_input)), ("weight_hh", (3 * H, H)),
                    ("bias_ih", (3 * H,)), ("bias_hh", (3 * H,)),
                ):  # fmt: skip
                    param = torch.nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
                    self.register_parameter(name + suffix, param)
                    self._weight_names.append(name + suffix)
        self.reset_parameters()

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
            f"batch_first={self.batch_first}, dropout={self.dropout}, "
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
        self._check_call(x, hx, weights[0].dtype, packed)
        dropout = self.dropout if self.training and self.num_layers > 1 else 0.0
        config = GRUConfig(
            bidirectional=self.bidirectional,
            batch_first=self.batch_first and not packed,  # packed data is time-major
            dropout=dropout,
            seed=int(torch.randint(2**62, ())) if dropout else None,
            backend=self.backend,
        )
        y, h_n = gru(x, hx, lengths, config, weights)
        return (_pack_like(y, input) if packed else y), h_n

    def _check_call(self, x, hx, dtype: torch.dtype, packed: bool) -> None:
        """torch.nn.GRU's argument checks, naming `input` and `hx`."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a Tensor or PackedSequence, got {type(x).__name__}")
        batch_first = self.batch_first and not packed  # packed input is unpacked time-major
        check_sequence_shape("input", x.shape, self.input_size, batch_first, "input_size")
        if dtype not in _DTYPES:
            raise TypeError(
                f"the module's parameters have dtype {dtype}; grukern computes in torch.float32 or"
                " torch.float64 (convert with module.float() or module.double())"
            )
        if x.dtype != dtype:
            raise TypeError(
                f"input has dtype {x.dtype} but the module's parameters have dtype {dtype}; "
                "convert one of them (input.to(...) or module.to(...))"
            )
        if hx is None:
            return
        if not isinstance(hx, torch.Tensor):
            raise TypeError(f"hx must be a Tensor or None, got {type(hx).__name__}")
        batch = () if x.dim() == 2 else (x.shape[0 if batch_first else 1],)
        expected = (self.num_layers * self.directions, *batch, self.hidden_size)
        if tuple(hx.shape) != expected:
            raise ValueError(
                f"hx must have shape {expected} (num_layers·directions, "
                f"{'batch, ' if batch else ''}hidden_size), got {tuple(hx.shape)}"
            )
        if hx.dtype != dtype:
            raise TypeError(f"hx has dtype {hx.dtype} but the parameters have dtype {dtype}")


# -- tensors <-> grukern -----------------------------------------------------------------------


def _run(x, h0, lengths, config: GRUConfig, weights, *, keep_tape: bool):
    """grukern.GRU on tensors: (y, h_n, layer, tape), tape None unless keep_tape is true."""
    backend = _backend_for(_device_of(x, h0, *weights), config.backend)
    D = 2 if config.bidirectional else 1
    if not weights or len(weights) % (_WEIGHTS_PER_DIRECTION * D):
        raise ValueError(
            f"weights must be torch.nn.GRU's flat weights, {_WEIGHTS_PER_DIRECTION * D} per "
            f"layer (weight_ih, weight_hh, bias_ih, bias_hh per direction), got {len(weights)}"
        )
    # The kernels read weights as C-contiguous arrays; .contiguous() is the tensor itself if so.
    arrays = _arrays(*(w.contiguous() for w in weights))
    params = [
        GRUParams(*arrays[k : k + _WEIGHTS_PER_DIRECTION])
        for k in range(0, len(arrays), _WEIGHTS_PER_DIRECTION)
    ]  # one per (layer, direction), l·D + d
    layer = grukern.GRU.from_params(
        params,
        bidirectional=config.bidirectional,
        batch_first=config.batch_first,
        dropout=config.dropout,
        backend=backend,
    )
    x_a, h0_a, lengths_a = _arrays(x, h0, lengths)
    if keep_tape or config.dropout:  # dropout runs in forward_train even when no tape is kept
        rng = np.random.default_rng(config.seed) if config.dropout else None
        y, h_n, tape = layer.forward_train(x_a, h0_a, lengths_a, rng=rng)
    else:
        (y, h_n), tape = layer(x_a, h0_a, lengths_a), None
    return _tensor(y), _tensor(h_n), layer, tape if keep_tape else None


def _device_of(*tensors) -> torch.device:
    """The one device of all given tensors (None entries skipped)."""
    devices = {t.device for t in tensors if t is not None}
    if len(devices) != 1:
        raise ValueError(
            f"input, hx and the weights must be on one device, got {sorted(map(str, devices))}"
        )
    return devices.pop()


def _backend_for(device: torch.device, backend: str) -> str:
    """The grukern backend that runs tensors on `device`."""
    if device.type == "cuda":
        if backend not in ("auto", "cuda"):
            raise ValueError(f"backend {backend!r} runs CPU tensors; the tensors are on {device}")
        return "cuda"
    if device.type != "cpu":
        raise NotImplementedError(
            f"grukern.torch runs CPU and CUDA tensors, got tensors on {device}"
        )
    if backend == "cuda":
        raise ValueError("backend 'cuda' needs CUDA tensors; the tensors are on the CPU")
    if backend == "auto":
        return next(name for name in grukern.backends() if name != "cuda")
    return backend


def _arrays(*tensors) -> list:
    """Views of tensors (shared memory, strides kept): NumPy arrays of CPU tensors, CuPy
    arrays of CUDA tensors; None stays None."""
    return [
        None
        if t is None
        else _device.adopt("tensor", t.detach())
        if t.is_cuda
        else t.detach().numpy()
        for t in tensors
    ]


def _tensor(array) -> torch.Tensor:
    """A tensor sharing `array`'s memory (a NumPy array, or a CuPy array on its GPU)."""
    if isinstance(array, np.ndarray):
        return torch.from_numpy(array)
    return torch.as_tensor(array, device=torch.device("cuda", array.device.id))


def _pack_like(y: torch.Tensor, like: PackedSequence) -> PackedSequence:
    """y (T, B, k), padded in the caller's batch order, packed with `like`'s batch sizes and
    order, as torch.nn.GRU packs its output."""
    if like.sorted_indices is not None:
        y = y.index_select(1, like.sorted_indices)  # batch rows in like's (length-sorted) order
    valid = torch.arange(y.shape[1]) < like.batch_sizes[:, None]  # (T, B): row b runs at step t
    valid = valid.to(y.device)
    return PackedSequence(y[valid], like.batch_sizes, like.sorted_indices, like.unsorted_indices)
