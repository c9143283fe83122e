"""The register-tiled products of the recurrent loops against NumPy: _numba_matmul at every
remainder of its row tiles and of its panels (and its one-row kernel against its tile),
_numba_dots (the unit split's) at every remainder of its tiles and of a vector, for every vector
width (_simd.VECTOR_BYTES: panels of 8 to 48 float32 or 4 to 24 float64 columns)."""

import numpy as np
import pytest

from grukern._backends._numba_dots import dots
from grukern._backends._numba_matmul import (
    TILE_ROWS,
    matmul,
    pack,
    pack_units,
    panel_width,
    row_matmul,
)

DTYPES = [np.float32, np.float64]
# (m, p, n): one row, rows at each remainder of either TILE_ROWS (6 and 8), one term,
# columns below, at, and past one and two panels of either dtype, and up to four and five
# panels (row_matmul's groups of four, whole and not) at the widest.
SHAPES = [
    (1, 1, 1),
    (1, 5, 40),
    (2, 3, 7),
    (5, 33, 8),
    (6, 16, 16),
    (7, 2, 17),
    (11, 40, 33),
    (13, 64, 48),
    (3, 9, 65),
    (8, 12, 97),
    (4, 7, 30),
    (12, 20, 33),
    (15, 3, 9),
    (1, 6, 190),
    (2, 4, 200),
]


def _integer_valued(rng, shape, dtype):
    """Small integers as floats: every product and partial sum is exact, so results must
    equal NumPy's bit for bit whatever the order of the sums."""
    return rng.integers(-4, 5, size=shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("m", "p", "n"), SHAPES)
