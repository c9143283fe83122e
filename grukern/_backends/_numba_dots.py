"""Products by dot products with the rows of w as stored (no packing): `dot`, and `dots`, the
recurrent product of the unit split, out = a @ wᵀ for a few rows of a.

A thread of the unit split (_numba_loops' _units loops) multiplies the few running rows' states
a (m, p), m ≈ 1 to 8, by its own rows of W_hh at every step. With so few rows, reading those
weights is the cost (at B = 1 each weight is used once per step), so they are read in place,
each row of w once per 4 rows of a, and a packed copy (_numba_matmul's panels) would cost a
pass over the weights per call for nothing.

One row of a takes `dot` per row of w (LLVM's vectorised reduction is as fast there, and it is
the arithmetic of the single-row product of the other loops). Several rows take tiles of 4 rows
of a by 2 rows of w: the 8 vector sums over p stay in registers (13 registers with the loaded
vectors, so AVX2's 16 hold it), each step of p costing 2 + 4 vector loads for 8 multiply-adds,
the rows of w read once for the 4 rows of a. The sums are reduced to scalars once per tile (a
tree of adds), and the last p % lanes products added in order. Rows of a past m re-read the last
row and write its results again, with the same values.
"""

from __future__ import annotations

import numba

from grukern._backends._simd import fma, load, total, vector_lanes, zeros

_JIT = {"cache": True, "error_model": "numpy", "fastmath": {"contract"}, "nogil": True}


@numba.njit(**_JIT)
def dots(a, w, w0, n, out, o0):
    """out[i, o0 + j] = a[i] · w[w0 + j] for j < n and every row i of a (m, p); a's and w's
    rows contiguous."""
    m = a.shape[0]
    if m == 1:  # LLVM's vectorised dot products are as fast, and the lean kernel's arithmetic
        for j in range(n):
            out[0, o0 + j] = dot(a[0], w[w0 + j])
        return
    for i in range(0, m, 4):
        j = 0
        while j + 2 <= n:
            _tile(a, i, w, w0 + j, out, o0 + j, 2)
            j += 2
        if j < n:
            _tile(a, i, w, w0 + j, out, o0 + j, 1)


@numba.njit(**_JIT)
def _tile(a, i, w, j, out, oj, count):
    """out[i : i + 4, oj + c] = a[i : i + 4] · w[j + c] for c < count (2, or 1 repeated);
    rows of a past m re-read the last row and write its results again."""
    m, p = a.shape
    i1, i2, i3 = min(i + 1, m - 1), min(i + 2, m - 1), min(i + 3, m - 1)
    j1 = j + count - 1
    L = vector_lanes(w)
    s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = zeros(w)
    body = p - p % L
    for q in range(0, body, L):
        v0, v1 = load(w, j, q), load(w, j1, q)
        x = load(a, i, q)
        s00, s01 = fma(x, v0, s00), fma(x, v1, s01)
        x = load(a, i1, q)
        s10, s11 = fma(x, v0, s10), fma(x, v1, s11)
        x = load(a, i2, q)
        s20, s21 = fma(x, v0, s20), fma(x, v1, s21)
        x = load(a, i3, q)
        s30, s31 = fma(x, v0, s30), fma(x, v1, s31)
    for r, row, s_0, s_1 in (
        (0, i, s00, s01),
        (1, i1, s10, s11),
        (2, i2, s20, s21),
        (3, i3, s30, s31),
    ):
        if i + r < m:
            out[row, oj] = _finish(s_0, a, row, w, j, body)
            if count > 1:
                out[row, oj + 1] = _finish(s_1, a, row, w, j1, body)


@numba.njit(**_JIT)
def _finish(vector_sum, a, i, w, j, body):
    """The lanes of vector_sum added up, plus a[i] · w[j] past column body, in order."""
    value = total(vector_sum)
    for q in range(body, a.shape[1]):
        value += a[i, q] * w[j, q]
    return value


@numba.njit(cache=True, error_model="numpy", fastmath={"contract", "reassoc"}, nogil=True)
def dot(u, v):
    """Σ_q u[q]·v[q] (vectorised: the reassociation that needs is allowed here only)."""
    result = u.dtype.type(0)
    for q in range(u.shape[0]):
        result += u[q] * v[q]
    return result
