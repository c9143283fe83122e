"""grukern.keras.GRU against keras.layers.GRU (Keras 3, torch backend) on the same weights:
outputs, masks, gradients, weights both ways, model.fit, serialization and bad arguments.

Everything runs in float64. Keras's generic GRU loop (reset_after=False, masks, go_backwards
with reset_after=False) is only float32-accurate even in float64 (keras.ops.matmul promotes
float64 to float32, tests/test_keras_onnx_oracles.py), hence ATOL; its fused path
(reset_after=True, no mask) agrees to ~1e-15.
"""

import itertools

import numpy as np
import pytest

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
gk = pytest.importorskip("grukern.keras")

B, T, I, H = 3, 5, 4, 6
ATOL = 2e-6  # float32 accuracy of Keras's generic loop on values and gradients of order 1


def _pair(rng, **kwargs):
    """(keras.layers.GRU, grukern.keras.GRU), float64, built for I features, same random
    weights (biases non-zero)."""
    ref = keras.layers.GRU(H, dtype="float64", **kwargs)
    mine = gk.GRU(H, dtype="float64", **kwargs)
    ref.build((None, None, I))
    mine.build((None, None, I))
    ref.set_weights([rng.standard_normal(w.shape) * 0.5 for w in ref.get_weights()])
    mine.set_weights(ref.get_weights())
    return ref, mine


def _inputs(rng):
    return torch.from_numpy(rng.standard_normal((B, T, I)))


def _mask(kind: str) -> torch.Tensor:
    """(B, T) right-padded: full, partial and empty rows; or not right-padded."""
    lengths = {"right": [T, 2, 0], "full": [T, T, T]}.get(kind, [T, 2, 3])
    mask = np.arange(T)[None, :] < np.array(lengths)[:, None]
    if kind == "holes":
        mask[2, 1] = False
    return torch.from_numpy(mask)


def _assert_close(actual, expected, atol=ATOL):
    actual, expected = keras.tree.flatten(actual), keras.tree.flatten(expected)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a.detach().numpy(), e.detach().numpy(), rtol=0, atol=atol)


FLAGS = list(itertools.product([True, False], repeat=3))


@pytest.mark.parametrize(("reset_after", "return_sequences", "go_backwards"), FLAGS)
def test_outputs_match_keras(rng, reset_after, return_sequences, go_backwards):
    ref, mine = _pair(
        rng, reset_after=reset_after, return_sequences=return_sequences,
        go_backwards=go_backwards, return_state=True,
    )  # fmt: skip
    x = _inputs(rng)
    h0 = torch.from_numpy(rng.standard_normal((B, H)))
    _assert_close(mine(x), ref(x))
    _assert_close(mine(x, initial_state=[h0]), ref(x, initial_state=[h0]))
    _assert_close(mine(x, initial_state=h0), ref(x, initial_state=[h0]))


@pytest.mark.parametrize("reset_after", [True, False])
def test_without_bias_matches_keras(rng, reset_after):
    ref, mine = _pair(rng, reset_after=reset_after, use_bias=False, return_sequences=True)
    assert [w.shape for w in mine.get_weights()] == [(I, 3 * H), (H, 3 * H)]
    x = _inputs(rng)
    _assert_close(mine(x), ref(x))
    h0 = torch.from_numpy(rng.standard_normal((B, H)))
    expected = _gradients(ref, [v.value for v in ref.trainable_variables], x, h0, None, seed=2)
    actual = _gradients(mine, [v.value for v in mine.trainable_variables], x, h0, None, seed=2)
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    ("go_backwards", "zero_output_for_mask", "return_sequences", "reset_after"),
    [(*flags, True) for flags in FLAGS] + [(False, False, True, False), (True, True, True, False)],
)
def test_right_padded_masks_match_keras(
    rng, go_backwards, zero_output_for_mask, return_sequences, reset_after
):
    """Masked steps hold the state; their outputs repeat the previous output (0 before any
    valid step) or are 0 with zero_output_for_mask, as Keras's loop computes them."""
    flags = dict(
        go_backwards=go_backwards, zero_output_for_mask=zero_output_for_mask,
        return_sequences=return_sequences, reset_after=reset_after, return_state=True,
    )  # fmt: skip
    ref, mine = _pair(rng, **flags)
    x = _inputs(rng)
    h0 = torch.from_numpy(rng.standard_normal((B, H)))
    for kind in ("right", "full"):
        mask = _mask(kind)
        _assert_close(mine(x, mask=mask), ref(x, mask=mask))
        _assert_close(mine(x, [h0], mask=mask), ref(x, [h0], mask=mask))


