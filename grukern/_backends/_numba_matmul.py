"""The recurrent product of the Numba kernels: out = a @ b, b packed into column panels.

At every step the time loops multiply the running rows' states a (m, p) by a recurrent weight
matrix b (p, n) that stays the same for the whole call. So b is packed once per call into
panels of `panel_width` columns, each panel stored contiguously, row after row:

    panels[k, q, c] = b[q, k·width + c]            (zero past column n)

and `matmul` computes out in tiles of TILE_ROWS rows by one panel (TILE_VECTORS vectors of
_simd, as wide as the CPU's registers: 8 × 48 floats in float32 with AVX-512, 6 × 16 with AVX2,
whose 16 registers hold no more): the TILE_VECTORS·TILE_ROWS vector sums stay in registers
while q runs over p, and each q costs TILE_VECTORS vector loads of the panel and TILE_ROWS
broadcasts of a for TILE_VECTORS·TILE_ROWS multiply-adds (the shape of BLIS's sgemm kernels).
The rows past the last whole tile take tiles of 4, 2 and 1 rows, so no row is computed twice.
The panel (TILE_VECTORS vectors per row of b) stays in the L1 or L2 cache while every row tile
passes over it. In b's own layout the same reads would be n floats apart; at n = 768 that is
3 kB, and they fall into a few cache sets and evict each other. It needs no packing per step,
where BLAS packs both operands at every call, so it beats a BLAS call on the few rows of a step
(benchmarks/test_matmul.py times it against OpenBLAS).

Each element of out is a sum over q in order, one multiply-add at a time, so the result does
not depend on the tiling. The last panel is stored lane by lane up to column n.
"""

from __future__ import annotations

import numba
import numpy as np

from grukern._backends._simd import (
    VECTOR_BYTES,
    fma,
    lane,
    lanes,
    load,
    splat,
    store,
    transpose_into,
    vector_lanes,
    zeros,
)

# 8 rows by 3 vectors (24 sums, 28 registers with the loaded vectors) where the CPU has 32
# vector registers (AVX-512), else 6 rows by 2 (12 sums, 15 of AVX2's 16). On AVX-512, 8 by 2
# ran at 93% of the cores' multiply-add peak, 8 by 3 at 99.6% (2 threads, each 100 products
# 32 x 512 @ 512 x 1536: 232 -> 248 GFLOP/s per thread; peak measured 249).
TILE_ROWS = 8 if VECTOR_BYTES == 64 else 6
TILE_VECTORS = 3 if VECTOR_BYTES == 64 else 2

_JIT = {"cache": True, "error_model": "numpy", "fastmath": {"contract"}, "nogil": True}


def panel_width(dtype) -> int:
    """Columns per panel: TILE_VECTORS vectors."""
    return TILE_VECTORS * lanes(dtype)


