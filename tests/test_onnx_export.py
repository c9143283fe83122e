"""grukern.GRU.to_onnx: the exported model, run by ONNX Runtime, against grukern's own forward."""

import itertools
import pathlib
import sys

import numpy as np
import pytest

import grukern
from grukern.model import SequenceClassifier
from grukern.optim import Adam

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

T, B, I, H = 6, 4, 3, 5
TOLERANCE = {np.float32: {"rtol": 1e-5, "atol": 1e-5}, np.float64: {"rtol": 1e-10, "atol": 1e-10}}
INPUT_SETS = [("x",), ("x", "h0"), ("x", "lengths"), ("x", "h0", "lengths")]
# float32 runs both recurrences; ONNX Runtime's GRU kernel refuses float64 (test below).
DTYPE_RECURRENCE = [(np.float32, "gru"), (np.float32, "scan"), (np.float64, "scan")]


def run_ort(model, feeds: dict) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds)


def make_layer(rng, num_layers, bidirectional, batch_first, reset_after, dtype, **kwargs):
    return grukern.GRU(
        I, H, num_layers, bidirectional=bidirectional, batch_first=batch_first,
        reset_after=reset_after, dtype=dtype, seed=int(rng.integers(2**31)), **kwargs,
    )  # fmt: skip


def make_inputs(rng, gru, *, lengths=(T, 0, 3, 1)) -> dict:
    """x in the layer's layout, a non-zero h0, and lengths with a full row, an empty row and
    two partial ones."""
    shape = (B, T, I) if gru.batch_first else (T, B, I)
    return {
        "x": rng.standard_normal(shape).astype(gru.dtype),
        "h0": rng.standard_normal((len(gru.params), B, H)).astype(gru.dtype),
        "lengths": np.array(lengths, dtype=np.int64),
    }


@pytest.mark.parametrize(("dtype", "recurrence"), DTYPE_RECURRENCE)
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_onnx_runtime_matches_grukern(
    rng, num_layers, bidirectional, batch_first, reset_after, dtype, recurrence
):
    gru = make_layer(rng, num_layers, bidirectional, batch_first, reset_after, dtype)
    values = make_inputs(rng, gru)
    for names, backend in itertools.product(INPUT_SETS, ("numpy", "numba")):
        feeds = {name: values[name] for name in names}
        y_onnx, h_n_onnx = run_ort(gru.to_onnx(inputs=names, recurrence=recurrence), feeds)
        gru.backend = backend
        y, h_n = gru(**feeds)
        message = f"inputs={names}, backend={backend}"
        np.testing.assert_allclose(y_onnx, y, **TOLERANCE[dtype], err_msg=message, strict=True)
        np.testing.assert_allclose(h_n_onnx, h_n, **TOLERANCE[dtype], err_msg=message)


