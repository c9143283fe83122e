"""grukern.GRU, the stacked and bidirectional layer: against torch.nn.GRU (with PackedSequence for
lengths), Keras (reset_after=False stacks and Bidirectional), every backend against numpy,
dropout by finite differences, state dicts, and bad input."""

import itertools

import numpy as np
import pytest

import grukern
from tests.helpers import (
    PADDING_GARBAGE,
    assert_same_bits,
    fill_padding,
    needs_torch,
    numerical_gradient,
    tolerance,
)

T, B, I, H = 6, 4, 3, 5
CONFIGS = list(itertools.product([1, 2, 3], [False, True], [False, True]))  # L, bidir, batch_first


def _layer_and_torch(num_layers, bidirectional, batch_first, dtype, seed):
    gru = grukern.GRU(
        I, H, num_layers, bidirectional=bidirectional, batch_first=batch_first, dtype=dtype,
        backend="numpy", seed=seed,
    )  # fmt: skip
    return gru, gru.to_torch()


def _inputs(rng, gru, dtype, batch=B):
    """x in the layer's layout, h0, and upstream gradients dy, dh_n (all non-zero)."""
    D = gru.directions
    x = rng.standard_normal((batch, T, I) if gru.batch_first else (T, batch, I)).astype(dtype)
    y_shape = (*x.shape[:2], D * H)
    state_shape = (gru.num_layers * D, batch, H)
    h0, dy, dh_n = (
        rng.standard_normal(s).astype(dtype) for s in (state_shape, y_shape, state_shape)
    )
    return x, h0, dy, dh_n


