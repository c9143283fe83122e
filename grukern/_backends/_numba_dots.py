"""The recurrent product of the unit split: out = a @ wᵀ for a few rows of a, by dot products
with the rows of w as stored (no packing).

A thread of the unit split (_numba_loops.forward_units_loop) multiplies the few running rows'
states a (m, p), m ≈ 1 to 8, by its own rows of W_hh at every step. With so few rows, reading
those weights is the cost (at B = 1 each weight is used once per step), so they are read in
place, each row of w once per pair of rows of a, and a packed copy (_numba_matmul's panels)
would cost a pass over the weights per call for nothing.

A tile is 4 rows of w by 2 rows of a (1 when a has one row): its 8 vector sums over p stay in
registers (13 registers with the loaded vectors, so AVX2's 16 hold it), each step of p costing
4 + 2 vector loads for 8 multiply-adds. The sums are reduced to scalars once per tile (a tree
of adds, so the bits differ from _numba_rows.dot's), and the last p % lanes products added in
order. Rows of a past m re-read the last row and write its results again, with the same values.
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
    if m == 1:
        j = 0
        while j + 4 <= n:
            _tile_one_row(a, w, w0 + j, out, o0 + j, 4)
            j += 4
        for r in range(j, n):  # the last n % 4 rows of w, one by one
            _tile_one_row(a, w, w0 + r, out, o0 + r, 1)
        return
    for i in range(0, m, 4):
        j = 0
        while j + 2 <= n:
            _tile(a, i, w, w0 + j, out, o0 + j, 2)
            j += 2
        if j < n:
            _tile(a, i, w, w0 + j, out, o0 + j, 1)


@numba.njit(**_JIT)
def _tile_one_row(a, w, j, out, oj, count):
    """out[0, oj + c] = a[0] · w[j + c] for c < count (4, or 1 repeated: the rows past it
    re-read its row). Indices, not row views: a view costs a reference count per tile."""
    p = a.shape[1]
    last = j + count - 1
    j1, j2, j3 = min(j + 1, last), min(j + 2, last), min(j + 3, last)
    L = vector_lanes(w)
    s0 = s1 = s2 = s3 = zeros(w)
    body = p - p % L
    for q in range(0, body, L):
        x = load(a, 0, q)
        s0, s1 = fma(x, load(w, j, q), s0), fma(x, load(w, j1, q), s1)
        s2, s3 = fma(x, load(w, j2, q), s2), fma(x, load(w, j3, q), s3)
    out[0, oj] = _finish(s0, a, 0, w, j, body)
    if count > 1:
        out[0, oj + 1] = _finish(s1, a, 0, w, j1, body)
        out[0, oj + 2] = _finish(s2, a, 0, w, j2, body)
        out[0, oj + 3] = _finish(s3, a, 0, w, j3, body)


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
