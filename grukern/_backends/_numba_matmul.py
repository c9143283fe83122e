"""The recurrent product of the Numba kernels: out = a @ b, b packed into column panels.

At every step the time loops multiply the running rows' states a (m, p) by a recurrent weight
matrix b (p, n) that stays the same for the whole call. So b is packed once per call into
panels of `panel_width` columns, each panel stored contiguously, row after row:

    panels[k, q, c] = b[q, k·width + c]            (zero past column n)

and `matmul` computes out in tiles of TILE_ROWS rows by one panel (TILE_VECTORS vectors of
_simd, as wide as the CPU's registers: 8 × 32 floats in float32 with AVX-512, 6 × 16 with AVX2,
whose 16 registers hold no more): the 2·TILE_ROWS vector sums stay in registers while q runs
over p, and each q costs 2 vector loads of the panel and TILE_ROWS broadcasts of a for
2·TILE_ROWS multiply-adds (the shape of BLIS's sgemm kernels). The rows past the last whole
tile take tiles of 4, 2 and 1 rows, so no row is computed twice. The panel (2 vectors per row
of b) stays in the L1 or L2 cache while every row tile passes over it. In b's own layout the
same reads would be n floats apart; at n = 768 that is 3 kB, and they fall into a few cache
sets and evict each other. It needs no packing per step, where BLAS packs both operands at
every call, so it beats a BLAS call on the few rows of a step (benchmarks/test_matmul.py times
it against OpenBLAS).

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

# 8 rows (16 sums, 19 registers with the loaded vectors) where the CPU has 32 vector registers
# (AVX-512), else 6 (15 of AVX2's 16).
TILE_ROWS = 8 if VECTOR_BYTES == 64 else 6
TILE_VECTORS = 2

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
    m = a.shape[0]
    width = TILE_VECTORS * vector_lanes(out)
    whole = m - m % TILE_ROWS  # rows in whole tiles
    n_panels = panels.shape[0]
    for step in range(n_panels):
        k = n_panels - 1 - step if backwards else step
        panel, j = panels[k], k * width
        for i in range(0, whole, TILE_ROWS):
            _tile(a, panel, i, out, j)
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
    where matmul's one-row tile takes one: 8 vector sums in registers, 8 loads and one
    broadcast per 8 multiply-adds. The last four first if backwards (as matmul)."""
    n_panels = panels.shape[0]
    n_groups = -(-n_panels // 4)
    for step in range(n_groups):
        k = 4 * (n_groups - 1 - step if backwards else step)
        _row_tile(u, panels, k, min(4, n_panels - k), out)


@numba.njit(**_JIT)
def _row_tile(u, panels, k, count, out):
    """out[0, columns of panels k .. k + count - 1] (count ≤ 4; panels past it re-read the
    last one, and only the first count are stored)."""
    L = vector_lanes(out)
    width = panels.shape[2]
    last = k + count - 1
    k1, k2, k3 = min(k + 1, last), min(k + 2, last), min(k + 3, last)
    p0, p1, p2, p3 = panels[k], panels[k1], panels[k2], panels[k3]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = zeros(out)
    for q in range(u.shape[1]):
        x = splat(u[0, q])
        s0, s1 = fma(x, load(p0, q, 0), s0), fma(x, load(p0, q, L), s1)
        s2, s3 = fma(x, load(p1, q, 0), s2), fma(x, load(p1, q, L), s3)
        s4, s5 = fma(x, load(p2, q, 0), s4), fma(x, load(p2, q, L), s5)
        s6, s7 = fma(x, load(p3, q, 0), s6), fma(x, load(p3, q, L), s7)
    _store_row(out, 0, k * width, s0, s1)
    if count > 1:
        _store_row(out, 0, k1 * width, s2, s3)
    if count > 2:
        _store_row(out, 0, k2 * width, s4, s5)
    if count > 3:
        _store_row(out, 0, k3 * width, s6, s7)


def _make_tile(rows: int):
    """The tile of `rows` rows (≤ 8; a constant of the compiled code, so the unused sums and
    rows are not compiled), inlined into matmul: called, its three arrays passed on the stack
    and their reference counts cost 2-4% of the product (1 thread, GFLOP/s called / inlined:
    16 x 128 @ 128 x 384 234 / 239, 32 x 512 @ 512 x 1536 251 / 256, 128 x 256 @ 256 x 768
    243 / 252)."""

    @numba.njit(inline="always", **_JIT)
    def tile(a, panel, i, out, j):
        """out[i : i + rows, j : j + 2·lanes] = a[i : i + rows] @ panel."""
        a0 = a[i]
        a1 = a[i + 1] if rows > 1 else a0
        a2 = a[i + 2] if rows > 2 else a0
        a3 = a[i + 3] if rows > 3 else a0
        a4 = a[i + 4] if rows > 4 else a0
        a5 = a[i + 5] if rows > 5 else a0
        a6 = a[i + 6] if rows > 6 else a0
        a7 = a[i + 7] if rows > 7 else a0
        L = vector_lanes(out)
        s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = zeros(out)
        s40 = s41 = s50 = s51 = s60 = s61 = s70 = s71 = zeros(out)
        for q in range(a.shape[1]):
            b0 = load(panel, q, 0)  # b[q, j : j + L]
            b1 = load(panel, q, L)  # b[q, j + L : j + 2L]
            s00, s01 = _multiply_add(a0[q], b0, b1, s00, s01)
            if rows > 1:
                s10, s11 = _multiply_add(a1[q], b0, b1, s10, s11)
            if rows > 2:
                s20, s21 = _multiply_add(a2[q], b0, b1, s20, s21)
            if rows > 3:
                s30, s31 = _multiply_add(a3[q], b0, b1, s30, s31)
            if rows > 4:
                s40, s41 = _multiply_add(a4[q], b0, b1, s40, s41)
            if rows > 5:
                s50, s51 = _multiply_add(a5[q], b0, b1, s50, s51)
            if rows > 6:
                s60, s61 = _multiply_add(a6[q], b0, b1, s60, s61)
            if rows > 7:
                s70, s71 = _multiply_add(a7[q], b0, b1, s70, s71)
        _store_row(out, i, j, s00, s01)
        if rows > 1:
            _store_row(out, i + 1, j, s10, s11)
        if rows > 2:
            _store_row(out, i + 2, j, s20, s21)
        if rows > 3:
            _store_row(out, i + 3, j, s30, s31)
        if rows > 4:
            _store_row(out, i + 4, j, s40, s41)
        if rows > 5:
            _store_row(out, i + 5, j, s50, s51)
        if rows > 6:
            _store_row(out, i + 6, j, s60, s61)
        if rows > 7:
            _store_row(out, i + 7, j, s70, s71)

    return tile


@numba.njit(inline="always", **_JIT)
def _multiply_add(a_q, b0, b1, s0, s1):
    """(s0 + a_q·b0, s1 + a_q·b1): one row's step of a tile (inlined: the sums stay in
    registers)."""
    x = splat(a_q)
    return fma(x, b0, s0), fma(x, b1, s1)


_tile = _make_tile(TILE_ROWS)
_tile_4 = _make_tile(4)
_tile_2 = _make_tile(2)
_tile_1 = _make_tile(1)


@numba.njit(**_JIT)
def _store_row(out, i, j, v0, v1):
    """out[i, j : j + 2·lanes] = [v0 | v1], cut at the last column."""
    L = vector_lanes(out)
    n = out.shape[1]
    if j + 2 * L <= n:
        store(out, i, j, v0)
        store(out, i, j + L, v1)
        return
    for c in range(min(L, n - j)):
        out[i, j + c] = lane(v0, c)
    for c in range(min(L, n - j - L)):
        out[i, j + L + c] = lane(v1, c)
