"""The serial and the parallel build of the Numba backend's loops (_numba_loops), compiled at
first use and cached on disk.

Numba's on-disk cache does not key entries by the parallel option, so the serial and the
parallel build of one function would load each other's code (the "parallel" kernel then runs
serially); each build therefore compiles a copy of the function under its own name.
"""

from __future__ import annotations

import functools
import types

import numba

from grukern._backends import _numba_loops
from grukern._backends._numba_rows import JIT


class Kernels:
    """The compiled forward and backward loops, serial or parallel over row chunks."""

    def __init__(self, parallel: bool):
        options = {**JIT, "parallel": parallel}
        suffix = "_parallel" if parallel else "_serial"
        self.forward = numba.njit(**options)(_renamed(_numba_loops.forward_loop, suffix))
        self.backward = numba.njit(**options)(_renamed(_numba_loops.backward_loop, suffix))


@functools.cache
def kernels(parallel: bool) -> Kernels:
    return Kernels(parallel)


def _renamed(fn, suffix: str):
    """A copy of fn whose name (and so Numba's cache file) ends in suffix."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix)
    copy.__qualname__ = fn.__qualname__ + suffix
    return copy
