"""The argument mapping of grukern's capturable cuBLAS GEMM, checked without a GPU: a column-major
GEMM written in NumPy (cuBLAS's definition) is fed the arguments computed for row-major views,
and must give a @ b."""

import numpy as np
import pytest

from grukern._backends._cuda_gemm import column_major_arguments


def _cublas_gemm(op_1, op_2, m, n, k, ld_1, ld_2, ld_out, first, second, out):
    """cuBLAS's gemm on flat buffers: column-major C (m, n) = op_1(A) op_2(B), where a matrix
    with leading dimension ld holds element (i, j) at i + j·ld, and op 1 transposes."""

    def matrix(buffer, op, rows, columns, ld):  # op(X) is (rows, columns)
        stored_rows, stored_columns = (columns, rows) if op else (rows, columns)
        i, j = np.meshgrid(np.arange(stored_rows), np.arange(stored_columns), indexing="ij")
        stored = buffer[i + j * ld]
        return stored.T if op else stored

    product = matrix(first, op_1, m, k, ld_1) @ matrix(second, op_2, k, n, ld_2)
    i, j = np.meshgrid(np.arange(m), np.arange(n), indexing="ij")
    out[i + j * ld_out] = product


def _flat_view(base, view):
    """The flat buffer of base starting at view's first element (a device pointer's meaning)."""
    offset = (view.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // 8
    return base.reshape(-1)[offset:]


B, H = 3, 4
_rng = np.random.default_rng(0)
_W = _rng.standard_normal((3 * H, H))  # W_hh (3H, H)
_STEP = _rng.standard_normal((B, 3 * H))  # one step of dgh or da (B, 3H)
_STATE = _rng.standard_normal((1, H))  # h_{t-1} at B = 1


@pytest.mark.parametrize(
    ("a_base", "a_index", "b_base", "b_index"),
    [
        (_STATE, np.s_[:, :], _W, "T"),  # h_{t-1} W_hhᵀ at B = 1 (the forward's product)
        (_STEP[:, :H], np.s_[:, :], _W[: 2 * H], "T"),  # (B, H) @ W_h[rz]ᵀ
        (_STEP, np.s_[:, :], _W, np.s_[:, :]),  # dgh_t W_hh
        (_STEP, np.s_[:, 2 * H :], _W, np.s_[2 * H :, :]),  # da_n W_hn: strided rows of da_t
        (_STEP, np.s_[:, : 2 * H], _W, np.s_[: 2 * H, :]),  # [da_r | da_z] W_h[rz]
    ],
)
def test_the_arguments_make_cublas_compute_a_times_b(a_base, a_index, b_base, b_index):
    a_base = np.ascontiguousarray(a_base)
    b_base = np.ascontiguousarray(b_base)
    a = a_base[a_index]
    b = b_base.T if isinstance(b_index, str) else b_base[b_index]
    out = np.full((a.shape[0], b.shape[1]), np.nan)
    arguments = column_major_arguments(a, b, out)
    flat_out = out.reshape(-1)
    _cublas_gemm(*arguments, _flat_view(b_base, b), _flat_view(a_base, a), flat_out)
    np.testing.assert_allclose(out, a @ b, rtol=1e-12)


def test_a_view_without_contiguous_rows_or_columns_is_refused():
    x = np.zeros((4, 6))[::2, ::2]
    with pytest.raises(ValueError, match="a needs contiguous rows or columns"):
        column_major_arguments(x, np.zeros((3, 2)), np.zeros((2, 2)))


def test_mixed_dtypes_and_broadcast_views_are_refused():
    a, b, out = np.zeros((2, 3)), np.zeros((3, 4)), np.zeros((2, 4))
    with pytest.raises(TypeError, match="one dtype, float32 or float64, got float64, float32"):
        column_major_arguments(a, b.astype(np.float32), out)
    broadcast = np.broadcast_to(np.zeros((1, 3)), (2, 3))  # row stride 0
    with pytest.raises(ValueError, match=r"a needs positive strides, got \(0, 8\)"):
        column_major_arguments(broadcast, b, out)
