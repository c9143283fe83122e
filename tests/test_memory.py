"""Reuse of large host buffers (grukern._memory): a buffer returns only when no array can reach
it, is handed out again for the same byte size, and the kernels' results do not depend on
what a reused buffer held before."""

import gc

import numpy as np
import pytest

import grukern
from grukern import _memory


@pytest.fixture(autouse=True)
def fresh_cache():
    """Each test starts with an empty cache and the default limit, and leaves it so."""
    limit = grukern.buffer_cache_limit()
    grukern.set_buffer_cache_limit(0)
    grukern.set_buffer_cache_limit(limit)
    yield
    grukern.set_buffer_cache_limit(0)
    grukern.set_buffer_cache_limit(limit)


def _large(dtype=np.float32):
    return _memory.empty((512, 1024), dtype)  # 2 MiB in float32


def test_empty_gives_a_writable_c_array_of_the_shape_and_dtype():
    for dtype in (np.float32, np.float64, np.int64):
        a = _memory.empty((3, 512, 700), dtype)
        assert a.shape == (3, 512, 700) and a.dtype == dtype
        assert a.flags.c_contiguous and a.flags.writeable and a.flags.aligned
        a[...] = 7
        assert (a == 7).all()
    small = _memory.empty((4, 5), np.float32)
    assert small.base is None  # below MIN_BYTES: plain np.empty


def test_a_buffer_returns_when_its_last_view_is_gone_and_is_reused():
    a = _large()
    address = a.ctypes.data
    view = a[100:200]
    del a
    assert _memory._held == 0 and not _memory._returned  # the view still reaches it
    del view
    again = _memory.empty((1024, 512), np.float32)  # the same byte size, another shape
    assert again.ctypes.data == address
    other = _memory.empty((512, 1025), np.float32)  # another size: a new buffer
    assert other.ctypes.data != address


def test_a_buffer_held_in_a_reference_cycle_returns_after_collection():
    holder = {"array": _large()}
    holder["self"] = holder
    address = holder["array"].ctypes.data
    del holder
    gc.collect()
    assert _large().ctypes.data == address


def test_the_limit_bounds_what_is_kept_and_zero_turns_reuse_off():
    grukern.set_buffer_cache_limit(3 << 20)  # room for one 2 MiB buffer
    first, second = _large(), _large()
    del first, second
    grukern.set_buffer_cache_limit(3 << 20)  # takes in what came back, within the limit
    assert _memory._held == 2 << 20 and len(_memory._kept) == 1
    grukern.set_buffer_cache_limit(0)
    assert _memory._held == 0 and not _memory._kept
    a = _large()
    del a
    grukern.set_buffer_cache_limit(0)
    assert _memory._held == 0 and not _memory._kept


@pytest.mark.parametrize("nbytes", [-1, 1.5, True, "1"])
def test_a_bad_limit_is_refused_with_its_value(nbytes):
    with pytest.raises(ValueError, match=r"nbytes must be an int >= 0, got"):
        grukern.set_buffer_cache_limit(nbytes)


def test_results_do_not_depend_on_what_reused_buffers_held(rng):
    """Train twice on different inputs with reuse on: the second step's results equal those
    computed with reuse off (so every reused element was written)."""
    gru = grukern.GRU(32, 64, 2, bidirectional=True, backend="numba", seed=0)
    T, B = 40, 64  # tapes of several MiB: they take the reused path
    lengths = rng.integers(1, T + 1, size=B)

    def step(x, dy):
        y, h_n, tape = gru.forward_train(x, lengths=lengths)
        grads = gru.backward(tape, dy=dy)
        return [y, h_n, grads.x, grads.h0, *(a for p in grads.params for a in p.arrays())]

    def inputs():
        return (
            rng.standard_normal((T, B, 32)).astype(np.float32),
            rng.standard_normal((T, B, 128)).astype(np.float32),
        )

    first, second = inputs(), inputs()
    step(*first)  # its buffers return to the cache
    assert _memory._returned or _memory._held > 0
    reused = step(*second)
    grukern.set_buffer_cache_limit(0)
    fresh = step(*second)
    for a, b in zip(reused, fresh, strict=True):
        np.testing.assert_array_equal(a, b)


def test_buffer_cache_bytes_counts_what_the_cache_holds():
    assert grukern.buffer_cache_bytes() == 0
    a = _large()
    nbytes = a.nbytes
    del a
    gc.collect()
    assert grukern.buffer_cache_bytes() == nbytes  # returned, held for reuse
    b = _large()
    assert grukern.buffer_cache_bytes() == 0  # lent out again
    del b