@pytest.mark.parametrize("recurrence", ["gru", "scan"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padded_steps_output_zero_and_empty_rows_keep_h0(rng, recurrence, bidirectional):
    """grukern's padding semantics, exactly: y is 0 past each length; a row of length 0 keeps
    its h0 in h_n (ONNX Runtime's GRU node alone would give 0 there)."""
    gru = make_layer(rng, 2, bidirectional, False, True, np.float32)
    feeds = make_inputs(rng, gru, lengths=(T, 0, 3, 1))
    y, h_n = run_ort(gru.to_onnx(recurrence=recurrence), feeds)
    padded = np.arange(T)[:, None] >= feeds["lengths"][None, :]  # (T, B)
    np.testing.assert_array_equal(y[padded], 0)
    assert np.all(y[~padded] != 0)
    np.testing.assert_array_equal(h_n[:, 1], feeds["h0"][:, 1])


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_float64_gru_nodes_match_the_onnx_reference_evaluator(rng, bidirectional, reset_after):
    """recurrence="gru" in float64: ONNX Runtime refuses it, onnx's reference evaluator runs it
    (without lengths, which that evaluator ignores)."""
    from onnx.reference import ReferenceEvaluator

    gru = make_layer(rng, 2, bidirectional, True, reset_after, np.float64, backend="numpy")
    feeds = make_inputs(rng, gru)
    del feeds["lengths"]
    model = gru.to_onnx(inputs=("x", "h0"), recurrence="gru")
    y_onnx, h_n_onnx = ReferenceEvaluator(model).run(None, feeds)
    y, h_n = gru(**feeds)
    np.testing.assert_allclose(y_onnx, y, **TOLERANCE[np.float64])
    np.testing.assert_allclose(h_n_onnx, h_n, **TOLERANCE[np.float64])
    with pytest.raises(Exception, match="does not support double"):
        run_ort(model, feeds)


def test_auto_recurrence_is_gru_nodes_for_float32_and_scan_for_float64(rng):
    for dtype, node in ((np.float32, "GRU"), (np.float64, "Scan")):
        gru = make_layer(rng, 2, True, False, True, dtype)
        ops = [n.op_type for n in gru.to_onnx().graph.node]
        assert ops.count(node) == (2 if node == "GRU" else 4), (dtype, ops)


def test_model_interface(rng):
    """Graph inputs in the order x, h0, lengths (whatever order `inputs` lists), dynamic T and
    B, int64 lengths cast to int32 for the GRU nodes; the layer's params are not modified."""
    gru = make_layer(rng, 2, True, True, False, np.float32)
    before = [a.copy() for p in gru.params for a in p.arrays()]
    model = gru.to_onnx(inputs=["lengths", "x"], opset=14)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 14

    def signature(values):
        return [
            (v.name, v.type.tensor_type.elem_type,
             [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
            for v in values
        ]  # fmt: skip

    FLOAT, INT64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    assert signature(model.graph.input) == [("x", FLOAT, ["B", "T", I]), ("lengths", INT64, ["B"])]
    assert signature(model.graph.output) == [
        ("y", FLOAT, ["B", "T", 2 * H]), ("h_n", FLOAT, [4, "B", H])
    ]  # fmt: skip
    grus = [n for n in model.graph.node if n.op_type == "GRU"]
    attributes = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in grus]
    assert [a["direction"] for a in attributes] == [b"bidirectional"] * 2
    assert [a["linear_before_reset"] for a in attributes] == [0, 0]
    casts = {n.output[0]: n for n in model.graph.node if n.op_type == "Cast"}
    assert all(casts[n.input[4]].attribute[0].i == onnx.TensorProto.INT32 for n in grus)
    after = [a for p in gru.params for a in p.arrays()]
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("as_path", [str, pathlib.Path])
def test_writes_the_model_to_path(rng, tmp_path, as_path):
    gru = make_layer(rng, 1, False, False, True, np.float32)
    path = tmp_path / "gru.onnx"
    model = gru.to_onnx(as_path(path))
    assert onnx.load(path) == model
    feeds = make_inputs(rng, gru)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y, h_n = session.run(None, feeds)
    y_ref, h_n_ref = gru(**feeds)
    np.testing.assert_allclose(y, y_ref, **TOLERANCE[np.float32])
    np.testing.assert_allclose(h_n, h_n_ref, **TOLERANCE[np.float32])


def test_train_with_grukern_deploy_with_onnx_runtime(rng):
    """A few Adam steps on grukern's sequence model, then its GRU exported: ONNX Runtime gives
    the trained layer's outputs (not the initial ones)."""
    model = SequenceClassifier(I, H, outputs=1, seed=int(rng.integers(2**31)))
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    targets = (x.sum(axis=2, keepdims=True) > 0).astype(np.float32)  # (B, T, 1)
    initial = model.gru.to_onnx(inputs=("x",))
    optimizer = Adam(model.parameters(), lr=0.05)
    losses = [model.train_step(x, targets, optimizer)[0] for _ in range(5)]
    assert losses[-1] < losses[0]
    exported = model.gru.to_onnx(inputs=("x",))
    feeds = {"x": rng.standard_normal((B, T + 3, I)).astype(np.float32)}  # another T
    y_onnx, h_n_onnx = run_ort(exported, feeds)
    y, h_n = model.gru(**feeds)
    np.testing.assert_allclose(y_onnx, y, **TOLERANCE[np.float32])
    np.testing.assert_allclose(h_n_onnx, h_n, **TOLERANCE[np.float32])
    y_initial, _ = run_ort(initial, feeds)
    assert np.abs(y_initial - y).max() > 1e-3


def test_a_layer_trained_with_dropout_exports_its_inference_forward(rng):
    gru = make_layer(rng, 2, True, False, True, np.float32, dropout=0.5)
    feeds = make_inputs(rng, gru)
    _, _, tape = gru.forward_train(**feeds, rng=np.random.default_rng(0))
    grads = gru.backward(tape, dy=np.ones((T, B, 2 * H), np.float32))
    Adam(gru.params, lr=0.01).step(grads.params)
    y_onnx, h_n_onnx = run_ort(gru.to_onnx(), feeds)
    y, h_n = gru(**feeds)
    np.testing.assert_allclose(y_onnx, y, **TOLERANCE[np.float32])
    np.testing.assert_allclose(h_n_onnx, h_n, **TOLERANCE[np.float32])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"path": 3}, TypeError, "path must be a str, an os.PathLike or None, got int"),
        ({"inputs": ("x", "c0")}, ValueError, r"unknown: \['c0'\]"),
        ({"inputs": ("h0",)}, ValueError, "inputs must name 'x'"),
        ({"inputs": ("x", "x")}, ValueError, "each once"),
        ({"inputs": "x"}, TypeError, "inputs must be a tuple of names"),
        ({"opset": 13}, ValueError, r"opset must lie in \[14, "),
        ({"opset": "17"}, TypeError, "opset must be an int"),
        ({"recurrence": "loop"}, ValueError, "recurrence must be one of"),
    ],
)
def test_bad_arguments_are_refused(rng, kwargs, error, match):
    gru = make_layer(rng, 1, False, False, True, np.float32)
    with pytest.raises(error, match=match):
        gru.to_onnx(**kwargs)


def test_a_layer_on_the_device_is_refused(rng, monkeypatch):
    """(Params on a GPU need CuPy; here GRUParams.on_device is made to say so.)"""
    gru = make_layer(rng, 1, False, False, True, np.float32)
    monkeypatch.setattr(grukern.GRUParams, "on_device", property(lambda self: True))
    with pytest.raises(TypeError, match=r"params \[0\] are on the GPU; call gru.to_host\(\)"):
        gru.to_onnx()


def test_params_that_no_longer_fit_the_layer_are_refused(rng):
    gru = make_layer(rng, 2, False, False, True, np.float32)
    gru.params = gru.params[:1]
    with pytest.raises(ValueError, match="params must hold num_layers·directions = 2"):
        gru.to_onnx()


def test_missing_onnx_package_says_how_to_install_it(rng, monkeypatch):
    gru = make_layer(rng, 1, False, False, True, np.float32)
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(ImportError, match=r"pip install onnx .*grukern\[onnx\]"):
        gru.to_onnx()
