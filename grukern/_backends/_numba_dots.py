"""Products by dot products with the rows of w as stored (no packing): `dot`, and `dots`, the
recurrent product of the unit split, out = a @ wᵀ for a few rows of a.

A thread of the unit split (_numba_loops' _units loops) multiplies the few running rows' states
a (m, p), m ≈ 1 to 8, by its own rows of W_hh at every step. With so few rows, reading those
weights is the cost (at B = 1 each weight is used once per step), so they are read in place,
each row of w once per 4 rows of a, and a packed copy (_numba_matmul's panels) would cost a
pass over the weights per call for nothing.

One row of a takes `dot` per row of w (LLVM's vectorised reduction is as fast there, and it is
the arithmetic of the single-row product of the other loops). Several rows take tiles of
ROWS_OF_A rows of a by 4 rows of w: the vector sums over p stay in registers, each step of p
costing 4 + ROWS_OF_A vector loads for 4·ROWS_OF_A multiply-adds (4 × 4 runs twice as fast as
4 × 2 at H = 512 on AVX-512). The sums are reduced to scalars once per tile (a tree of adds),
and the last p % lanes products added in order.
"""

from __future__ import annotations

import numba

from grukern._backends._simd import VECTOR_BYTES, fma, load, total, vector_lanes, zeros

_JIT = {"cache": True, "error_model": "numpy", "fastmath": {"contract"}, "nogil": True}

# Rows of a per tile: 4 (16 vector sums, 21 registers with the loaded vectors) where the CPU has
# 32 vector registers (AVX-512), else 2 (8 sums, 13 registers: AVX2 has 16).
ROWS_OF_A = 4 if VECTOR_BYTES == 64 else 2


@numba.njit(**_JIT)
def dots(a, w, w0, n, out, o0):
    """out[i, o0 + j] = a[i] · w[w0 + j] for j < n and every row i of a (m, p); a's and w's
    rows contiguous."""
    m = a.shape[0]
    if m == 1:  # LLVM's vectorised dot products are as fast, and the lean kernel's arithmetic
        for j in range(n):
            out[0, o0 + j] = dot(a[0], w[w0 + j])
        return
    for i in range(0, m, ROWS_OF_A):
        for j in range(0, n, 4):
            _tile(a, i, w, w0 + j, out, o0 + j, min(4, n - j))
    body = a.shape[1] - a.shape[1] % vector_lanes(w)
    if body < a.shape[1]:
        _add_tails(a, w, w0, n, out, o0, body)


@numba.njit(**_JIT)
def _tile(a, i, w, j, out, oj, count):
    """out[i + r, oj + c] = a[i + r] · w[j + c] for r < ROWS_OF_A and c < count (≤ 4); rows of
    a past m and of w past count re-read the last one, and only the first are written. The
    products past the last whole vector are left to _add_tails."""
    m, p = a.shape
    i1, i2, i3 = min(i + 1, m - 1), min(i + 2, m - 1), min(i + 3, m - 1)
    last = j + count - 1
    j1, j2, j3 = min(j + 1, last), min(j + 2, last), min(j + 3, last)
    L = vector_lanes(w)
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zeros(w)
    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = zeros(w)
    body = p - p % L
    for q in range(0, body, L):
        v0, v1, v2, v3 = load(w, j, q), load(w, j1, q), load(w, j2, q), load(w, j3, q)
        x = load(a, i, q)
        s00, s01, s02, s03 = fma(x, v0, s00), fma(x, v1, s01), fma(x, v2, s02), fma(x, v3, s03)
        x = load(a, i1, q)
        s10, s11, s12, s13 = fma(x, v0, s10), fma(x, v1, s11), fma(x, v2, s12), fma(x, v3, s13)
        if ROWS_OF_A == 4:  # a compile-time constant: the other build has no such code
            x = load(a, i2, q)
            s20, s21 = fma(x, v0, s20), fma(x, v1, s21)
            s22, s23 = fma(x, v2, s22), fma(x, v3, s23)
            x = load(a, i3, q)
            s30, s31 = fma(x, v0, s30), fma(x, v1, s31)
            s32, s33 = fma(x, v2, s32), fma(x, v3, s33)
    valid = min(ROWS_OF_A, m - i)  # rows of the tile to write
    _store_totals(out, i, oj, count, s00, s01, s02, s03)
    if valid > 1:
        _store_totals(out, i1, oj, count, s10, s11, s12, s13)
    if valid > 2:
        _store_totals(out, i2, oj, count, s20, s21, s22, s23)
    if valid > 3:
        _store_totals(out, i3, oj, count, s30, s31, s32, s33)


@numba.njit(inline="always", **_JIT)
def _store_totals(out, i, oj, count, s0, s1, s2, s3):
    """out[i, oj + c] = the lanes of s_c added up, for c < count (inlined: a call per tile row
    with the sums as arguments costs more than the tile's multiply-adds at p = 512)."""
    out[i, oj] = total(s0)
    if count > 1:
        out[i, oj + 1] = total(s1)
    if count > 2:
        out[i, oj + 2] = total(s2)
    if count > 3:
        out[i, oj + 3] = total(s3)


@numba.njit(**_JIT)
def _add_tails(a, w, w0, n, out, o0, body):
    """out[i, o0 + j] += a[i] · w[w0 + j] over the columns past body, in order."""
    for i in range(a.shape[0]):
        for j in range(n):
            value = out[i, o0 + j]
            for q in range(body, a.shape[1]):
                value += a[i, q] * w[w0 + j, q]
            out[i, o0 + j] = value


@numba.njit(cache=True, error_model="numpy", fastmath={"contract", "reassoc"}, nogil=True)
def dot(u, v):
    """Σ_q u[q]·v[q] (vectorised: the reassociation that needs is allowed here only)."""
    result = u.dtype.type(0)
    for q in range(u.shape[0]):
        result += u[q] * v[q]
    return result