def test_masks_from_keras_layers_match_keras(rng):
    """Masking and Embedding(mask_zero=True) pass their masks to the GRU in a model."""
    x = rng.standard_normal((B, T, I))
    x[1, 3:] = 0.0
    x[2, :] = 0.0
    tokens = np.array([[1, 2, 3, 4, 5], [3, 1, 0, 0, 0], [0, 0, 0, 0, 0]])
    ref, mine = _pair(rng, return_sequences=True, reset_after=False)
    embedding = keras.layers.Embedding(6, I, mask_zero=True, dtype="float64")
    for head, data in ((keras.layers.Masking(dtype="float64"), x), (embedding, tokens)):
        outputs = [keras.Sequential([head, gru]).predict(data, verbose=0) for gru in (ref, mine)]
        np.testing.assert_allclose(outputs[1], outputs[0], rtol=0, atol=ATOL)


def test_masks_that_are_not_right_padded_are_refused(rng):
    _, mine = _pair(rng)
    with pytest.raises(ValueError, match=r"right-padded masks only.*rows \[2\]"):
        mine(_inputs(rng), mask=_mask("holes"))


def _gradients(layer, weights, x, h0, mask, seed):
    """Gradients of a random linear function of every output w.r.t. x, h0 and the weights."""
    x, h0 = x.clone().requires_grad_(), h0.clone().requires_grad_()
    for w in weights:
        w.grad = None
    outputs = keras.tree.flatten(layer(x, [h0], mask=mask, training=True))
    directions = np.random.default_rng(seed)
    loss = sum((o * torch.from_numpy(directions.standard_normal(o.shape))).sum() for o in outputs)
    loss.backward()
    return [x.grad, h0.grad, *(w.grad for w in weights)]


@pytest.mark.parametrize(
    ("reset_after", "return_sequences", "go_backwards", "masked"),
    [(True, True, False, False), (False, True, True, False), (True, False, False, False),
     (True, True, False, True), (False, True, True, True), (True, False, True, True)],
)  # fmt: skip
def test_gradients_match_keras(rng, reset_after, return_sequences, go_backwards, masked):
    ref, mine = _pair(
        rng, reset_after=reset_after, return_sequences=return_sequences,
        go_backwards=go_backwards, return_state=True,
    )  # fmt: skip
    x = _inputs(rng)
    h0 = torch.from_numpy(rng.standard_normal((B, H)))
    mask = _mask("right") if masked else None
    ref_weights = [v.value for v in ref.trainable_variables]
    mine_weights = [v.value for v in mine.trainable_variables]
    assert len(mine_weights) == 3
    expected = _gradients(ref, ref_weights, x, h0, mask, seed=1)
    actual = _gradients(mine, mine_weights, x, h0, mask, seed=1)
    for a, e, name in zip(
        actual, expected, ["x", "h0", "kernel", "recurrent", "bias"], strict=True
    ):
        np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=0, atol=ATOL, err_msg=name)


def test_inference_keeps_no_tape(rng):
    """Without autograd the layer runs grukern.forward: the same output, no graph."""
    _, mine = _pair(rng, return_sequences=True)
    x = _inputs(rng)
    with torch.no_grad():
        y = mine(x)
    assert y.grad_fn is None
    _assert_close(y, mine(x), atol=1e-14)


def test_converted_weights_are_kept_until_the_weights_change(rng):
    """Calls with unchanged weights reuse their conversion to grukern's layout; any change
    through Keras (assign, set_weights) or torch (an in-place op) is seen at the next call."""
    ref, mine = _pair(rng, return_sequences=True)
    x = _inputs(rng)
    with torch.no_grad():
        mine(x)
        kept = gk._converted[id(mine.kernel.value)][2]
        mine(x)
        assert gk._converted[id(mine.kernel.value)][2] is kept
        changes = [
            lambda: mine.recurrent_kernel.assign(mine.recurrent_kernel.value * 0.5),
            lambda: mine.set_weights([w * 1.5 for w in mine.get_weights()]),
            lambda: mine.bias.value.add_(0.25),
        ]
        for change in changes:
            change()
            ref.set_weights(mine.get_weights())
            _assert_close(mine(x), ref(x))


@pytest.mark.parametrize("reset_after", [True, False])
def test_weights_move_both_ways(rng, reset_after):
    ref, mine = _pair(rng, reset_after=reset_after, return_sequences=True)
    assert [v.path.split("/")[-1] for v in mine.weights] == ["kernel", "recurrent_kernel", "bias"]
    for a, b in zip(mine.get_weights(), ref.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    new = [rng.standard_normal(w.shape) for w in mine.get_weights()]
    mine.set_weights(new)
    ref.set_weights(mine.get_weights())
    x = _inputs(rng)
    _assert_close(mine(x), ref(x))


def _fit_history(layer, weights, x, targets):
    model = keras.Sequential(
        [keras.Input((T, I), dtype="float64"), layer, keras.layers.Dense(1, dtype="float64")]
    )
    model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.05), loss="mse")
    history = model.fit(x, targets, epochs=3, batch_size=4, shuffle=False, verbose=0)
    return history.history["loss"], model.get_weights()