def test_matmul_matches_numpy_and_writes_only_out(rng, dtype, m, p, n):
    a = _integer_valued(rng, (m, p), dtype)
    b = _integer_valued(rng, (p, n), dtype)
    # out: rows of a larger NaN array, with guard rows and columns that must stay NaN
    frame = np.full((m + 2, n + 3), np.nan, dtype=dtype)
    out = frame[1 : m + 1, :n]
    a_before = a.copy()

    matmul(a, pack(b, transposed=False), out, False)

    np.testing.assert_array_equal(out, a @ b)
    assert np.isnan(frame[0]).all() and np.isnan(frame[m + 1]).all()
    assert np.isnan(frame[:, n:]).all()
    np.testing.assert_array_equal(a, a_before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_transposed_panels_multiply_by_the_transpose(rng, dtype):
    a = _integer_valued(rng, (9, 21), dtype)
    w = _integer_valued(rng, (35, 21), dtype)  # out = a @ wᵀ
    out = np.full((9, 35), np.nan, dtype=dtype)
    matmul(a, pack(w, transposed=True), out, False)
    np.testing.assert_array_equal(out, a @ w.T)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("shape", [(19, 5), (70, 37)])
def test_pack_lays_out_column_panels_padded_with_zeros(rng, dtype, transposed, shape):
    """(70, 37): whole lanes × lanes blocks of the transposed pack, and rows and columns past
    them, at every vector width."""
    w = rng.standard_normal(shape).astype(dtype)
    b = w.T if transposed else w
    p, n = b.shape
    width = panel_width(dtype)

    panels = pack(w, transposed)

    assert panels.shape == (-(-n // width), p, width)
    for k in range(panels.shape[0]):
        columns = b[:, k * width : (k + 1) * width]
        np.testing.assert_array_equal(panels[k, :, : columns.shape[1]], columns)
        np.testing.assert_array_equal(panels[k, :, columns.shape[1] :], 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("n_gates", "u0", "n"), [(3, 16, 16), (2, 0, 7), (3, 32, 13)])
@pytest.mark.parametrize("p", [11, 53])
def test_pack_units_packs_a_parts_rows_as_pack_would(rng, dtype, n_gates, u0, n, p):
    """The unit split's panels: gate g of unit u0 + j (row g·H + u0 + j of w) is column g·n + j,
    and stale values in the buffer are overwritten (p = 53: whole blocks and a remainder)."""
    H = 45
    w = rng.standard_normal((3 * H, p)).astype(dtype)
    rows = np.concatenate([w[g * H + u0 : g * H + u0 + n] for g in range(n_gates)])
    expected = pack(rows, transposed=True)
    panels = np.full(expected.shape, np.nan, dtype=dtype)

    pack_units(w, H, u0, n, n_gates, panels)

    np.testing.assert_array_equal(panels, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_each_row_does_not_depend_on_the_others(rng, dtype):
    """Rows share tiles of several sizes: a row's result is bitwise the same computed alone,
    so the recurrent loops' results do not depend on which other rows are still running."""
    m = 2 * TILE_ROWS + 7  # whole tiles, then tiles of 4, 2 and 1 rows (of 8)
    a = rng.standard_normal((m, 50)).astype(dtype)
    panels = pack(rng.standard_normal((50, 37)).astype(dtype), transposed=False)
    together = np.empty((m, 37), dtype=dtype)
    matmul(a, panels, together, False)
    for i in range(m):
        alone = np.empty((1, 37), dtype=dtype)
        matmul(a[i : i + 1], panels, alone, False)
        np.testing.assert_array_equal(alone[0], together[i])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("m", "p", "n"), SHAPES)
def test_panels_last_first_give_the_same_bits(rng, dtype, m, p, n):
    """backwards only changes the order of the panels, never a sum (not integer-valued here:
    the sums must really match), for several rows and for one."""
    a = rng.standard_normal((m, p)).astype(dtype)
    panels = pack(rng.standard_normal((n, p)).astype(dtype), True)
    forwards, backwards = (np.full((m, n), np.nan, dtype=dtype) for _ in range(2))
    matmul(a, panels, forwards, False)
    matmul(a, panels, backwards, True)
    np.testing.assert_array_equal(backwards, forwards)
    row_matmul(a[:1], panels, forwards[:1], False)
    row_matmul(a[:1], panels, backwards[:1], True)
    np.testing.assert_array_equal(backwards[:1], forwards[:1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("p", "n"), sorted({(p, n) for _, p, n in SHAPES}))
def test_row_matmul_gives_matmuls_bits_for_one_row(rng, dtype, p, n):
    """One row through its own kernel and through matmul's one-row tile: the same sums in the
    same order, so the same bits (not integer-valued here: the order must really match)."""
    a = rng.standard_normal((1, p)).astype(dtype)
    panels = pack(rng.standard_normal((n, p)).astype(dtype), True)
    frame = np.full((3, n + 3), np.nan, dtype=dtype)  # guard rows and columns stay NaN
    row_matmul(a, panels, frame[1:2, :n], False)
    expected = np.empty((1, n), dtype=dtype)
    matmul(a, panels, expected, False)
    np.testing.assert_array_equal(frame[1:2, :n], expected)
    assert np.isnan(frame[[0, 2]]).all() and np.isnan(frame[:, n:]).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("m", "p", "n"), SHAPES)
def test_dots_match_numpy_and_write_only_their_columns(rng, dtype, m, p, n):
    """out[:, o0 : o0 + n] = a @ w[w0 : w0 + n]ᵀ, rows of w taken from the middle of w."""
    a = _integer_valued(rng, (m, p), dtype)
    w = _integer_valued(rng, (n + 5, p), dtype)
    out = np.full((m, n + 3), np.nan, dtype=dtype)
    dots(a, w, 2, n, out, 1)
    np.testing.assert_array_equal(out[:, 1 : n + 1], a @ w[2 : n + 2].T)
    assert np.isnan(out[:, 0]).all() and np.isnan(out[:, n + 1 :]).all()


@pytest.mark.parametrize("vector_bytes", [16, 32, 64])
def test_every_vector_width_on_this_machine(tmp_path, vector_bytes):
    """The tests above with every vector width, whatever this CPU has (LLVM splits a vector the
    hardware lacks), each in a process of its own with a cache of its own."""
    import os
    import pathlib
    import subprocess
    import sys

    from grukern._backends import _simd

    if vector_bytes == _simd.VECTOR_BYTES:
        pytest.skip("the width of this machine: the tests above ran with it")
    root = pathlib.Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "GRUKERN_VECTOR_BYTES": str(vector_bytes),
        "NUMBA_CACHE_DIR": str(tmp_path),
    }
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
         "not every_vector_width"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    width = subprocess.run(
        [sys.executable, "-c", "from grukern._backends import _simd; print(_simd.VECTOR_BYTES)"],
        cwd=root, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert width.strip() == str(vector_bytes)