def _torch_run(module, x, h0, dy, dh_n, lengths=None):
    """torch's y (padded with zeros), h_n and autograd gradients, as NumPy."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    x_t = torch.tensor(x, requires_grad=True)
    h0_t = torch.tensor(h0, requires_grad=True)
    if lengths is None:
        y_t, h_n_t = module(x_t, h0_t)
    else:
        packed = pack_padded_sequence(
            x_t, torch.tensor(lengths), batch_first=module.batch_first, enforce_sorted=False
        )
        y_packed, h_n_t = module(packed, h0_t)
        y_t, _ = pad_packed_sequence(
            y_packed,
            batch_first=module.batch_first,
            total_length=x.shape[1 if module.batch_first else 0],
        )
    ((y_t * torch.tensor(dy)).sum() + (h_n_t * torch.tensor(dh_n)).sum()).backward()
    weights = {name: p.grad.numpy() for name, p in module.named_parameters()}
    return (
        y_t.detach().numpy(),
        h_n_t.detach().numpy(),
        x_t.grad.numpy(),
        h0_t.grad.numpy(),
        weights,
    )


def _assert_matches_torch(gru, ours, theirs, dtype, n_rows):
    y, h_n, grads = ours
    y_t, h_n_t, dx_t, dh0_t, dweights_t = theirs
    np.testing.assert_allclose(y, y_t, **tolerance(dtype, "output"), err_msg="y")
    np.testing.assert_allclose(h_n, h_n_t, **tolerance(dtype, "output"), err_msg="h_n")
    np.testing.assert_allclose(grads.x, dx_t, **tolerance(dtype, "grad"), err_msg="grad x")
    np.testing.assert_allclose(grads.h0, dh0_t, **tolerance(dtype, "grad"), err_msg="grad h0")
    for k, p in enumerate(grads.params):
        for key, array in zip(gru._keys(k), p.arrays(), strict=True):
            np.testing.assert_allclose(
                array, dweights_t[key], **tolerance(dtype, "weight_grad", T * n_rows), err_msg=key
            )


def _run(gru, x, h0, dy, dh_n, lengths=None):
    y, h_n, tape = gru.forward_train(x, h0, lengths=lengths)
    return y, h_n, gru.backward(tape, dy=dy, dh_n=dh_n)


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("num_layers", "bidirectional", "batch_first"), CONFIGS)
def test_layer_matches_torch(rng, num_layers, bidirectional, batch_first, dtype):
    gru, module = _layer_and_torch(num_layers, bidirectional, batch_first, dtype, seed=1)
    x, h0, dy, dh_n = _inputs(rng, gru, dtype)
    _assert_matches_torch(
        gru, _run(gru, x, h0, dy, dh_n), _torch_run(module, x, h0, dy, dh_n), dtype, B
    )
    y, h_n = gru(x, h0)  # inference runs the same computation as training without dropout
    y_train, h_n_train, _ = gru.forward_train(x, h0)
    np.testing.assert_array_equal(y, y_train)
    np.testing.assert_array_equal(h_n, h_n_train)


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("num_layers", "bidirectional", "batch_first"), CONFIGS)
def test_layer_with_lengths_matches_torch_packed_sequences(
    rng, num_layers, bidirectional, batch_first, dtype
):
    gru, module = _layer_and_torch(num_layers, bidirectional, batch_first, dtype, seed=2)
    x, h0, dy, dh_n = _inputs(rng, gru, dtype)
    lengths = np.array([2, T, 1, 4])  # unsorted
    ours = _run(gru, x, h0, dy, dh_n, lengths)
    _assert_matches_torch(gru, ours, _torch_run(module, x, h0, dy, dh_n, lengths), dtype, B)


@needs_torch
@pytest.mark.parametrize(("num_layers", "bidirectional", "batch_first"), CONFIGS[::3])
def test_zero_length_row_is_the_masked_expectation(rng, num_layers, bidirectional, batch_first):
    """torch cannot pack a length-0 sequence: compare the others with torch on the batch without
    that row, and the row itself with what a sequence of no steps must give."""
    gru, module = _layer_and_torch(num_layers, bidirectional, batch_first, np.float64, seed=3)
    x, h0, dy, dh_n = _inputs(rng, gru, np.float64)
    lengths = np.array([3, 0, T, 2])
    y, h_n, grads = _run(gru, x, h0, dy, dh_n, lengths)
    batch_axis = 0 if batch_first else 1
    keep = [0, 2, 3]
    y_t, h_n_t, dx_t, dh0_t, dweights_t = _torch_run(
        module, x.take(keep, batch_axis), h0[:, keep], dy.take(keep, batch_axis), dh_n[:, keep],
        lengths[keep],
    )  # fmt: skip
    np.testing.assert_allclose(y.take(keep, batch_axis), y_t, **tolerance(np.float64, "output"))
    np.testing.assert_allclose(h_n[:, keep], h_n_t, **tolerance(np.float64, "output"))
    np.testing.assert_allclose(
        grads.x.take(keep, batch_axis), dx_t, **tolerance(np.float64, "grad")
    )
    np.testing.assert_allclose(grads.h0[:, keep], dh0_t, **tolerance(np.float64, "grad"))
    for k, p in enumerate(grads.params):  # the empty row adds nothing to any weight gradient
        for key, array in zip(gru._keys(k), p.arrays(), strict=True):
            np.testing.assert_allclose(
                array, dweights_t[key], **tolerance(np.float64, "weight_grad", T * B)
            )
    assert not y.take(1, batch_axis).any() and not grads.x.take(1, batch_axis).any()
    np.testing.assert_array_equal(h_n[:, 1], h0[:, 1])
    np.testing.assert_array_equal(grads.h0[:, 1], dh_n[:, 1])


@pytest.mark.parametrize("backend", [b for b in grukern.backends() if b != "numpy"])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("num_layers", "bidirectional"), [(1, True), (2, False), (3, True)])
def test_every_backend_matches_numpy(rng, backend, reset_after, dtype, num_layers, bidirectional):
    gru = grukern.GRU(
        I, H, num_layers, bidirectional=bidirectional, reset_after=reset_after, dtype=dtype,
        backend="numpy", seed=4,
    )  # fmt: skip
    x, h0, dy, dh_n = _inputs(rng, gru, dtype, batch=5)
    lengths = np.array([T, 0, 3, 1, 5])
    expected = _run(gru, x, h0, dy, dh_n, lengths)
    gru.backend = backend
    y, h_n, grads = _run(gru, x, h0, dy, dh_n, lengths)
    np.testing.assert_allclose(y, expected[0], **tolerance(dtype, "output"))
    np.testing.assert_allclose(h_n, expected[1], **tolerance(dtype, "output"))
    np.testing.assert_allclose(grads.x, expected[2].x, **tolerance(dtype, "grad"))
    np.testing.assert_allclose(grads.h0, expected[2].h0, **tolerance(dtype, "grad"))
    for ours, theirs in zip(grads.params, expected[2].params, strict=True):
        for a, b in zip(ours.arrays(), theirs.arrays(), strict=True):
            np.testing.assert_allclose(a, b, **tolerance(dtype, "weight_grad", T * 5))


@pytest.mark.parametrize("backend", grukern.backends())
@pytest.mark.parametrize("batch_first", [False, True])
def test_whatever_the_padding_holds_changes_nothing(rng, backend, batch_first):
    """2 bidirectional layers with dropout: NaN, ±inf or 1e30 in the padding of x and dy give
    the bits of zero padding, and dL/dx is exactly zero there."""
    gru = grukern.GRU(
        I, H, 2, bidirectional=True, batch_first=batch_first, dropout=0.5, dtype=np.float64,
        backend=backend, seed=6,
    )  # fmt: skip
    x, h0, dy, dh_n = _inputs(rng, gru, np.float64)
    lengths = np.array([T, 0, 3, 1])

    def run(padding):
        x_p, dy_p = (fill_padding(a, lengths, padding, batch_first=batch_first) for a in (x, dy))
        y, h_n, tape = gru.forward_train(x_p, h0, lengths=lengths, rng=np.random.default_rng(2))
        return gru(x_p, h0, lengths), (y, h_n), gru.backward(tape, dy=dy_p, dh_n=dh_n)

    clean = run(0.0)
    for garbage in PADDING_GARBAGE:
        dirty = run(garbage)
        assert_same_bits(dirty, clean, f"padding {garbage}")
        dx = dirty[2].x.swapaxes(0, 1) if batch_first else dirty[2].x
        assert (dx[np.arange(T)[:, None] >= lengths] == 0).all()


def test_unbatched_input_has_unbatched_states(rng):
    gru = grukern.GRU(I, H, 2, bidirectional=True, dtype=np.float64, backend="numpy", seed=5)
    x, h0, dy, dh_n = _inputs(rng, gru, np.float64, batch=1)
    y, h_n, grads = _run(gru, x[:, 0], h0[:, 0], dy[:, 0], dh_n[:, 0])
    y_b, h_n_b, grads_b = _run(gru, x, h0, dy, dh_n)
    assert y.shape == (T, 2 * H) and h_n.shape == (4, H) and grads.h0.shape == (4, H)
    np.testing.assert_array_equal(y, y_b[:, 0])
    np.testing.assert_array_equal(h_n, h_n_b[:, 0])
    np.testing.assert_array_equal(grads.x, grads_b.x[:, 0])


# -- Keras: reset_after=False stacks and the Bidirectional wrapper -------------------------------


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("reset_after", [False, True])
def test_stacked_layers_match_keras(rng, bidirectional, reset_after):
    keras = pytest.importorskip("keras")
    gru = grukern.GRU(
        I, H, 2, bidirectional=bidirectional, batch_first=True, reset_after=reset_after,
        backend="numpy", seed=6,
    )  # fmt: skip
    model = keras.Sequential([keras.Input((None, I))])
    for layer in range(2):
        cells = [
            keras.layers.GRU(H, return_sequences=True, reset_after=reset_after, go_backwards=d == 1)
            for d in range(gru.directions)
        ]
        model.add(
            keras.layers.Bidirectional(cells[0], backward_layer=cells[1])
            if bidirectional
            else cells[0]
        )
        weights = [
            w
            for d in range(gru.directions)
            for w in gru.params[layer * gru.directions + d].to_keras_weights()
        ]
        model.layers[-1].set_weights(weights)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    y_keras = model(x).detach().cpu().numpy()
    y, _ = gru(x)
    np.testing.assert_allclose(y, y_keras, **tolerance(np.float32, "output"))


# -- dropout -------------------------------------------------------------------------------------


def test_dropout_masks_are_reproducible_and_training_only(rng):
    gru = grukern.GRU(I, H, 3, dropout=0.4, dtype=np.float64, backend="numpy", seed=7)
    x = rng.standard_normal((T, 50, I))
    y1, _, tape1 = gru.forward_train(x, rng=np.random.default_rng(11))
    y2, _, tape2 = gru.forward_train(x, rng=np.random.default_rng(11))
    y3, _, _ = gru.forward_train(x, rng=np.random.default_rng(12))
    np.testing.assert_array_equal(y1, y2)
    assert len(tape1.masks) == 2
    for m1, m2 in zip(tape1.masks, tape2.masks, strict=True):
        np.testing.assert_array_equal(m1, m2)
        assert set(np.unique(m1)) == {0.0, 1 / 0.6}
        assert 0.3 < (m1 == 0).mean() < 0.5  # about p of the entries are dropped
    assert not np.array_equal(y1, y3)
    y_inference, _ = gru(x)
    assert not np.array_equal(y_inference, y1)
    no_dropout = grukern.GRU(I, H, 3, dtype=np.float64, backend="numpy", seed=7)
    np.testing.assert_array_equal(no_dropout(x)[0], y_inference)


def test_dropout_gradient_matches_finite_differences(rng):
    """The loss with a fixed mask is smooth: central differences with the same rng seed."""
    gru = grukern.GRU(
        2, 3, 2, bidirectional=True, dropout=0.5, dtype=np.float64, backend="numpy", seed=8
    )
    x = rng.standard_normal((4, 2, 2))
    dy = rng.standard_normal((4, 2, 6))

    def loss():
        y, _, _ = gru.forward_train(x, rng=np.random.default_rng(3))
        return float((y * dy).sum())

    _, _, tape = gru.forward_train(x, rng=np.random.default_rng(3))
    grads = gru.backward(tape, dy=dy)
    assert 0 < sum((m == 0).sum() for m in tape.masks) < tape.masks[0].size  # some dropped
    for target, grad in [
        (x, grads.x),
        (gru.params[0].w_hh, grads.params[0].w_hh),
        (gru.params[1].w_ih, grads.params[1].w_ih),
    ]:
        numeric = numerical_gradient(loss, target)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


# -- state dicts and torch interchange -----------------------------------------------------------


@needs_torch
def test_state_dict_round_trips_with_torch(rng):
    import torch

    module = torch.nn.GRU(I, H, 2, bidirectional=True, batch_first=True, dropout=0.25)
    gru = grukern.GRU.from_torch(module, backend="numpy")
    assert (gru.num_layers, gru.bidirectional, gru.batch_first, gru.dropout) == (
        2,
        True,
        True,
        0.25,
    )
    assert gru.dtype == np.float32
    torch_state = module.state_dict()
    ours = gru.state_dict()
    assert list(ours) == list(torch_state)
    for key, value in ours.items():
        np.testing.assert_array_equal(value, torch_state[key].numpy())
    back = gru.to_torch()
    for key, value in back.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), torch_state[key].numpy())
    other = grukern.GRU(I, H, 2, bidirectional=True, batch_first=True, backend="numpy", seed=0)
    other.load_state_dict(torch_state)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    np.testing.assert_array_equal(other(x)[0], gru(x)[0])


@needs_torch
def test_torch_state_dict_loads_into_torch_nn_gru():
    """state_dict() holds NumPy arrays, which torch's load_state_dict refuses; the tensor form
    loads, is a copy, and gives torch the layer's outputs."""
    import torch

    gru = grukern.GRU(I, H, 2, bidirectional=True, backend="numpy", seed=3)
    module = torch.nn.GRU(I, H, 2, bidirectional=True)
    with pytest.raises((TypeError, AttributeError, RuntimeError)):
        module.load_state_dict(gru.state_dict())
    state = gru.to_torch_state_dict()
    assert all(isinstance(value, torch.Tensor) for value in state.values())
    module.load_state_dict(state)
    state["weight_hh_l0"].zero_()  # a copy: the layer's weights are untouched
    assert gru.params[0].w_hh.any()
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(gru(x)[0], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="reset_after=True variant"):
        grukern.GRU(I, H, reset_after=False).to_torch_state_dict()


