"""grukern.GRU: a stacked, optionally bidirectional GRU layer built from the one-layer kernels.

Shapes follow torch.nn.GRU (D = 2 when bidirectional, else 1; L = num_layers):

    x    (T, B, I), or (B, T, I) with batch_first=True, or (T, I) unbatched
    y    (T, B, D·H) in x's layout: [forward direction | reverse direction] along features
    h0, h_n  (L·D, B, H), or (L·D, H) unbatched; index l·D + d is layer l, direction d

Composition, all on the backend's single-layer forward/forward_train/backward:

    layer 0 reads x; layer l > 0 reads layer l-1's y (after dropout when training).
    direction 1 runs each sequence's valid part backwards in time (the kernels' reverse=True,
    _backends/_directions.py); its y comes back in x's order, so y_t of both directions belongs
    to input step t.

Variable lengths go into the kernels (padded steps hold the state, output zero), so a padded
batch costs one call per (layer, direction) whatever the mix of lengths.

With backend="cuda", x, h0, dy and dh_n may be device arrays (CuPy, or anything with
__cuda_array_interface__, adopted without copies; docs/cuda.md); everything the layer computes
between the kernel calls then stays on the device, and results come back as CuPy arrays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from grukern import _backends, _device
from grukern import onnx as onnx_export
from grukern._arguments import (
    check_array,
    check_batch_first,
    check_dropout,
    check_placement,
    check_sequence_shape,
    checked_lengths,
    contiguous,
    contiguous_params,
    initial_state,
    layout_of,
    restore_y,
    sequence_empty,
    to_time_major,
    upstream_gradients,
)
from grukern._backends._directions import Slot
from grukern.params import GRUParams, check_float_dtype, check_size, init_params
from grukern.tape import Layout, Tape


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class LayerTape:
    """What GRU.backward needs from GRU.forward_train.

    tapes    one single-layer Tape per (layer, direction), index l·D + d
    masks    the dropout multipliers applied to each layer's y but the last (each (T, B, D·H),
             0 or 1/(1-p); all 0 when p = 1); empty when dropout is off
    lengths  (B,) int64 or None; layout: how the caller laid out x
    """

    tapes: tuple[Tape, ...]
    masks: tuple[np.ndarray, ...]
    lengths: np.ndarray | None
    layout: Layout
    backend: str

    @property
    def nbytes(self) -> int:
        """Bytes kept for backward: every single-layer tape and the dropout masks."""
        return sum(t.nbytes for t in self.tapes) + sum(m.nbytes for m in self.masks)

    def __repr__(self) -> str:
        return (
            f"LayerTape({len(self.tapes)} tapes, {len(self.masks)} dropout masks, "
            f"backend={self.backend!r}, nbytes={self.nbytes})"
        )


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class LayerGradients:
    """Gradients of a loss with respect to x (x's shape), h0 (h0's shape) and every params entry
    (a list of GRUParams in the order of GRU.params)."""

    x: np.ndarray
    h0: np.ndarray
    params: list[GRUParams]

    def __repr__(self) -> str:
        return (
            f"LayerGradients(x={_device.describe(self.x)}, h0={_device.describe(self.h0)}, "
            f"params=[{len(self.params)} GRUParams])"
        )


class GRU:
    """A multi-layer, optionally bidirectional GRU with torch.nn.GRU's shapes and weight names.

    reset_after=True is torch's variant (and Keras's default); reset_after=False is the original
    GRU (Keras reset_after=False; torch has no such layer). Weights start as torch initialises
    them (uniform in ±1/√H), drawn from `seed`.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bidirectional: bool = False,
        batch_first: bool = False,
        dropout: float = 0.0,
        reset_after: bool = True,
        backend: str = "auto",
        dtype=np.float32,
        seed=None,
    ):
        self._configure(
            input_size, hidden_size, num_layers, bidirectional, batch_first, dropout, backend
        )
        dtype = check_float_dtype("dtype", dtype)
        seeds = np.random.SeedSequence(seed).spawn(num_layers * self.directions)
        self.params = [
            init_params(
                self._layer_input_size(k // self.directions),
                hidden_size,
                dtype=dtype,
                seed=seeds[k],
                reset_after=reset_after,
            )
            for k in range(num_layers * self.directions)
        ]

    @classmethod
    def from_params(
        cls,
        params: list[GRUParams],
        *,
        bidirectional: bool = False,
        batch_first: bool = False,
        dropout: float = 0.0,
        backend: str = "auto",
    ) -> GRU:
        """A layer running existing GRUParams (referenced, not copied), one per (layer,
        direction) in the order l·D + d; sizes, layer count, dtype and variant come from them."""
        D = 2 if bidirectional else 1
        if not isinstance(params, (list, tuple)) or not params or len(params) % D:
            raise ValueError(
                f"params must be a non-empty list of GRUParams, {D} per layer, got {params!r}"
            )
        if not isinstance(params[0], GRUParams):
            raise TypeError(f"params[0] must be a GRUParams, got {type(params[0]).__name__}")
        gru = cls.__new__(cls)
        gru._configure(
            params[0].input_size, params[0].hidden_size, len(params) // D, bidirectional,
            batch_first, dropout, backend,
        )  # fmt: skip
        gru.params = list(params)
        gru._check_params()
        return gru

    def _configure(
        self, input_size, hidden_size, num_layers, bidirectional, batch_first, dropout, backend
    ) -> None:
        """Check and store everything but the weights."""
        check_size("input_size", input_size)
        check_size("hidden_size", hidden_size)
        check_size("num_layers", num_layers)
        check_batch_first(batch_first)
        if not isinstance(bidirectional, (bool, np.bool_)):
            raise TypeError(f"bidirectional must be a bool, got {type(bidirectional).__name__}")
        dropout = check_dropout(dropout)
        _backends.resolve(backend)  # fail now on an unknown or unavailable backend
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.bidirectional = bool(bidirectional)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.backend = backend

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def dtype(self) -> np.dtype:
        return self.params[0].dtype

    @property
    def reset_after(self) -> bool:
        return self.params[0].reset_after

    def __repr__(self) -> str:
        return (
            f"grukern.GRU({self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"bidirectional={self.bidirectional}, batch_first={self.batch_first}, "
            f"dropout={self.dropout}, reset_after={self.reset_after}, backend={self.backend!r}, "
            f"dtype={self.dtype.name})"
        )

    # -- running ---------------------------------------------------------------------------

    def __call__(self, x, h0=None, lengths=None) -> tuple[np.ndarray, np.ndarray]:
        """Inference: y and h_n (no dropout, nothing kept for backward)."""
        y, h_n, _ = self._run(x, h0, lengths, rng=None, train=False)
        return y, h_n

    def forward_train(
        self, x, h0=None, lengths=None, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray, LayerTape]:
        """As __call__, with dropout between layers (drawn from rng) and a LayerTape for backward.

        rng is needed when dropout > 0 (pass np.random.default_rng(seed) for reproducible
        masks); it is ignored otherwise.
        """
        if self.dropout > 0 and self.num_layers > 1 and not isinstance(rng, np.random.Generator):
            raise TypeError(
                f"rng must be a numpy.random.Generator when dropout > 0 (dropout={self.dropout}),"
                f" got {type(rng).__name__}"
            )
        return self._run(x, h0, lengths, rng=rng, train=True)

    def backward(self, tape: LayerTape, dy=None, dh_n=None) -> LayerGradients:
        """Gradients given dL/dy (y's shape) and/or dL/dh_n (h_n's shape); the other is zero."""
        if not isinstance(tape, LayerTape):
            raise TypeError(
                f"tape must be the LayerTape of GRU.forward_train, got {type(tape).__name__}"
            )
        T, B, _ = tape.tapes[0].x.shape
        H, D = self.hidden_size, self.directions
        x_tm = tape.tapes[0].x  # where the forward ran: host or device
        dy_tm, dh_n_tm = upstream_gradients(
            dy, dh_n, dtype=self.dtype, layout=tape.layout, like=x_tm, T=T, B=B, features=D * H,
            H=H, states=len(self.params),
        )  # fmt: skip
        _, module = _backends.resolve(tape.backend)
        check_placement(tape.backend, tape.tapes[0].params, dy_tm, dh_n_tm)
        dh0 = _device.module_of(x_tm).empty((len(self.params), B, H), dtype=self.dtype)
        dparams: list[GRUParams | None] = [None] * len(self.params)
        d_out = dy_tm  # dL/d(this layer's y), (T, B, D·H)
        for layer in reversed(range(self.num_layers)):
            d_in = None  # dL/d(this layer's input), summed over directions
            d_out_slots = d_out.reshape(T, B, D, H)  # direction d reads its slot
            for d in range(D):
                k = layer * D + d
                dy_d = Slot(d_out_slots, d)
                grads = module.backward(tape.tapes[k], dy_d, contiguous(dh_n_tm[k]))
                if d_in is None:
                    d_in = grads.x  # a new array: summed into in place
                else:
                    d_in += grads.x
                dh0[k], dparams[k] = grads.h0, grads.params
            d_out = d_in * tape.masks[layer - 1] if layer > 0 and tape.masks else d_in
        return LayerGradients(
            x=restore_y(d_out, tape.layout),
            h0=dh0[:, 0] if tape.layout.unbatched else dh0,
            params=dparams,
        )

    def _run(self, x, h0, lengths, *, rng, train):
        name, module = _backends.resolve(self.backend)
        x_tm, h0_tm, lengths, layout = self._prepare(x, h0, lengths)
        D = self.directions
        params = [contiguous_params(p) for p in self.params]  # the kernels read rows in place
        for p in params:
            check_placement(name, p, x_tm, h0_tm)
        xp = _device.module_of(x_tm)  # NumPy, or CuPy for device arrays
        h_n = xp.empty_like(h0_tm)  # (L·D, B, H)
        tapes, masks = [], []
        layer_input = x_tm  # (T, B, I) for layer 0, then (T, B, D·H)
        T, B, H = x_tm.shape[0], x_tm.shape[1], self.hidden_size
        for layer in range(self.num_layers):
            y = sequence_empty((T, B, D, H), self.dtype, like=layer_input)  # a slot per direction
            for d in range(D):
                k = layer * D + d
                args = layer_input, params[k], contiguous(h0_tm[k]), lengths, d == 1, Slot(y, d)
                if train:
                    _, h_n[k], tape = module.forward_train(*args)
                    tapes.append(dataclasses.replace(tape, backend=name))
                else:
                    _, h_n[k] = module.forward(*args)
            y = y.reshape(T, B, D * H)  # [forward | reverse] along features
            if train and self.dropout > 0 and layer < self.num_layers - 1:
                keep = rng.random(y.shape) >= self.dropout  # torch: Bernoulli(1 - p) ...
                if self.dropout < 1:
                    mask = keep.astype(self.dtype) / self.dtype.type(1 - self.dropout)
                else:  # p = 1 keeps nothing (and 1/(1 - p) would make 0·inf = NaN)
                    mask = np.zeros(y.shape, dtype=self.dtype)
                masks.append(xp.asarray(mask))
                y = y * masks[-1]  # ... scaled by 1/(1 - p)
            layer_input = y
        tape = LayerTape(tuple(tapes), tuple(masks), lengths, layout, name) if train else None
        h_n_out = h_n[:, 0] if layout.unbatched else h_n
        return restore_y(layer_input, layout), h_n_out, tape

    def _prepare(self, x, h0, lengths):
        """Check a call's arguments; return time-major x, h0 (L·D, B, H), lengths, layout."""
        self._check_params()
        x = _device.adopt("x", x)
        check_array("x", x, self.dtype, device=True)
        check_sequence_shape(
            "x", x.shape, self.input_size, self.batch_first, "the layer's input_size"
        )
        layout = layout_of(x, self.batch_first)
        x_tm = to_time_major(x, layout)
        h0_tm = initial_state(
            h0, dtype=self.dtype, layout=layout, like=x, B=x_tm.shape[1], H=self.hidden_size,
            states=len(self.params),
        )  # fmt: skip
        return x_tm, h0_tm, checked_lengths(lengths, x_tm.shape, layout), layout

    def _layer_input_size(self, layer: int) -> int:
        return self.input_size if layer == 0 else self.directions * self.hidden_size

    def _check_params(self) -> None:
        """The params list must still fit the layer (it is public and may have been replaced)."""
        expected = len(self.params) == self.num_layers * self.directions
        for k, p in enumerate(self.params if expected else ()):
            if not isinstance(p, GRUParams):
                raise TypeError(f"params[{k}] must be a GRUParams, got {type(p).__name__}")
            p.validate()
            shape = (self._layer_input_size(k // self.directions), self.hidden_size)
            if (p.input_size, p.hidden_size) != shape or p.dtype != self.dtype:
                raise ValueError(
                    f"params[{k}] has input_size={p.input_size}, hidden_size={p.hidden_size}, "
                    f"dtype={p.dtype}; layer {k // self.directions} needs input_size={shape[0]},"
                    f" hidden_size={shape[1]}, dtype={self.dtype}"
                )
        if not expected:
            raise ValueError(
                f"params must hold num_layers·directions = "
                f"{self.num_layers * self.directions} GRUParams, got {len(self.params)}"
            )

    # -- torch interchange -------------------------------------------------------------------

    def to_device(self) -> GRU:
        """Move the weights to the GPU once, for backend="cuda" (GRUParams.to_device); self."""
        self.params = [p.to_device() for p in self.params]
        return self

    def to_host(self) -> GRU:
        """Move the weights back to NumPy arrays; self."""
        self.params = [p.to_host() for p in self.params]
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """torch.nn.GRU's keys and shapes (weight_ih_l0, ..., bias_hh_l1_reverse), as NumPy
        copies wherever the weights live."""
        return {
            key: np.array(_device.to_host(array), copy=True)
            for k, p in enumerate(self.params)
            for key, array in zip(self._keys(k), p.arrays(), strict=True)
        }

    def to_torch_state_dict(self) -> dict:
        """state_dict() as torch tensors (copies on the CPU), which torch.nn.GRU's own
        load_state_dict takes: torch.nn.GRU(...).load_state_dict(gru.to_torch_state_dict()).
        reset_after=True only (torch has no other variant)."""
        if not self.reset_after:
            raise ValueError(
                "torch.nn.GRU implements only the reset_after=True variant; this layer has "
                "reset_after=False"
            )
        import torch

        return {key: torch.from_numpy(value) for key, value in self.state_dict().items()}

    def load_state_dict(self, state: Mapping) -> None:
        """Copy weights in from a state dict with torch.nn.GRU's keys (NumPy arrays or tensors).

        Every key must be present and nothing else; shapes and dtype must match the layer.
        """
        expected = [key for k in range(len(self.params)) for key in self._keys(k)]
        missing = [key for key in expected if key not in state]
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise KeyError(f"state dict keys differ: missing {missing}, unexpected {unexpected}")
        loaded = []
        for k, p in enumerate(self.params):
            arrays = []
            for key, current in zip(self._keys(k), p.arrays(), strict=True):
                value = _as_numpy(state[key])
                if value.shape != current.shape:
                    raise ValueError(
                        f"state dict entry {key!r} has shape {value.shape}; the layer needs "
                        f"{current.shape}"
                    )
                if value.dtype != current.dtype:
                    raise TypeError(
                        f"state dict entry {key!r} has dtype {value.dtype}; the layer needs "
                        f"{current.dtype} (convert one of them: grukern never casts silently)"
                    )
                arrays.append(value.copy())
            loaded.append(GRUParams(*arrays, reset_after=p.reset_after))
        self.params = loaded

    @classmethod
    def from_torch(cls, module, *, backend: str = "auto") -> GRU:
        """A grukern.GRU with the configuration and (copied) weights of a torch.nn.GRU."""
        if not module.bias:
            raise ValueError("from_torch needs a torch.nn.GRU with bias=True")
        if getattr(module, "proj_size", 0):
            raise ValueError("torch.nn.GRU has no proj_size; got a module that uses one")
        state = module.state_dict()
        gru = cls(
            module.input_size,
            module.hidden_size,
            module.num_layers,
            bidirectional=module.bidirectional,
            batch_first=module.batch_first,
            dropout=module.dropout,
            backend=backend,
            dtype=_as_numpy(state["weight_ih_l0"]).dtype,
        )
        gru.load_state_dict(state)
        return gru

    def to_torch(self):
        """A torch.nn.GRU with this layer's configuration and (copied) weights."""
        import torch

        state = self.to_torch_state_dict()  # (refuses reset_after=False)
        module = torch.nn.GRU(
            self.input_size,
            self.hidden_size,
            self.num_layers,
            bidirectional=self.bidirectional,
            batch_first=self.batch_first,
            dropout=self.dropout,
            dtype=torch.float64 if self.dtype == np.float64 else torch.float32,
        )
        module.load_state_dict(state)
        return module

    # -- ONNX export -------------------------------------------------------------------------

    def to_onnx(
        self,
        path=None,
        *,
        opset: int = onnx_export.DEFAULT_OPSET,
        inputs=onnx_export.INPUTS,
        recurrence: str = "auto",
    ):
        """This layer's inference forward as an onnx.ModelProto, also saved to `path` if given
        (docs/onnx.md): graph inputs x, then h0 and lengths as far as `inputs` names them;
        outputs y and h_n, as __call__ returns them. recurrence: "gru" (ONNX GRU nodes), "scan"
        (the equations in a Scan) or "auto" ("gru" for float32, "scan" for float64, which ONNX
        Runtime's GRU kernel does not run). Needs the onnx package (grukern[onnx])."""
        return onnx_export.export(self, path, opset=opset, inputs=inputs, recurrence=recurrence)

    def _keys(self, k: int) -> list[str]:
        """torch's names of params[k]'s arrays, in GRUParams.arrays() order."""
        suffix = f"_l{k // self.directions}" + ("_reverse" if k % self.directions else "")
        return [f"{name}{suffix}" for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


def _as_numpy(value) -> np.ndarray:
    """A NumPy array from a NumPy array or a (CPU) torch tensor, without importing torch."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(f"state dict values must be NumPy arrays or tensors, got {type(value)}")
    return value