@pytest.mark.parametrize("reset_after", [True, False])
def test_fit_matches_keras(rng, reset_after):
    """model.fit gives the loss history and final weights of the same model with
    keras.layers.GRU (regularized and constrained weights included)."""
    kwargs = dict(
        reset_after=reset_after, return_sequences=True,
        kernel_regularizer="l2", recurrent_constraint=keras.constraints.MaxNorm(1.0),
    )  # fmt: skip
    ref, mine = _pair(rng, **kwargs)
    weights = [*ref.get_weights(), rng.standard_normal((H, 1)), np.zeros(1)]
    x = rng.standard_normal((10, T, I))
    targets = rng.standard_normal((10, T, 1))
    ref_loss, ref_weights = _fit_history(ref, weights, x, targets)
    loss, final_weights = _fit_history(mine, weights, x, targets)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    assert ref_loss[-1] < ref_loss[0]  # it trained
    for a, e in zip(final_weights, ref_weights, strict=True):
        np.testing.assert_allclose(a, e, rtol=0, atol=1e-5)


def test_input_dropout_matches_keras_with_the_same_seed(rng):
    """One input mask per call over every step, drawn from the layer's seed as Keras draws it;
    inference ignores it."""
    ref, mine = _pair(rng, dropout=0.5, seed=7, return_sequences=True)
    x = _inputs(rng)
    y = mine(x, training=True)
    _assert_close(y, ref(x, training=True))
    _assert_close(mine(x, training=True), ref(x, training=True))  # the next masks, too
    _assert_close(mine(x), ref(x))
    assert not np.allclose(y.detach().numpy(), mine(x).detach().numpy())


def test_config_round_trips_and_reads_keras_configs():
    mine = gk.GRU(
        H, return_sequences=True, go_backwards=True, reset_after=False, dropout=0.25, seed=3,
        kernel_regularizer="l1", bias_constraint="non_neg", backend="numpy",
    )  # fmt: skip
    config = mine.get_config()
    assert gk.GRU.from_config(config).get_config() == config
    ref = keras.layers.GRU(5, return_state=True, reset_after=False, unroll=True)
    expected = {k: v for k, v in ref.get_config().items() if k != "name"}
    copied = gk.GRU.from_config(ref.get_config()).get_config()
    assert {k: copied[k] for k in expected} == expected


def test_saved_model_loads_and_computes_the_same(rng, tmp_path):
    _, mine = _pair(rng, return_sequences=True)
    model = keras.Sequential([keras.Input((None, I), dtype="float64"), mine])
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")  # registered: no custom_objects
    assert isinstance(loaded.layers[0], gk.GRU)
    x = rng.standard_normal((B, T, I))
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_swap_grus_computes_the_same_model(rng):
    inputs = keras.Input((None, I), dtype="float64")
    hidden = keras.layers.GRU(H, return_sequences=True, dtype="float64")(inputs)
    outputs = keras.layers.Dense(1, dtype="float64")(keras.layers.GRU(H, dtype="float64")(hidden))
    model = keras.Model(inputs, outputs)
    model.set_weights([rng.standard_normal(w.shape) * 0.5 for w in model.get_weights()])
    swapped = gk.swap_grus(model)
    assert [type(layer).__name__ for layer in swapped.layers[1:]] == ["GRU", "GRU", "Dense"]
    assert all(isinstance(layer, gk.GRU) for layer in swapped.layers[1:3])
    x = rng.standard_normal((B, T, I))
    np.testing.assert_allclose(swapped.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"activation": "relu"}, ValueError, "activation must be 'tanh'.*'relu'"),
        ({"recurrent_activation": "hard_sigmoid"}, ValueError, "recurrent_activation must be"),
        ({"recurrent_dropout": 0.1}, ValueError, "recurrent_dropout must be 0, got 0.1"),
        ({"stateful": True}, ValueError, "stateful must be False, got True"),
        ({"use_cudnn": True}, ValueError, "use_cudnn must be 'auto' or False"),
        ({"dropout": 1.0}, ValueError, r"dropout must be in \[0, 1\), got 1.0"),
        ({"dropout": "0.1"}, TypeError, "dropout must be a float"),
        ({"reset_after": 1}, TypeError, "reset_after must be a bool, got 1"),
        ({"backend": "gpu"}, ValueError, "backend must be one of .* got 'gpu'"),
        ({"units": 0}, ValueError, "units must be a positive integer, got 0"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        gk.GRU(**{"units": 3, **kwargs})


def test_other_keras_backends_are_refused(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(RuntimeError, match="torch backend only; this Keras runs on 'jax'"):
        gk.GRU(3)


def test_float16_is_refused():
    with pytest.raises(TypeError, match=r"float32 or float64.*computes in float16"):
        gk.GRU(3, dtype="mixed_float16").build((None, None, 2))
