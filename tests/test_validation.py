"""Every validation rule of the API: the exception type, and a message that names the argument."""

import numpy as np
import pytest

import grukern

I, H, T, B = 4, 5, 3, 2
PARAMS = grukern.init_params(I, H, seed=0)  # float32
X = np.zeros((T, B, I), np.float32)
H0 = np.zeros((B, H), np.float32)


def _forward(**changes):
    arguments = {"x": X, "params": PARAMS, "h0": H0, **changes}
    return grukern.forward(arguments.pop("x"), arguments.pop("params"), **arguments)


FORWARD_CASES = {
    "x 1-d": (
        {"x": np.zeros(4, np.float32)},
        ValueError,
        r"x must have 3 dimensions .* got shape \(4,\)",
    ),
    "x 4-d": ({"x": np.zeros((1, T, B, I), np.float32)}, ValueError, r"x must have 3 dimensions"),
    "x features": (
        {"x": np.zeros((T, B, 7), np.float32)},
        ValueError,
        r"x has 7 features \(last axis of shape \(3, 2, 7\)\) but params.input_size is 4",
    ),
    "x int": (
        {"x": np.zeros((T, B, I), np.int64)},
        TypeError,
        r"x has dtype int64; expected float32 or float64",
    ),
    "x complex": ({"x": np.zeros((T, B, I), np.complex64)}, TypeError, r"x has dtype complex64"),
    "x object": ({"x": np.zeros((T, B, I), object)}, TypeError, r"x has dtype object"),
    "x float64 vs float32": (
        {"x": X.astype(np.float64)},
        TypeError,
        r"x has dtype float64 but the params have dtype float32",
    ),
    "x list": ({"x": X.tolist()}, TypeError, r"x must be a numpy.ndarray, got list"),
    "h0 shape": (
        {"h0": np.zeros((B, H + 1), np.float32)},
        ValueError,
        r"h0 must have shape \(2, 5\), got \(2, 6\)",
    ),
    "h0 layer axis": (
        {"h0": np.zeros((1, B, H), np.float32)},
        ValueError,
        r"h0 must have shape \(2, 5\), got \(1, 2, 5\)",
    ),
    "h0 unbatched": (
        {"x": X[:, 0], "h0": H0},
        ValueError,
        r"h0 must have shape \(5,\), got \(2, 5\)",
    ),
    "h0 dtype": (
        {"h0": H0.astype(np.float64)},
        TypeError,
        r"h0 has dtype float64 but the params have dtype float32",
    ),
    "lengths list": (
        {"lengths": [3, 3]},
        TypeError,
        r"lengths must be a numpy.ndarray of integers, got list",
    ),
    "lengths float": (
        {"lengths": np.array([3.0, 3.0])},
        TypeError,
        r"lengths must have an integer dtype, got float64",
    ),
    "lengths shape": (
        {"lengths": np.array([3, 3, 3])},
        ValueError,
        r"lengths must have shape \(2,\) \(one per batch row\), got \(3,\)",
    ),
    "lengths 2-d": (
        {"lengths": np.array([[3, 3]])},
        ValueError,
        r"lengths must have shape \(2,\) \(one per batch row\), got \(1, 2\)",
    ),
    "lengths above T": (
        {"lengths": np.array([3, 4])},
        ValueError,
        r"lengths must lie in \[0, T\] = \[0, 3\], got values from 3 to 4",
    ),
    "lengths negative": (
        {"lengths": np.array([-1, 2])},
        ValueError,
        r"lengths must lie in \[0, T\] = \[0, 3\], got values from -1 to 2",
    ),
    "lengths unbatched": (
        {"x": X[:, 0], "h0": None, "lengths": np.array([3])},
        ValueError,
        r"lengths is for a padded batch; x is one unbatched sequence of shape \(3, 4\)",
    ),
    "params type": ({"params": {"w_ih": 1}}, TypeError, r"params must be a GRUParams, got dict"),
    "batch_first type": ({"batch_first": 1}, TypeError, r"batch_first must be a bool, got int"),
    "unknown backend": (
        {"backend": "jax"},
        ValueError,
        r"backend must be one of \['cuda', .*'numpy', 'auto'\], got 'jax'",
    ),
    "unavailable backend": (
        {"backend": "cuda"},
        grukern.BackendUnavailableError,
        r"backend 'cuda' is unavailable: \w+",
    ),
}


