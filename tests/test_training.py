"""Training: optimizers against hand-computed steps and torch.optim, the Dense/BCE head by finite
differences, and the classic Keras example reproduced (loss per epoch) at a small size."""

import numpy as np
import pytest

import grukern
from grukern import classic, model, optim
from tests.helpers import numerical_gradient

torch = pytest.importorskip("torch")


def _tree(rng, dtype=np.float64):
    """A parameter structure as models use it: a GRUParams plus two plain arrays."""
    params = grukern.init_params(3, 4, dtype=dtype, seed=int(rng.integers(1000)))
    return [params, rng.standard_normal((4, 2)).astype(dtype), rng.standard_normal(2).astype(dtype)]


def _gradients(rng, tree, steps):
    return [[rng.standard_normal(a.shape) for a in optim.leaves(tree)] for _ in range(steps)]


def _copies(tree):
    return [a.copy() for a in optim.leaves(tree)]


def test_sgd_step_is_theta_minus_lr_times_grad(rng):
    tree = _tree(rng)
    before = _copies(tree)
    (grads,) = _gradients(rng, tree, 1)
    grads_before = [g.copy() for g in grads]
    optim.SGD(tree, lr=0.1).step(grads)
    for new, old, g in zip(optim.leaves(tree), before, grads, strict=True):
        np.testing.assert_allclose(new, old - 0.1 * g, rtol=1e-15)
    for g, g0 in zip(grads, grads_before, strict=True):  # gradients are not modified
        np.testing.assert_array_equal(g, g0)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (
            lambda p: optim.SGD(p, lr=0.05, momentum=0.9),
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        ),
        (
            lambda p: optim.SGD(p, lr=0.05, momentum=0.5, weight_decay=0.01),
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5, weight_decay=0.01),
        ),
        (
            lambda p: optim.Adam(p, lr=0.01, eps=1e-8, epsilon="torch"),
            lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-8),
        ),
        (
            lambda p: optim.Adam(
                p, lr=0.01, beta1=0.8, eps=1e-6, weight_decay=0.1, epsilon="torch"
            ),
            lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.999), eps=1e-6, weight_decay=0.1),
        ),
    ],
    ids=["sgd-momentum", "sgd-momentum-decay", "adam", "adam-decay"],
)
def test_optimizers_match_torch_optim(rng, ours, theirs):
    tree = _tree(rng)
    tensors = [torch.tensor(a, requires_grad=True) for a in optim.leaves(tree)]
    ours, theirs = ours(tree), theirs(tensors)
    for grads in _gradients(rng, tree, 5):
        ours.step(grads)
        for tensor, g in zip(tensors, grads, strict=True):
            tensor.grad = torch.tensor(g)
        theirs.step()
    for a, tensor in zip(optim.leaves(tree), tensors, strict=True):
        np.testing.assert_allclose(a, tensor.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_adam_first_step_by_hand_and_against_keras(rng):
    """Keras's Adam: α = η √(1 − β2^t) / (1 − β1^t), θ −= α m / (√v + ε)."""
    keras = pytest.importorskip("keras")
    theta = rng.standard_normal(5)
    grads = _gradients(rng, theta, 3)
    ours = theta.copy()
    adam = optim.Adam(ours)
    adam.step(grads[0][0])
    g = grads[0][0]
    alpha = 1e-3 * np.sqrt(1 - 0.999) / (1 - 0.9)
    expected = theta - alpha * (0.1 * g) / (np.sqrt(0.001 * g * g) + 1e-7)
    np.testing.assert_allclose(ours, expected, rtol=1e-14)
    for (g,) in grads[1:]:
        adam.step(g)
    variable = keras.Variable(theta, dtype="float64")
    keras_adam = keras.optimizers.Adam()
    for (g,) in grads:
        keras_adam.apply_gradients([(keras.ops.convert_to_tensor(g), variable)])
    # Keras keeps the learning rate in float32 (1e-3 is stored as 1e-3·(1 + 4.7e-8)), so the
    # total update is compared, to well below any difference of formula.
    keras_update = keras.ops.convert_to_numpy(variable) - theta
    np.testing.assert_allclose(ours - theta, keras_update, rtol=1e-6)


def test_clip_grad_norm_matches_torch(rng):
    tree = _tree(rng)
    (grads,) = _gradients(rng, tree, 1)
    tensors = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for tensor, g in zip(tensors, grads, strict=True):
        tensor.grad = torch.tensor(g)
    norm = optim.clip_grad_norm(grads, 1.5)
    torch_norm = torch.nn.utils.clip_grad_norm_(tensors, 1.5)
    assert norm == pytest.approx(float(torch_norm), rel=1e-14)
    for g, tensor in zip(grads, tensors, strict=True):
        np.testing.assert_allclose(g, tensor.grad.numpy(), rtol=1e-6)  # torch adds 1e-6 to norm
    assert np.sqrt(sum((g * g).sum() for g in grads)) == pytest.approx(1.5, rel=1e-6)
    assert optim.clip_grad_norm(grads, 10.0) == pytest.approx(1.5, rel=1e-6)  # within: unchanged


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda p: optim.SGD(p, lr=-1), ValueError, r"lr must be a non-negative number, got -1"),
        (lambda p: optim.Adam(p, beta1=1.0), ValueError, r"beta1 must lie in \[0, 1\), got 1.0"),
        (lambda p: optim.Adam(p, epsilon="tf"), ValueError, r"epsilon must be 'keras' or 'torch'"),
        (lambda p: optim.SGD("w"), TypeError, r"parameters must be arrays, GRUParams, or lists"),
    ],
)
def test_bad_optimizer_arguments(rng, make, error, message):
    with pytest.raises(error, match=message):
        make(_tree(rng))


