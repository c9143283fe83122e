"""The reference against Keras GRU (both variants) and the ONNX GRU operator as ONNX Runtime and
OpenVINO run it."""

import numpy as np
import pytest

import grukern
from grukern.peers import (
    keras_gru,
    onnx_gru_session,
    openvino_gru,
    run_keras,
    run_onnx,
    run_openvino,
)
from tests.helpers import make_problem, tolerance

VARIANTS = [True, False]


def _keras_tolerance(dtype, reset_after: bool) -> dict:
    """Keras's float64 accuracy differs by variant (on the torch backend, Keras 3.15).

    reset_after=True runs torch's fused GRU, exact in float64. reset_after=False runs Keras's
    generic cell, whose keras.ops.matmul promotes float64 x float64 to float32
    (keras.src.backend.common.dtypes.result_type gives "float32"), so that path is only as
    accurate as float32.
    """
    return tolerance(np.float32 if not reset_after else dtype, "output")


@pytest.mark.parametrize("reset_after", VARIANTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("T", "B", "I", "H"), [(1, 1, 1, 1), (9, 3, 5, 33), (4, 2, 16, 7)])
def test_forward_matches_keras(rng, reset_after, dtype, T, B, I, H):
    pytest.importorskip("keras")
    p = make_problem(rng, T, B, I, H, dtype=dtype, reset_after=reset_after)
    y_k, h_n_k = run_keras(keras_gru(p.params), p.x, p.h0)
    y, h_n = grukern.forward(p.x, p.params, p.h0, backend="numpy")
    np.testing.assert_allclose(y, y_k, **_keras_tolerance(dtype, reset_after))
    np.testing.assert_allclose(h_n, h_n_k, **_keras_tolerance(dtype, reset_after))


@pytest.mark.parametrize("reset_after", VARIANTS)
def test_keras_initialised_layer_runs_the_same_through_from_keras(rng, reset_after):
    """Import the other way: Keras's own initial weights, read with from_keras."""
    keras = pytest.importorskip("keras")
    layer = keras.layers.GRU(
        6, return_sequences=True, return_state=True, reset_after=reset_after, dtype="float64"
    )
    layer.build((None, None, 4))
    bias = layer.get_weights()[2]
    layer.set_weights([*layer.get_weights()[:2], rng.standard_normal(bias.shape)])  # not zeros
    params = grukern.GRUParams.from_keras(layer)
    assert params.reset_after is reset_after
    x = rng.standard_normal((5, 2, 4))
    h0 = rng.standard_normal((2, 6))
    y_k, h_n_k = run_keras(layer, x, h0)
    y, h_n = grukern.forward(x, params, h0, backend="numpy")
    np.testing.assert_allclose(y, y_k, **_keras_tolerance(np.float64, reset_after))
    np.testing.assert_allclose(h_n, h_n_k, **_keras_tolerance(np.float64, reset_after))


@pytest.mark.parametrize("reset_after", VARIANTS)
@pytest.mark.parametrize(("T", "B", "I", "H"), [(1, 1, 1, 1), (12, 3, 5, 33), (4, 8, 16, 16)])
def test_forward_matches_onnx_runtime(rng, reset_after, T, B, I, H):
    """ONNX Runtime's GRU runs float32 only; linear_before_reset=1 is reset_after=True."""
    pytest.importorskip("onnxruntime")
    p = make_problem(rng, T, B, I, H, dtype=np.float32, reset_after=reset_after)
    y_o, h_n_o = run_onnx(onnx_gru_session(p.params), p.x, p.h0)
    y, h_n = grukern.forward(p.x, p.params, p.h0, backend="numpy")
    np.testing.assert_allclose(y, y_o, **tolerance(np.float32, "output"))
    np.testing.assert_allclose(h_n, h_n_o, **tolerance(np.float32, "output"))


@pytest.mark.parametrize("reset_after", VARIANTS)
@pytest.mark.parametrize(("T", "B", "I", "H"), [(1, 1, 1, 1), (12, 3, 5, 33), (4, 8, 16, 16)])
def test_forward_matches_openvino(rng, reset_after, T, B, I, H):
    """OpenVINO's CPU plugin (oneDNN's RNN primitive) on the same ONNX model, in float32."""
    pytest.importorskip("openvino")
    p = make_problem(rng, T, B, I, H, dtype=np.float32, reset_after=reset_after)
    y_o, h_n_o = run_openvino(openvino_gru(p.params, threads=2), p.x, p.h0)
    y, h_n = grukern.forward(p.x, p.params, p.h0, backend="numpy")
    np.testing.assert_allclose(y, y_o, **tolerance(np.float32, "output"))
    np.testing.assert_allclose(h_n, h_n_o, **tolerance(np.float32, "output"))