@pytest.mark.parametrize("case", FORWARD_CASES)
def test_bad_forward_arguments_raise_clear_errors(case):
    changes, error, message = FORWARD_CASES[case]
    if case == "unavailable backend" and "cuda" in grukern.backends():
        pytest.skip("this machine can run the CUDA backend")
    with pytest.raises(error, match=message):
        _forward(**changes)
    with pytest.raises(error, match=message):
        arguments = {"x": X, "params": PARAMS, "h0": H0, **changes}
        grukern.forward_train(arguments.pop("x"), arguments.pop("params"), **arguments)


def test_params_changed_after_construction_are_checked_at_the_call():
    params = PARAMS.copy()
    params.b_hh = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"GRUParams.b_hh must have shape \(15,\), got \(3,\)"):
        _forward(params=params)


def _tape():
    return grukern.forward_train(X, PARAMS, H0)[2]


BACKWARD_CASES = {
    "nothing to propagate": (
        {},
        ValueError,
        r"backward needs dy or dh_n \(or both\); both are None",
    ),
    "dy shape": (
        {"dy": np.zeros((T, B, H + 1), np.float32)},
        ValueError,
        r"dy must have shape \(3, 2, 5\), got \(3, 2, 6\)",
    ),
    "dy dtype": (
        {"dy": np.zeros((T, B, H), np.float64)},
        TypeError,
        r"dy has dtype float64 but the params have dtype float32",
    ),
    "dy int": (
        {"dy": np.zeros((T, B, H), np.int32)},
        TypeError,
        r"dy has dtype int32; expected float32 or float64",
    ),
    "dh_n shape": (
        {"dh_n": np.zeros((1, B, H), np.float32)},
        ValueError,
        r"dh_n must have shape \(2, 5\), got \(1, 2, 5\)",
    ),
    "dh_n list": ({"dh_n": H0.tolist()}, TypeError, r"dh_n must be a numpy.ndarray, got list"),
}


@pytest.mark.parametrize("case", BACKWARD_CASES)
def test_bad_backward_arguments_raise_clear_errors(case):
    changes, error, message = BACKWARD_CASES[case]
    with pytest.raises(error, match=message):
        grukern.backward(_tape(), **changes)


def test_backward_checks_dy_in_the_forward_layout():
    tape = grukern.forward_train(X.transpose(1, 0, 2), PARAMS, H0, batch_first=True)[2]
    with pytest.raises(ValueError, match=r"dy must have shape \(2, 3, 5\), got \(3, 2, 5\)"):
        grukern.backward(tape, dy=np.zeros((T, B, H), np.float32))


def test_backward_rejects_what_is_not_a_tape():
    with pytest.raises(
        TypeError, match="tape must be the Tape returned by forward_train, got tuple"
    ):
        grukern.backward((1, 2), dy=np.zeros((T, B, H), np.float32))


def test_backward_rejects_a_tape_whose_params_changed_shape():
    params = PARAMS.copy()
    tape = grukern.forward_train(X, params, H0)[2]
    wider = grukern.init_params(I, H + 1, seed=1)
    params.w_ih, params.w_hh, params.b_ih, params.b_hh = wider.arrays()
    with pytest.raises(
        ValueError, match=r"tape.params changed shape since forward_train.*hidden_size=6"
    ):
        grukern.backward(tape, dh_n=np.zeros((B, H), np.float32))