def test_step_rejects_gradients_of_another_structure(rng):
    tree = _tree(rng)
    sgd = optim.SGD(tree)
    with pytest.raises(ValueError, match=r"grads has 5 arrays but the optimizer holds 6"):
        sgd.step(optim.leaves(tree)[:5])
    grads = [np.zeros_like(a) for a in optim.leaves(tree)]
    grads[4] = np.zeros((2, 4))
    with pytest.raises(ValueError, match=r"grads\[4\] has shape \(2, 4\) .* has shape \(4, 2\)"):
        sgd.step(grads)


# -- the head ------------------------------------------------------------------------------------


def test_bce_with_logits_is_stable_and_exact():
    """Moderate logits against the textbook formula; extreme ones reach their limits exactly."""
    logits = np.array([-3.0, -0.5, 0.0, 2.0])
    targets = np.array([1.0, 0.0, 0.5, 1.0])
    p = 1 / (1 + np.exp(-logits))
    loss, grad = model.bce_with_logits(logits, targets)
    textbook = -(targets * np.log(p) + (1 - targets) * np.log(1 - p))
    assert loss == pytest.approx(textbook.mean(), rel=1e-14)
    np.testing.assert_allclose(grad, (p - targets) / 4, rtol=1e-14)
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # no overflow, no log(0)
        loss, grad = model.bce_with_logits(np.array([-1e4, 1e4, -1e4]), np.array([0.0, 1.0, 1.0]))
    assert loss == pytest.approx(1e4 / 3, rel=1e-15)  # only the confidently wrong one costs
    np.testing.assert_array_equal(grad, [0.0, 0.0, -1 / 3])


@pytest.mark.parametrize("backend", grukern.backends())
def test_classifier_gradients_match_finite_differences(rng, backend):
    """The whole model: GRU -> Dense -> σ -> BCE, every parameter and both heads."""
    classifier = model.SequenceClassifier(
        2, 3, outputs=2, dtype=np.float64, backend=backend, seed=1
    )
    x = rng.standard_normal((2, 4, 2))
    targets = (rng.random((2, 4, 2)) > 0.5).astype(np.float64)

    def loss():
        return classifier.loss_and_grads(x, targets)[0]

    _, _, grads = classifier.loss_and_grads(x, targets)
    for param, grad in zip(optim.leaves(classifier.parameters()), optim.leaves(grads), strict=True):
        np.testing.assert_allclose(grad, numerical_gradient(loss, param), rtol=1e-6, atol=1e-9)


def test_dense_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"Dense needs kernel \(H, K\) and bias \(K,\)"):
        model.Dense(np.zeros((3, 2)), np.zeros(3))


# -- the classic Keras example -------------------------------------------------------------------


@pytest.fixture(scope="module")
def co2():
    pytest.importorskip("statsmodels")
    return classic.co2_rising(window=32, stride=24)


@pytest.mark.parametrize(("dtype", "rtol"), [(np.float64, 1e-5), (np.float32, 1e-4)])
def test_classic_example_reproduces_keras_loss_per_epoch(co2, dtype, rtol):
    """Same data, initial weights (exported from Keras), batches and Adam: two epochs.

    Keras's logged loss and accuracy are float32 running means, so float64 agrees to about
    1e-7 here; the bound asserted is 1e-5 (float64) and 1e-4 (float32)."""
    pytest.importorskip("keras")
    x, targets = (a.astype(dtype) for a in co2)
    keras_model = classic.keras_model(8, dtype=dtype, seed=3)
    ours = model.SequenceClassifier.from_keras(keras_model, backend="auto")
    history = ours.fit(x, targets, optim.Adam(ours.parameters()), epochs=2, batch_size=32)
    keras_history = keras_model.fit(x, targets, epochs=2, batch_size=32, shuffle=False, verbose=0)
    np.testing.assert_allclose(history["loss"], keras_history.history["loss"], rtol=rtol)
    np.testing.assert_allclose(history["accuracy"], keras_history.history["accuracy"], rtol=1e-6)
    for ours_w, keras_w in zip(ours.keras_weights(), keras_model.get_weights(), strict=True):
        np.testing.assert_allclose(ours_w, keras_w, rtol=100 * rtol, atol=100 * rtol)


def test_keras_weights_round_trip(rng):
    keras_model = classic.keras_model(5, dtype=np.float64, seed=4)
    ours = model.SequenceClassifier.from_keras(keras_model, backend="numpy")
    for ours_w, keras_w in zip(ours.keras_weights(), keras_model.get_weights(), strict=True):
        np.testing.assert_array_equal(ours_w, keras_w)
    x = rng.standard_normal((3, 7, 1))
    expected = keras_model(x).detach().cpu().numpy()
    np.testing.assert_allclose(ours.predict(x), expected, rtol=1e-7)


def test_from_keras_rejects_other_models():
    keras = pytest.importorskip("keras")
    inputs = keras.Input(shape=(None, 1))
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GRU(4)(inputs))
    with pytest.raises(ValueError, match=r"the model's GRU must have return_sequences=True"):
        model.SequenceClassifier.from_keras(keras.Model(inputs, outputs))
