"""Peer GRU implementations loaded with grukern's weights: PyTorch, Keras, ONNX Runtime and
OpenVINO.

The tests use them as oracles and the benchmarks as competitors, so both see the same setup.
Each peer is imported only inside the function that needs it: none is a runtime dependency
(they come with the `test` extra). Every runner takes and returns NumPy arrays, time-major:
x (T, B, I), h0 (B, H) -> y (T, B, H), h_n (B, H).
"""

from __future__ import annotations

import os

import numpy as np

from grukern.params import GRUParams


def torch_gru(params: GRUParams):
    """A torch.nn.GRU holding `params` (reset_after=True only; torch has no other variant)."""
    import torch

    module = torch.nn.GRU(params.input_size, params.hidden_size)
    module = module.to(torch.float64 if params.dtype == np.float64 else torch.float32)
    module.load_state_dict(params.to_torch_state_dict())
    return module


def keras_gru(params: GRUParams, *, return_sequences: bool = True):
    """A built keras.layers.GRU (return_state=True) holding `params`, either variant.

    Keras must run on the torch backend: KERAS_BACKEND is set to "torch" unless already set,
    which only works before keras is first imported.
    """
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    layer = keras.layers.GRU(
        params.hidden_size,
        return_sequences=return_sequences,
        return_state=True,
        reset_after=bool(params.reset_after),
        dtype=str(params.dtype),
    )
    layer.build((None, None, params.input_size))
    layer.set_weights(params.to_keras_weights())
    return layer


def run_keras(layer, x: np.ndarray, h0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run a keras GRU from keras_gru on time-major x; Keras itself is batch-major."""
    y, h_n = layer(np.ascontiguousarray(x.transpose(1, 0, 2)), initial_state=[h0])
    return _to_numpy(y).transpose(1, 0, 2), _to_numpy(h_n)


def onnx_gru_model(params: GRUParams):
    """An onnx.ModelProto of one ONNX GRU node holding `params` (float32 only), the model both
    ONNX Runtime and OpenVINO run.

    Inputs X (T, B, I) and initial_h (1, B, H); outputs Y (T, 1, B, H) and Y_h (1, B, H).
    linear_before_reset follows params.reset_after.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if params.dtype != np.float32:
        raise TypeError(f"the ONNX GRU peers run only float32, got params of dtype {params.dtype}")
    weights = params.to_onnx()
    node = helper.make_node(
        "GRU",
        inputs=["X", "W", "R", "B", "", "initial_h"],
        outputs=["Y", "Y_h"],
        hidden_size=params.hidden_size,
        linear_before_reset=weights["linear_before_reset"],
    )
    graph = helper.make_graph(
        [node],
        "grukern_gru",
        inputs=[
            helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", params.input_size]),
            helper.make_tensor_value_info(
                "initial_h", TensorProto.FLOAT, [1, "B", params.hidden_size]
            ),
        ],
        outputs=[
            helper.make_tensor_value_info(
                "Y", TensorProto.FLOAT, ["T", 1, "B", params.hidden_size]
            ),
            helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, "B", params.hidden_size]),
        ],
        initializer=[numpy_helper.from_array(weights[name], name) for name in ("W", "R", "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(model)
    return model


def onnx_gru_session(params: GRUParams, *, intra_op_threads: int = 0):
    """An onnxruntime InferenceSession of onnx_gru_model(params). intra_op_threads=0 lets ORT
    choose."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    return onnxruntime.InferenceSession(
        onnx_gru_model(params).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def openvino_gru(params: GRUParams, *, threads: int):
    """onnx_gru_model(params) compiled by OpenVINO's CPU plugin (oneDNN's fused RNN primitive),
    set for one caller's latency at full float32 precision on `threads` threads."""
    import openvino

    core = openvino.Core()
    model = core.read_model(onnx_gru_model(params).SerializeToString(), b"")
    return core.compile_model(
        model,
        "CPU",
        {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
        },
    )


def run_openvino(compiled, x: np.ndarray, h0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run a model from openvino_gru on time-major x."""
    outputs = compiled([x, h0[None]])
    return outputs[0][:, 0], outputs[1][0]


def run_onnx(session, x: np.ndarray, h0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run a session from onnx_gru_session on time-major x."""
    y, h_n = session.run(None, {"X": x, "initial_h": h0[None]})
    return y[:, 0], h_n[0]


def _to_numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy() if hasattr(tensor, "detach") else np.asarray(tensor)
