"""GRUParams: initialisation schemes, consistency checks, copies and casts."""

import numpy as np
import pytest

import grukern
from grukern.params import keras_columns, swap_rz


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("init", ["torch", "keras"])
def test_init_params_shapes_dtype_and_seed(dtype, init):
    params = grukern.init_params(5, 7, dtype=dtype, seed=11, init=init)
    assert (params.input_size, params.hidden_size, params.dtype) == (5, 7, np.dtype(dtype))
    assert params.w_ih.shape == (21, 5) and params.w_hh.shape == (21, 7)
    assert params.b_ih.shape == params.b_hh.shape == (21,)
    assert all(a.dtype == dtype for a in params.arrays())
    assert params.reset_after is True
    again = grukern.init_params(5, 7, dtype=dtype, seed=11, init=init)
    other = grukern.init_params(5, 7, dtype=dtype, seed=12, init=init)
    np.testing.assert_array_equal(again.w_hh, params.w_hh)
    assert not np.array_equal(other.w_hh, params.w_hh)


def test_torch_init_is_uniform_within_one_over_sqrt_h():
    params = grukern.init_params(40, 16, seed=0, dtype=np.float64)
    for array in params.arrays():
        assert np.abs(array).max() <= 0.25
        assert np.abs(array).max() > 0.24  # fills the interval, not a narrower one


def test_keras_init_is_glorot_orthogonal_zero_bias():
    params = grukern.init_params(10, 6, seed=0, dtype=np.float64, init="keras")
    np.testing.assert_allclose(params.w_hh.T @ params.w_hh, np.eye(6), atol=1e-12)
    assert np.abs(params.w_ih).max() <= np.sqrt(6 / (10 + 18))
    assert not params.b_ih.any() and not params.b_hh.any()


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"input_size": 0}, ValueError, "input_size"),
        ({"hidden_size": 2.5}, ValueError, "hidden_size"),
        ({"dtype": np.int32}, TypeError, "dtype"),
        ({"dtype": np.float16}, TypeError, "float16"),
        ({"init": "xavier"}, ValueError, "init"),
    ],
)
def test_init_params_rejects_bad_arguments(kwargs, error, names):
    arguments = {"input_size": 3, "hidden_size": 4, **kwargs}
    with pytest.raises(error, match=names):
        grukern.init_params(arguments.pop("input_size"), arguments.pop("hidden_size"), **arguments)


def _arrays(I=3, H=4, dtype=np.float32):
    return {
        "w_ih": np.zeros((3 * H, I), dtype),
        "w_hh": np.zeros((3 * H, H), dtype),
        "b_ih": np.zeros(3 * H, dtype),
        "b_hh": np.zeros(3 * H, dtype),
    }


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"w_hh": np.zeros((12, 5), np.float32)}, ValueError, r"w_hh must have shape"),
        ({"w_ih": np.zeros((9, 3), np.float32)}, ValueError, r"w_ih must have shape \(3\*hidden"),
        ({"w_ih": np.zeros(12, np.float32)}, ValueError, r"w_ih must have shape"),
        ({"b_ih": np.zeros(11, np.float32)}, ValueError, r"b_ih must have shape \(12,\), got"),
        ({"b_hh": np.zeros((12, 1), np.float32)}, ValueError, r"b_hh must have shape"),
        ({"b_hh": np.zeros(12, np.float64)}, TypeError, r"share one dtype.*b_hh=float64"),
        ({"w_hh": np.zeros((12, 4), np.int64)}, TypeError, r"w_hh has dtype int64"),
        ({"w_ih": np.zeros((12, 3), np.complex64)}, TypeError, r"w_ih has dtype complex64"),
        ({"w_ih": [[0.0] * 3] * 12}, TypeError, r"w_ih must be a numpy.ndarray, got list"),
    ],
)
def test_inconsistent_params_are_rejected_naming_the_field(change, error, message):
    with pytest.raises(error, match=message):
        grukern.GRUParams(**{**_arrays(), **change})


def test_reset_after_must_be_a_bool():
    with pytest.raises(TypeError, match="reset_after must be a bool, got str"):
        grukern.GRUParams(**_arrays(), reset_after="yes")


def test_astype_and_copy_make_independent_arrays():
    params = grukern.init_params(3, 4, seed=0, reset_after=False)
    double = params.astype(np.float64)
    assert double.dtype == np.float64 and double.reset_after is False
    np.testing.assert_array_equal(double.w_hh, params.w_hh.astype(np.float64))
    copy = params.copy()
    copy.w_hh[0, 0] += 1
    assert copy.w_hh[0, 0] != params.w_hh[0, 0]
    with pytest.raises(TypeError, match="dtype"):
        params.astype(np.int8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize(("H", "k"), [(1, 1), (3, 5), (33, 17), (128, 128)])
def test_gate_layouts_convert_both_ways(rng, dtype, H, k):
    """keras_columns and swap_rz of a transposed array (the blocked transposes for float
    arrays, NumPy's for others) against the gate blocks taken one by one."""
    w = (rng.standard_normal((3 * H, k)) * 100).astype(dtype)  # grukern's rows [r; z; n]
    keras = np.concatenate([w[H : 2 * H], w[:H], w[2 * H :]]).T  # columns [z, r, h]
    columns = keras_columns(w)
    np.testing.assert_array_equal(columns, keras)
    assert columns.flags.c_contiguous and columns.dtype == dtype
    rows = swap_rz(np.ascontiguousarray(keras).T)
    np.testing.assert_array_equal(rows, w)
    assert rows.flags.c_contiguous
