"""Export a grukern.GRU to an ONNX model (grukern.GRU.to_onnx): train with grukern, deploy with
ONNX Runtime or any other ONNX runtime. Needs the onnx package (grukern[onnx]), imported here
only when a model is built.

The model computes grukern.GRU's inference forward (no dropout):

    inputs   x        (T, B, I), or (B, T, I) for a batch_first layer; T and B are dynamic
             h0       (L·D, B, H)   optional: zeros when the model has no such input
             lengths  (B,) int64    optional: every row runs its full T steps without it
    outputs  y        (T, B, D·H) in x's layout: [forward | reverse] along features
             h_n      (L·D, B, H)

Padded steps follow grukern: y is exactly zero there, h_n holds each row's state at its last
valid step (for the reverse direction, after step 0), and the reverse direction runs
each row's valid part backwards. A row of length 0 outputs zeros and keeps its h0.

Two ways to write the recurrence (`recurrence`):

    "gru"   one ONNX GRU node per layer (direction "forward" or "bidirectional"), which runtimes
            run as one fused kernel. ONNX Runtime's GRU kernel computes in float32 only.
    "scan"  per (layer, direction) one input MatMul and a Scan over time whose body is one step
            of docs/math.md's equations in MatMul, Sigmoid, Tanh and Where; ONNX Runtime runs
            it in float32 and float64.
    "auto"  "gru" for float32 layers, "scan" for float64 ones.
"""

from __future__ import annotations

import os

import numpy as np

DEFAULT_OPSET = 17
MIN_OPSET = 14  # GRU-14, Reshape-14 (allowzero) and input-taking Slice/Squeeze/Split
INPUTS = ("x", "h0", "lengths")  # the graph inputs a model may have, in their graph order
RECURRENCES = ("auto", "gru", "scan")


def export(gru, path=None, *, opset: int = DEFAULT_OPSET, inputs=INPUTS, recurrence="auto"):
    """The onnx.ModelProto of `gru` (a grukern.GRU), also saved to `path` when given.

    inputs: which of "x", "h0", "lengths" the model takes ("x" always); graph inputs keep the
    order x, h0, lengths whatever the order given. The model passes onnx.checker.check_model.
    """
    onnx = _import_onnx()
    _check_layer(gru)
    path = _checked_path(path)
    opset = _checked_opset(opset, onnx)
    names = _checked_inputs(inputs)
    recurrence = _checked_recurrence(recurrence, gru.dtype)
    graph = _Graph(gru, names, recurrence).build()
    model = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid("", opset)],
        producer_name="grukern",
        doc_string=repr(gru),
    )
    onnx.checker.check_model(model, full_check=True)
    if path is not None:
        onnx.save_model(model, path)
    return model


def _import_onnx():
    try:
        import onnx
        import onnx.numpy_helper
    except ImportError as error:
        raise ImportError(
            "grukern.GRU.to_onnx needs the onnx package: pip install onnx "
            "(or pip install 'grukern[onnx]')"
        ) from error
    return onnx


# -- argument checks -------------------------------------------------------------------------


def _check_layer(gru) -> None:
    from grukern.layer import GRU  # (grukern.layer imports this module)

    if not isinstance(gru, GRU):
        raise TypeError(f"to_onnx exports a grukern.GRU, got {type(gru).__name__}")
    gru._check_params()
    on_device = [k for k, p in enumerate(gru.params) if p.on_device]
    if on_device:
        raise TypeError(
            f"to_onnx reads the weights on the host, but params {on_device} are on the GPU; "
            "call gru.to_host() first"
        )


def _checked_path(path) -> str | None:
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str, an os.PathLike or None, got {type(path).__name__}")
    path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"path must name a file with a str, got {path!r}")
    return path


def _checked_opset(opset, onnx) -> int:
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise TypeError(f"opset must be an int in [{MIN_OPSET}, {newest}], got {opset!r}")
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(
            f"opset must lie in [{MIN_OPSET}, {newest}] (the installed onnx's newest), got {opset}"
        )
    return int(opset)