# -- bad input -----------------------------------------------------------------------------------

LAYER = grukern.GRU(I, H, 2, bidirectional=True, backend="numpy", seed=0)
X = np.zeros((T, B, I), np.float32)

BAD_CALLS = {
    "lengths above T": (
        {"lengths": np.array([1, 2, 3, T + 1])},
        ValueError,
        r"lengths must lie in \[0, T\] = \[0, 6\]",
    ),
    "lengths shape": ({"lengths": np.array([1, 2])}, ValueError, r"lengths must have shape \(4,\)"),
    "lengths dtype": (
        {"lengths": np.ones(B)},
        TypeError,
        r"lengths must have an integer dtype, got float64",
    ),
    "h0 layers": (
        {"h0": np.zeros((2, B, H), np.float32)},
        ValueError,
        r"h0 must have shape \(4, 4, 5\), got \(2, 4, 5\)",
    ),
    "h0 dtype": (
        {"h0": np.zeros((4, B, H))},
        TypeError,
        r"h0 has dtype float64 but the params have dtype float32",
    ),
    "x features": (
        {"x": np.zeros((T, B, I + 1), np.float32)},
        ValueError,
        r"x has 4 features .* input_size is 3",
    ),
}


@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_calls_raise_clear_errors(case):
    changes, error, message = BAD_CALLS[case]
    arguments = {"x": X, **changes}
    with pytest.raises(error, match=message):
        LAYER(**arguments)
    with pytest.raises(error, match=message):
        LAYER.forward_train(**arguments)


