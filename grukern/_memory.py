"""Host memory for the large arrays of a call, reused from call to call.

A training step allocates the same large arrays every time: each direction's tape (h, gates,
hn), each layer's output, the gradients. Memory fresh from the operating system costs a page
fault and a page cleared by the kernel at first touch, and glibc asks the system for fresh
memory at every such step: it maps each allocation above 32 MB afresh, and gives the top of
its heap back once 64 MB of it are free. With reuse a training loop takes no page faults after
its first step. (In a process where glibc has already raised its thresholds it saves little.)

`empty` serves arrays of at least MIN_BYTES from the buffers of arrays that are gone: when
nothing can reach an array any more (neither it nor a view of it), its buffer comes back here
instead of to the system, and the next request for that many bytes takes it. At most
`buffer_cache_limit()` bytes of such buffers are kept (`grukern.set_buffer_cache_limit`; 0
turns reuse off), the most recently returned ones.
"""

from __future__ import annotations

import collections
import math
import os
import threading

import numpy as np

MIN_BYTES = 1 << 20  # smaller arrays come from malloc's heap, which serves them well

_lock = threading.Lock()
_kept: collections.deque[np.ndarray] = collections.deque()  # buffers (uint8), oldest first
_held = 0  # bytes in _kept
_limit = 1 << 30
# Buffers of arrays that are gone, not yet in _kept. A lease's __del__ only appends here
# (atomic, no lock): it can run inside a garbage collection anywhere, even within _take.
_returned: collections.deque[np.ndarray] = collections.deque()


def empty(shape, dtype) -> np.ndarray:
    """np.empty(shape, dtype) (C order), on a reused buffer when it is large."""
    # Kept to a few hundred nanoseconds for small arrays: a one-step call makes four.
    dtype = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    return np.asarray(_Lease(_take(nbytes), shape, dtype))


def buffer_cache_bytes() -> int:
    """The bytes of freed buffers grukern holds for reuse now (they count as the process's
    memory, but tracemalloc saw them allocated long ago)."""
    with _lock:
        _collect_returned()
        return _held


def buffer_cache_limit() -> int:
    """The most bytes of freed buffers grukern keeps for reuse (1 GiB unless set)."""
    return _limit


def set_buffer_cache_limit(nbytes: int) -> None:
    """Keep at most nbytes of freed buffers for reuse; 0 turns reuse off. Buffers returned
    longest ago are freed first, now if the cache holds more."""
    global _limit
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
        raise ValueError(f"nbytes must be an int >= 0, got {nbytes!r}")
    with _lock:
        _limit = nbytes
        _collect_returned()


def _take(nbytes: int) -> np.ndarray:
    """A buffer of nbytes: the newest kept one of that size if there is one, else a new one."""
    global _held
    with _lock:
        _collect_returned()
        for i in range(len(_kept) - 1, -1, -1):
            if _kept[i].nbytes == nbytes:
                buffer = _kept[i]
                del _kept[i]
                _held -= nbytes
                return buffer
    return np.empty(nbytes, dtype=np.uint8)


def _collect_returned() -> None:
    """Keep the returned buffers, then free the oldest kept ones beyond the limit (under
    _lock)."""
    global _held
    while _returned:
        buffer = _returned.popleft()
        _kept.append(buffer)
        _held += buffer.nbytes
    while _held > _limit:
        _held -= _kept.popleft().nbytes


def _reinitialise_in_child() -> None:
    """After fork, _lock may be held by a parent thread that does not exist in the child."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reinitialise_in_child)


class _Lease:
    """A buffer lent to one array. numpy makes the lease the array's base (through the array
    interface), so it lives as long as the array or any view of it; then the buffer returns."""

    def __init__(self, buffer: np.ndarray, shape, dtype: np.dtype):
        self._buffer = buffer
        self._home = _returned  # kept here: module globals may be gone at interpreter exit
        self.__array_interface__ = {
            "data": (buffer.ctypes.data, False),
            "shape": tuple(shape),
            "typestr": dtype.str,
            "version": 3,
        }

    def __del__(self):
        self._home.append(self._buffer)
