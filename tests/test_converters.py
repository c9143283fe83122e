"""Weight converters: exact round trips through PyTorch, Keras and ONNX layouts."""

import numpy as np
import pytest

import grukern


def _assert_params_equal(a: grukern.GRUParams, b: grukern.GRUParams):
    assert a.reset_after == b.reset_after
    for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert getattr(a, name).dtype == getattr(b, name).dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_round_trips_are_exact(dtype):
    torch = pytest.importorskip("torch")
    params = grukern.init_params(5, 7, dtype=dtype, seed=3)
    _assert_params_equal(grukern.GRUParams.from_torch(params.to_torch_state_dict()), params)

    module = torch.nn.GRU(5, 7).to(torch.float64 if dtype == np.float64 else torch.float32)
    from_module = grukern.GRUParams.from_torch(module)
    state = module.state_dict()
    for key, tensor in from_module.to_torch_state_dict().items():
        assert torch.equal(tensor, state[key]), key


def test_torch_gru_without_bias_gets_zero_biases():
    torch = pytest.importorskip("torch")
    params = grukern.GRUParams.from_torch(torch.nn.GRU(3, 4, bias=False))
    assert not params.b_ih.any() and not params.b_hh.any()
    assert params.b_ih.shape == (12,)


def test_from_torch_rejects_stacked_or_bidirectional_grus():
    torch = pytest.importorskip("torch")
    for module in (torch.nn.GRU(3, 4, num_layers=2), torch.nn.GRU(3, 4, bidirectional=True)):
        with pytest.raises(ValueError, match="single-layer, unidirectional"):
            grukern.GRUParams.from_torch(module)


def test_to_torch_refuses_the_reset_before_variant():
    params = grukern.init_params(3, 4, seed=0, reset_after=False)
    with pytest.raises(ValueError, match="reset_after=False"):
        params.to_torch_state_dict()


@pytest.mark.parametrize("reset_after", [True, False])
def test_keras_round_trips_are_exact(reset_after):
    keras = pytest.importorskip("keras")
    layer = keras.layers.GRU(7, reset_after=reset_after)
    layer.build((None, None, 5))
    weights = [w.copy() for w in layer.get_weights()]
    weights[2] = np.random.default_rng(0).standard_normal(weights[2].shape).astype(np.float32)
    layer.set_weights(weights)
    back = grukern.GRUParams.from_keras(layer).to_keras_weights()
    assert [w.shape for w in back] == [w.shape for w in weights]
    for ours, theirs in zip(back, weights, strict=True):
        np.testing.assert_array_equal(ours, theirs)

    params = grukern.init_params(5, 7, seed=1, reset_after=reset_after)
    round_trip = grukern.GRUParams.from_keras(params.to_keras_weights())
    if reset_after:
        _assert_params_equal(round_trip, params)
    else:
        # Keras keeps a single bias, so b_hh folds into b_ih; the pre-activations are unchanged.
        np.testing.assert_array_equal(round_trip.b_ih, params.b_ih + params.b_hh)
        assert not round_trip.b_hh.any()
        np.testing.assert_array_equal(round_trip.w_hh, params.w_hh)


def test_keras_weight_layout_is_gate_order_z_r_n_transposed():
    params = grukern.init_params(2, 3, seed=0)
    kernel, recurrent_kernel, bias = params.to_keras_weights()
    H = 3
    np.testing.assert_array_equal(kernel[:, :H], params.w_ih[H : 2 * H].T)  # z block first
    np.testing.assert_array_equal(kernel[:, H : 2 * H], params.w_ih[:H].T)  # then r
    np.testing.assert_array_equal(recurrent_kernel[:, 2 * H :], params.w_hh[2 * H :].T)
    np.testing.assert_array_equal(bias[1, :H], params.b_hh[H : 2 * H])


def test_from_keras_rejects_a_wrong_number_of_arrays():
    with pytest.raises(ValueError, match="got 1 arrays"):
        grukern.GRUParams.from_keras([np.zeros((3, 12))])


@pytest.mark.parametrize("reset_after", [True, False])
def test_onnx_round_trip_is_exact(reset_after):
    params = grukern.init_params(5, 7, seed=2, reset_after=reset_after)
    onnx_inputs = params.to_onnx()
    assert onnx_inputs["W"].shape == (1, 21, 5) and onnx_inputs["B"].shape == (1, 42)
    _assert_params_equal(
        grukern.GRUParams.from_onnx(
            onnx_inputs["W"],
            onnx_inputs["R"],
            onnx_inputs["B"],
            linear_before_reset=onnx_inputs["linear_before_reset"],
        ),
        params,
    )