BAD_LAYERS = {
    "num_layers": ({"num_layers": 0}, ValueError, r"num_layers must be a positive integer, got 0"),
    "dropout": ({"dropout": 1.5}, ValueError, r"dropout must lie in \[0, 1\], got 1.5"),
    "dropout type": (
        {"dropout": "0.1"},
        TypeError,
        r"dropout must be a float in \[0, 1\], got '0.1'",
    ),
    "bidirectional": ({"bidirectional": 1}, TypeError, r"bidirectional must be a bool, got int"),
    "dtype": ({"dtype": np.int32}, TypeError, r"dtype must be float32 or float64, got int32"),
    "backend": ({"backend": "jax"}, ValueError, r"backend must be one of"),
}


@pytest.mark.parametrize("case", BAD_LAYERS)
def test_bad_layer_arguments_raise_clear_errors(case):
    changes, error, message = BAD_LAYERS[case]
    with pytest.raises(error, match=message):
        grukern.GRU(I, H, **{"num_layers": 2, **changes})


def test_dropout_training_needs_an_rng():
    gru = grukern.GRU(I, H, 2, dropout=0.1, backend="numpy")
    with pytest.raises(TypeError, match=r"rng must be a numpy.random.Generator when dropout > 0"):
        gru.forward_train(X)