def _checked_inputs(inputs) -> tuple[str, ...]:
    if isinstance(inputs, str) or not isinstance(inputs, (tuple, list)):
        raise TypeError(f"inputs must be a tuple of names from {INPUTS}, got {inputs!r}")
    unknown = [name for name in inputs if name not in INPUTS]
    if unknown or len(set(inputs)) != len(inputs) or "x" not in inputs:
        raise ValueError(
            f"inputs must name 'x' and optionally 'h0' and 'lengths', each once; got "
            f"{tuple(inputs)!r}" + (f" (unknown: {unknown})" if unknown else "")
        )
    return tuple(name for name in INPUTS if name in inputs)


def _checked_recurrence(recurrence, dtype: np.dtype) -> str:
    if recurrence not in RECURRENCES:
        raise ValueError(f"recurrence must be one of {RECURRENCES}, got {recurrence!r}")
    if recurrence == "auto":
        return "gru" if dtype == np.float32 else "scan"
    return recurrence


# -- the graph ---------------------------------------------------------------------------------


class _Graph:
    """Nodes and initializers of one export; every method adds nodes and returns value names."""

    def __init__(self, gru, inputs: tuple[str, ...], recurrence: str, prefix: str = ""):
        import onnx

        self.onnx = onnx
        self.gru = gru
        self.inputs = inputs
        self.recurrence = recurrence
        self.elem = onnx.helper.np_dtype_to_tensor_dtype(gru.dtype)
        self.nodes = []
        self.initializers = []
        self.prefix = prefix  # a Scan body's names must not repeat the outer graph's
        self._count = 0

    # helpers

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{self.prefix}{stem}_{self._count}"

    def const(self, stem: str, array) -> str:
        name = self.name(stem)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def ints(self, stem: str, values) -> str:
        return self.const(stem, np.array(values, dtype=np.int64))

    def op(self, op_type: str, inputs, outputs=1, **attributes):
        """Add a node; its output name, or a list of names for several outputs. outputs: their
        count (names are made up) or their names."""
        names = (
            [self.name(op_type.lower()) for _ in range(outputs)]
            if isinstance(outputs, int)
            else outputs
        )
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, names, **attributes))
        return names[0] if len(names) == 1 else names

    def value_info(self, name: str, shape):
        return self.onnx.helper.make_tensor_value_info(name, self.elem, shape)

    # the model

    def build(self):
        gru = self.gru
        H, D, L = gru.hidden_size, gru.directions, gru.num_layers
        sequence = ["B", "T"] if gru.batch_first else ["T", "B"]
        x = self.op("Transpose", ["x"], perm=[1, 0, 2]) if gru.batch_first else "x"  # (T, B, I)
        padded = "lengths" in self.inputs
        if self.recurrence == "gru":
            run, padding = self.gru_layer, self.gru_padding() if padded else None
        else:
            run, padding = self.scan_layer, self.valid_steps(x) if padded else None
        layer_input, states = x, []
        for layer in range(L):
            layer_input, h_n = run(layer, layer_input, padding)  # (T, B, D·H), (D, B, H)
            states.append(h_n)
        y = self.op("Transpose", [layer_input], perm=[1, 0, 2]) if gru.batch_first else layer_input
        self.op("Identity", [y], outputs=["y"])
        self.op("Concat", states, outputs=["h_n"], axis=0)
        graph_inputs = {
            "x": self.value_info("x", [*sequence, gru.input_size]),
            "h0": self.value_info("h0", [L * D, "B", H]),
            "lengths": self.onnx.helper.make_tensor_value_info(
                "lengths", self.onnx.TensorProto.INT64, ["B"]
            ),
        }
        return self.onnx.helper.make_graph(
            self.nodes,
            "grukern_GRU",
            inputs=[graph_inputs[name] for name in self.inputs],
            outputs=[
                self.value_info("y", [*sequence, D * H]),
                self.value_info("h_n", [L * D, "B", H]),
            ],
            initializer=self.initializers,
        )

    def initial_state(self, first: int, count: int) -> str | None:
        """h0[first : first + count], (count, B, H); None without an h0 input."""
        if "h0" not in self.inputs:
            return None
        starts, ends = self.ints("start", [first]), self.ints("end", [first + count])
        return self.op("Slice", ["h0", starts, ends, self.ints("axes", [0])])

    # recurrence="gru": one GRU node per layer

    def gru_padding(self) -> tuple[str, str]:
        """lengths as GRU nodes take them, int32 (B,), and its rows of length 0, (1, B, 1)."""
        seq_lens = self.op("Cast", ["lengths"], to=self.onnx.TensorProto.INT32)
        empty = self.op("Equal", ["lengths", self.ints("zero", 0)])
        return seq_lens, self.op("Unsqueeze", [empty, self.ints("axes", [0, 2])])

    def gru_layer(self, layer: int, x: str, padding) -> tuple[str, str]:
        """(y (T, B, D·H), h_n (D, B, H)) of one layer from its input x (T, B, I); padding:
        gru_padding()'s, or None without lengths."""
        H, D = self.gru.hidden_size, self.gru.directions
        weights = [p.to_onnx() for p in self.gru.params[layer * D : (layer + 1) * D]]
        W, R, B = (
            self.const(f"l{layer}_{key}", np.concatenate([w[key] for w in weights]))
            for key in ("W", "R", "B")
        )  # (D, 3H, I), (D, 3H, H), (D, 6H): direction d is params[layer·D + d]
        seq_lens, empty = padding or ("", None)
        h0 = self.initial_state(layer * D, D)
        Y, Y_h = self.op(
            "GRU", [x, W, R, B, seq_lens, h0 or ""], outputs=2, hidden_size=H,
            direction="bidirectional" if D == 2 else "forward",
            linear_before_reset=weights[0]["linear_before_reset"],
        )  # fmt: skip
        if empty and h0:  # ONNX Runtime's Y_h is 0, not h0, for a row of length 0
            Y_h = self.op("Where", [empty, h0, Y_h])
        y = self.op("Transpose", [Y], perm=[0, 2, 1, 3])  # (T, D, B, H) -> (T, B, D, H)
        return self.op("Reshape", [y, self.ints("shape", [0, 0, D * H])]), Y_h

    # recurrence="scan": the equations, one Scan per direction

    def scan_layer(self, layer: int, x: str, valid: str | None) -> tuple[str, str]:
        """(y (T, B, D·H), h_n (D, B, H)) of one layer from its input x (T, B, I); valid:
        valid_steps()'s, or None without lengths."""
        D = self.gru.directions
        ys, states = [], []
        for d in range(D):
            y, h_n = self.scan_direction(layer * D + d, x, valid, reverse=d == 1)
            ys.append(y)
            states.append(self.op("Unsqueeze", [h_n, self.ints("axes", [0])]))
        if D == 1:
            return ys[0], states[0]
        return self.op("Concat", ys, axis=2), self.op("Concat", states, axis=0)

    def valid_steps(self, x: str) -> str:
        """(T, B, 1) bool: t < lengths[b], T read from x (T, B, I)."""
        T = self.op("Gather", [self.op("Shape", [x]), self.ints("zero", 0)])
        t = self.op("Range", [self.ints("zero", 0), T, self.ints("one", 1)])  # (T,)
        t = self.op("Unsqueeze", [t, self.ints("axes", [1])])  # (T, 1)
        return self.op("Unsqueeze", [self.op("Less", [t, "lengths"]), self.ints("axes", [2])])

    def scan_direction(self, k: int, x: str, valid: str | None, *, reverse: bool):
        """(y (T, B, H), h_n (B, H)) of params[k] run over x (T, B, I), backwards if reverse.

        A padded step holds the state, so running backwards from T - 1 starts each row's
        reverse pass at its last valid step, as grukern's reverse direction does."""
        weights = self.gru.params[k].to_onnx()
        H = self.gru.hidden_size
        xw = self.affine(x, weights["W"][0], weights["B"][0][: 3 * H])  # (T, B, 3H), [z; r; h]
        h0 = self.initial_state(k, 1)
        h0 = self.op("Squeeze", [h0, self.ints("axes", [0])]) if h0 else self.zero_state(x)
        scan_inputs = [xw] if valid is None else [xw, valid]
        h_n, y = self.op(
            "Scan", [h0, *scan_inputs], outputs=2, num_scan_inputs=len(scan_inputs),
            body=self.step_body(k, masked=valid is not None),
            scan_input_directions=[int(reverse)] * len(scan_inputs),
            scan_output_directions=[int(reverse)],
        )  # fmt: skip
        return y, h_n

    def zero_state(self, x: str) -> str:
        """Zeros (B, H) of the layer's dtype, B read from x (T, B, I)."""
        B = self.op("Gather", [self.op("Shape", [x]), self.ints("one", [1])])
        shape = self.op("Concat", [B, self.ints("H", [self.gru.hidden_size])], axis=0)
        zero = self.onnx.numpy_helper.from_array(np.zeros(1, self.gru.dtype))
        return self.op("ConstantOfShape", [shape], value=zero)

    def step_body(self, k: int, *, masked: bool):
        """The Scan body of one time step of params[k]: state h (B, H); scan inputs
        xw_t = W x_t + b_W (B, 3H) and, if masked, valid_t (B, 1) bool; outputs the next state
        h_out and y_t, both h_t at a valid step, h and 0 at a padded one."""
        step = _Graph(self.gru, (), self.recurrence, prefix=f"step{k}/")
        h_t = step.step(self.gru.params[k].to_onnx(), "h", "xw_t")
        if masked:
            zero = step.const("zero", np.zeros(1, self.gru.dtype))
            step.op("Where", ["valid_t", h_t, "h"], outputs=["h_out"])
            step.op("Where", ["valid_t", h_t, zero], outputs=["y_t"])
        else:
            step.op("Identity", [h_t], outputs=["h_out"])
            step.op("Identity", [h_t], outputs=["y_t"])
        H = self.gru.hidden_size
        inputs = [step.value_info("h", ["B", H]), step.value_info("xw_t", ["B", 3 * H])]
        if masked:
            bool_ = self.onnx.TensorProto.BOOL
            inputs.append(self.onnx.helper.make_tensor_value_info("valid_t", bool_, ["B", 1]))
        outputs = [step.value_info("h_out", ["B", H]), step.value_info("y_t", ["B", H])]
        return self.onnx.helper.make_graph(
            step.nodes, f"step_{k}", inputs, outputs, initializer=step.initializers
        )

    def step(self, weights: dict, h: str, xw: str) -> str:
        """h_t (B, H) from h (B, H) and xw = W x_t + b_W (B, 3H), docs/math.md's equations
        with GRUParams.to_onnx()'s weights (gates [z; r; h])."""
        H = self.gru.hidden_size
        R, b_R = weights["R"][0], weights["B"][0][3 * H :]  # (3H, H), (3H,)
        reset_after = bool(weights["linear_before_reset"])
        gates = 3 if reset_after else 2  # reset before: R_h multiplies r ⊙ h, not h
        x_z, x_r, x_h = self.split(xw, 3)
        h_z, h_r, *h_h = self.split(self.affine(h, R[: gates * H], b_R[: gates * H]), gates)
        z = self.op("Sigmoid", [self.op("Add", [x_z, h_z])])
        r = self.op("Sigmoid", [self.op("Add", [x_r, h_r])])
        if reset_after:  # n = tanh(W_h x + b_Wh + r ⊙ (R_h h + b_Rh))
            reset = self.op("Mul", [r, h_h[0]])
        else:  # n = tanh(W_h x + b_Wh + R_h (r ⊙ h) + b_Rh)
            reset = self.affine(self.op("Mul", [r, h]), R[2 * H :], b_R[2 * H :])
        n = self.op("Tanh", [self.op("Add", [x_h, reset])])
        one = self.const("one", np.ones(1, self.gru.dtype))
        keep = self.op("Mul", [z, h])
        return self.op("Add", [self.op("Mul", [self.op("Sub", [one, z]), n]), keep])

    def affine(self, a: str, weight: np.ndarray, bias: np.ndarray) -> str:
        """a @ weight.T + bias: (..., k) -> (..., m) for weight (m, k), bias (m,)."""
        product = self.op("MatMul", [a, self.const("weight_T", weight.T.copy())])
        return self.op("Add", [product, self.const("bias", bias)])

    def split(self, a: str, parts: int) -> list[str]:
        """a (B, parts·H) split into `parts` (B, H) along its last axis."""
        sizes = self.ints("split", [self.gru.hidden_size] * parts)
        return self.op("Split", [a, sizes], outputs=parts, axis=-1)