def pack(w: np.ndarray, transposed: bool, empty=np.empty) -> np.ndarray:
    """The panels of b = wᵀ (transposed) or b = w, b (p, n), for matmul: an array
    (⌈n / width⌉, p, width), zero past column n, from empty(shape, dtype)."""
    p, n = w.shape[::-1] if transposed else w.shape
    width = panel_width(w.dtype)
    panels = empty((-(-n // width), p, width), w.dtype)
    _pack(w, transposed, panels)
    return panels


def transposed(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """a[rows].T as a new C-contiguous array, for a C-contiguous float array a (n, p) and rows
    (m,) int64: a lanes x lanes block at a time (_pack_rows), where NumPy's transposing copy
    moves one element at a time (params.keras_columns of float32 (3H, k): (384, 128) 19 -> 6
    us, (384, 512) 248 -> 18 us, (1536, 512) 1037 -> 370 us)."""
    out = np.empty((a.shape[1], rows.shape[0]), dtype=a.dtype)
    _pack_rows(a, rows, out)
    return out


@numba.njit(**_JIT)
def _pack(w, transposed, panels):
    """Fills panels (see pack), each loop reading w along its rows."""
    n_panels, p, width = panels.shape
    n = w.shape[0] if transposed else w.shape[1]
    panels[n_panels - 1] = 0  # the last panel's columns past n stay zero
    rows = np.empty(width, dtype=np.int64)
    for k in range(n_panels):
        panel = panels[k]
        j = k * width  # the panel's first column of b
        columns = min(width, n - j)
        if transposed:  # column j + c of b = wᵀ is row j + c of w
            for c in range(columns):
                rows[c] = j + c
            _pack_rows(w, rows[:columns], panel)
        else:  # row q of the panel is part of row q of b = w
            for q in range(p):
                row, panel_row = w[q], panel[q]
                for c in range(columns):
                    panel_row[c] = row[j + c]


@numba.njit(**_JIT)
def pack_units(w, H, u0, n, n_gates, panels):
    """Fills panels with those of b = the unit split part's rows of w, transposed: column
    g·n + j of b is row g·H + u0 + j of w (gate g of unit u0 + j, the part's layout of
    _numba_rows.unit_times), for n_gates gates; panels (⌈n_gates·n / width⌉, p, width), laid
    out as pack(..., True) lays out b's, zero past column n_gates·n."""
    n_panels, _, width = panels.shape
    columns = n_gates * n
    panels[n_panels - 1] = 0
    rows = np.empty(width, dtype=np.int64)
    for k in range(n_panels):
        count = min(width, columns - k * width)
        for c in range(count):
            g, j = divmod(k * width + c, n)
            rows[c] = g * H + u0 + j
        _pack_rows(w, rows[:count], panels[k])


@numba.njit(**_JIT)
def _pack_rows(w, rows, panel):
    """panel[q, c] = w[rows[c], q] for every c < len(rows) and q: rows of w as the columns of
    a panel (p, width), a lanes × lanes block at a time (_simd.transpose_into), element by
    element where a block is not whole."""
    lanes = vector_lanes(panel)
    p = panel.shape[0]
    whole = p - p % lanes  # q in whole blocks
    for c0 in range(0, rows.shape[0], lanes):
        if c0 + lanes <= rows.shape[0]:
            block = rows[c0 : c0 + lanes]
            for q in range(0, whole, lanes):
                transpose_into(w, block, q, panel, q, c0)
            first_single = whole
        else:
            first_single = 0
        for c in range(c0, min(c0 + lanes, rows.shape[0])):
            row = w[rows[c]]
            for q in range(first_single, p):
                panel[q, c] = row[q]


@numba.njit(**_JIT)
def matmul(a, panels, out, backwards):
    """out = a @ b for a (m, p) and out (m, n) with contiguous rows, panels = pack(...) of b;
    the last panel first if backwards.

    The loops alternate the direction step by step: panels read last in one step are read
    first in the next, while they are still in the core's L2 cache (where the panels exceed
    it, a pass in one direction finds none of them there). The bits are the same either way."""
    lanes = vector_lanes(out)
    m, n, width = a.shape[0], out.shape[1], TILE_VECTORS * lanes
    whole = m - m % TILE_ROWS  # rows in whole tiles
    n_panels = panels.shape[0]
    for step in range(n_panels):
        k = n_panels - 1 - step if backwards else step
        panel, j = panels[k], k * width
        # A last panel whose columns past n fill whole vectors takes whole tiles of fewer
        # vectors: where n is not a multiple of the width (the backward's n = H), full tiles
        # computed up to two thirds of such a panel for nothing (G5 training 81 -> 78 ms).
        vectors = min(TILE_VECTORS, -(-(n - j) // lanes))
        for i in range(0, whole, TILE_ROWS):
            if vectors == TILE_VECTORS:
                _tile(a, panel, i, out, j)
            elif vectors == 2:
                _tile_2_vectors(a, panel, i, out, j)
            else:
                _tile_1_vector(a, panel, i, out, j)
        i = whole
        if m - i >= 4:
            _tile_4(a, panel, i, out, j)
            i += 4
        if m - i >= 2:
            _tile_2(a, panel, i, out, j)
            i += 2
        if m - i == 1:
            _tile_1(a, panel, i, out, j)


@numba.njit(**_JIT)
def row_matmul(u, panels, out, backwards):
    """out[0] = u[0] @ b for a single row u (1, p), panels = pack(...) of b: matmul's sums (each
    element a multiply-add chain over q in order, so the same bits), four panels at a time
    where matmul's one-row tile takes one: up to 4·TILE_VECTORS vector sums in registers and
    one broadcast per 4·TILE_VECTORS multiply-adds. The last four first if backwards (as
    matmul)."""
    n_panels = panels.shape[0]
    n_groups = -(-n_panels // 4)
    for step in range(n_groups):
        k = 4 * (n_groups - 1 - step if backwards else step)
        count = min(4, n_panels - k)
        if count == 4:
            _row_tile_4(u, panels, k, out)
        elif count == 3:
            _row_tile_3(u, panels, k, out)
        elif count == 2:
            _row_tile_2(u, panels, k, out)
        else:
            _row_tile_1(u, panels, k, out)


def _make_row_tile(count: int):
    """row_matmul's tile of `count` panels (≤ 4; a constant of the compiled code, as the rows
    of matmul's tiles are). One tile of four for every count, re-reading its last panel, did
    twice the work at G1 (3H = 96: two panels of 48 columns; forward 230 -> 177 us)."""

    @numba.njit(**_JIT)
    def row_tile(u, panels, k, out):
        """out[0, columns of panels k .. k + count - 1]."""
        width = panels.shape[2]
        p0 = panels[k]
        p1 = panels[k + 1] if count > 1 else p0
        p2 = panels[k + 2] if count > 2 else p0
        p3 = panels[k + 3] if count > 3 else p0
        zero = zeros(out)
        s0 = s1 = s2 = s3 = (zero, zero, zero)  # each panel's sums
        for q in range(u.shape[1]):
            u_q = u[0, q]
            s0 = _multiply_add(u_q, _panel_row(p0, q, TILE_VECTORS), s0, TILE_VECTORS)
            if count > 1:
                s1 = _multiply_add(u_q, _panel_row(p1, q, TILE_VECTORS), s1, TILE_VECTORS)
            if count > 2:
                s2 = _multiply_add(u_q, _panel_row(p2, q, TILE_VECTORS), s2, TILE_VECTORS)
            if count > 3:
                s3 = _multiply_add(u_q, _panel_row(p3, q, TILE_VECTORS), s3, TILE_VECTORS)
        _store_row(out, 0, k * width, s0, TILE_VECTORS)
        if count > 1:
            _store_row(out, 0, (k + 1) * width, s1, TILE_VECTORS)
        if count > 2:
            _store_row(out, 0, (k + 2) * width, s2, TILE_VECTORS)
        if count > 3:
            _store_row(out, 0, (k + 3) * width, s3, TILE_VECTORS)

    return row_tile


_row_tile_4 = _make_row_tile(4)
_row_tile_3 = _make_row_tile(3)
_row_tile_2 = _make_row_tile(2)
_row_tile_1 = _make_row_tile(1)


def _make_tile(rows: int, vectors: int):
    """The tile of `rows` rows (≤ 8) by `vectors` vectors of a panel (both constants of the
    compiled code, so the unused sums, rows and vectors are not compiled), inlined into
    matmul: called, its three arrays passed on the stack and their reference counts cost 2-4%
    of the product (1 thread, GFLOP/s called / inlined: 16 x 128 @ 128 x 384 234 / 239,
    32 x 512 @ 512 x 1536 251 / 256, 128 x 256 @ 256 x 768 243 / 252)."""

    @numba.njit(inline="always", **_JIT)
    def tile(a, panel, i, out, j):
        """out[i : i + rows, j : j + vectors·lanes] = a[i : i + rows] @ panel's columns."""
        a0 = a[i]
        a1 = a[i + 1] if rows > 1 else a0
        a2 = a[i + 2] if rows > 2 else a0
        a3 = a[i + 3] if rows > 3 else a0
        a4 = a[i + 4] if rows > 4 else a0
        a5 = a[i + 5] if rows > 5 else a0
        a6 = a[i + 6] if rows > 6 else a0
        a7 = a[i + 7] if rows > 7 else a0
        zero = zeros(out)
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = (zero, zero, zero)  # each row's sums
        for q in range(a.shape[1]):
            b = _panel_row(panel, q, vectors)
            s0 = _multiply_add(a0[q], b, s0, vectors)
            if rows > 1:
                s1 = _multiply_add(a1[q], b, s1, vectors)
            if rows > 2:
                s2 = _multiply_add(a2[q], b, s2, vectors)
            if rows > 3:
                s3 = _multiply_add(a3[q], b, s3, vectors)
            if rows > 4:
                s4 = _multiply_add(a4[q], b, s4, vectors)
            if rows > 5:
                s5 = _multiply_add(a5[q], b, s5, vectors)
            if rows > 6:
                s6 = _multiply_add(a6[q], b, s6, vectors)
            if rows > 7:
                s7 = _multiply_add(a7[q], b, s7, vectors)
        _store_row(out, i, j, s0, vectors)
        if rows > 1:
            _store_row(out, i + 1, j, s1, vectors)
        if rows > 2:
            _store_row(out, i + 2, j, s2, vectors)
        if rows > 3:
            _store_row(out, i + 3, j, s3, vectors)
        if rows > 4:
            _store_row(out, i + 4, j, s4, vectors)
        if rows > 5:
            _store_row(out, i + 5, j, s5, vectors)
        if rows > 6:
            _store_row(out, i + 6, j, s6, vectors)
        if rows > 7:
            _store_row(out, i + 7, j, s7, vectors)

    return tile


# A row's sums, and a panel's row, are 3-tuples of vectors, of which the first `vectors` (a
# constant where the tiles inline these) are loaded, added to and stored; the branches on it
# are compiled away.


@numba.njit(inline="always", **_JIT)
def _panel_row(panel, q, vectors):
    """b[q] over the panel's first `vectors` vectors of columns (the rest repeat the first)."""
    L = vector_lanes(panel)
    b0 = load(panel, q, 0)
    b1 = load(panel, q, L) if vectors > 1 else b0
    return b0, b1, load(panel, q, 2 * L) if vectors > 2 else b0


@numba.njit(inline="always", **_JIT)
def _multiply_add(a_q, b, s, vectors):
    """s + a_q·b over the first `vectors` vectors, one row's step of a tile (inlined: the sums
    stay in registers)."""
    x = splat(a_q)
    s1 = fma(x, b[1], s[1]) if vectors > 1 else s[1]
    return fma(x, b[0], s[0]), s1, fma(x, b[2], s[2]) if vectors > 2 else s[2]


_tile = _make_tile(TILE_ROWS, TILE_VECTORS)
_tile_2_vectors = _make_tile(TILE_ROWS, 2)
_tile_1_vector = _make_tile(TILE_ROWS, 1)
_tile_4 = _make_tile(4, TILE_VECTORS)  # the rows past the last whole tile
_tile_2 = _make_tile(2, TILE_VECTORS)
_tile_1 = _make_tile(1, TILE_VECTORS)


@numba.njit(**_JIT)
def _store_row(out, i, j, s, vectors):
    """out[i, j : j + vectors·lanes] = the row's first `vectors` sums, cut at the last column."""
    L = vector_lanes(out)
    n = out.shape[1]
    if j + vectors * L <= n:
        store(out, i, j, s[0])
        if vectors > 1:
            store(out, i, j + L, s[1])
        if vectors > 2:
            store(out, i, j + 2 * L, s[2])
        return
    for v in range(vectors):
        for c in range(min(L, n - j - v * L)):
            out[i, j + v * L + c] = lane(s[v], c)