def test_replaced_params_of_the_wrong_shape_are_named():
    gru = grukern.GRU(I, H, 2, backend="numpy", seed=0)
    gru.params[1] = grukern.init_params(I, H)
    with pytest.raises(
        ValueError, match=r"params\[1\] has input_size=3, .* layer 1 needs input_size=5"
    ):
        gru(X)


def test_state_dict_with_wrong_keys_shapes_or_dtypes_is_rejected():
    gru = grukern.GRU(I, H, 1, backend="numpy", seed=0)
    state = gru.state_dict()
    with pytest.raises(KeyError, match=r"missing \['bias_hh_l0'\]"):
        gru.load_state_dict({k: v for k, v in state.items() if k != "bias_hh_l0"})
    with pytest.raises(ValueError, match=r"'weight_hh_l0' has shape \(15, 4\)"):
        gru.load_state_dict({**state, "weight_hh_l0": np.zeros((15, 4), np.float32)})
    with pytest.raises(TypeError, match=r"'bias_ih_l0' has dtype float64; the layer needs float32"):
        gru.load_state_dict({**state, "bias_ih_l0": state["bias_ih_l0"].astype(np.float64)})


def test_reprs_are_short_and_name_no_values(rng):
    gru = grukern.GRU(I, H, 2, bidirectional=True, backend="numpy", seed=0)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    y, _, tape = gru.forward_train(x)
    grads = gru.backward(tape, dy=np.ones_like(y))
    single = grukern.forward_train(x, gru.params[0], backend="numpy")[2]
    texts = {
        "params": repr(gru.params[0]),
        "tape": repr(single),
        "gradients": repr(grukern.backward(single, dh_n=np.ones((B, H), np.float32))),
        "layer tape": repr(tape),
        "layer gradients": repr(grads),
    }
    assert texts["params"] == (
        f"GRUParams(input_size={I}, hidden_size={H}, dtype=float32, reset_after=True, on the host)"
    )
    assert texts["tape"].startswith(f"Tape(T={T}, B={B}, I={I}, H={H}, dtype=float32")
    assert texts["gradients"].startswith(f"Gradients(x=float32 ({T}, {B}, {I}), h0=float32")
    assert texts["layer tape"].startswith("LayerTape(4 tapes, 0 dropout masks")
    assert texts["layer gradients"].endswith("params=[4 GRUParams])")
    for text in texts.values():
        assert len(text) < 200 and "[[" not in text and "array(" not in text


