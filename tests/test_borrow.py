"""_borrow: views without reference counting are the same memory, and a kept-alive local array
stays valid for them (the loops' scratch buffers rely on both)."""

import numba
import numpy as np

from grukern._backends._borrow import borrowed, keep_alive


@numba.njit
def _write_through(a, group):
    view = borrowed(a)
    view[1, 2] = 7.0
    b, scale, c = borrowed(group)  # arrays borrowed, other items as they are
    b[0] = scale * c[0]
    return view[0, 0] + b[1]


def test_borrowed_views_are_the_arrays_memory():
    a = np.arange(12.0).reshape(3, 4)
    b, c = np.zeros(2), np.array([3.0])
    b[1] = 5.0
    assert _write_through(a, (b, 2.0, c)) == 0.0 + 5.0
    assert a[1, 2] == 7.0 and b[0] == 6.0


@numba.njit
def _fill_local(n):
    buffers = (np.empty(n), np.empty(n, dtype=np.int64))
    values, indices = borrowed(buffers)
    for i in range(n):
        values[i] = 0.5 * i
        indices[i] = i
    other = np.full(n, -1.0)  # an allocation that must not reuse the buffers' memory
    total = 0.0
    for i in range(n):
        total += values[indices[i]] + other[i]
    keep_alive(buffers)
    return total


def test_a_kept_alive_local_buffer_stays_valid():
    n = 1000
    assert _fill_local(n) == sum(0.5 * i - 1.0 for i in range(n))