def test_backward_rejects_a_single_layer_tape(rng):
    gru = grukern.GRU(I, H, backend="numpy", seed=0)
    tape = grukern.forward_train(X, gru.params[0])[2]
    with pytest.raises(
        TypeError, match=r"tape must be the LayerTape of GRU.forward_train, got Tape"
    ):
        gru.backward(tape, dy=np.zeros((T, B, H), np.float32))


def test_from_params_references_the_given_weights(rng):
    gru = grukern.GRU(I, H, 2, bidirectional=True, dtype=np.float64, backend="numpy", seed=9)
    wrapped = grukern.GRU.from_params(gru.params, bidirectional=True, backend="numpy")
    assert (wrapped.num_layers, wrapped.input_size, wrapped.hidden_size) == (2, I, H)
    assert all(a is b for a, b in zip(wrapped.params, gru.params, strict=True))
    x = rng.standard_normal((T, B, I))
    np.testing.assert_array_equal(wrapped(x)[0], gru(x)[0])
    with pytest.raises(ValueError, match=r"params must be a non-empty list of GRUParams, 2 per"):
        grukern.GRU.from_params(gru.params[:3], bidirectional=True)
    with pytest.raises(ValueError, match=r"params\[2\] has input_size=3"):
        grukern.GRU.from_params(
            [gru.params[0], gru.params[1], gru.params[0], gru.params[1]], bidirectional=True
        )


@pytest.mark.parametrize("backend", grukern.backends())
def test_layer_modifies_no_argument(rng, backend):
    gru = grukern.GRU(
        I, H, 2, bidirectional=True, dropout=0.3, dtype=np.float64, backend=backend, seed=10
    )
    x, h0, dy, dh_n = _inputs(rng, gru, np.float64)
    lengths = np.array([T, 0, 2, 5])
    arguments = (x, h0, dy, dh_n, lengths, *(a for p in gru.params for a in p.arrays()))
    before = [a.copy() for a in arguments]
    _, _, tape = gru.forward_train(x, h0, lengths=lengths, rng=np.random.default_rng(0))
    gru(x, h0, lengths=lengths)
    gru.backward(tape, dy=dy, dh_n=dh_n)
    for old, new in zip(before, arguments, strict=True):
        np.testing.assert_array_equal(old, new)


def test_non_contiguous_weights_work(rng):
    gru = grukern.GRU(I, H, 2, dtype=np.float64, backend="numba", seed=11)
    strided = [
        grukern.GRUParams(*(np.asfortranarray(a) for a in p.arrays()), reset_after=True)
        for p in gru.params
    ]
    x = rng.standard_normal((T, B, I))
    wrapped = grukern.GRU.from_params(strided, backend="numba")
    np.testing.assert_array_equal(wrapped(x)[0], gru(x)[0])
