"""The builds of the Numba backend's loops (_numba_loops), compiled at first use and cached on
disk: serial or parallel over row chunks, for one variant each (reset_after True or False, fixed
as the loops' global RESET_AFTER), so a process compiles only the builds it runs.

Numba's on-disk cache does not key entries by the parallel option, so the serial and the
parallel build of one function would load each other's code (the "parallel" kernel then runs
serially); each build therefore compiles a copy of the function under its own name.
"""

from __future__ import annotations

import functools
import logging
import types

import numba

from grukern._backends import _numba_loops
from grukern._backends._numba_rows import JIT


class Kernels:
    """The compiled loops of one build."""

    def __init__(self, parallel: bool, reset_after: bool):
        options = {**JIT, "parallel": parallel}
        suffix = ("_parallel" if parallel else "_serial") + ("_after" if reset_after else "_before")
        build = {"RESET_AFTER": reset_after}
        self.forward = numba.njit(**options)(_copy(_numba_loops.forward_loop, suffix, build))
        self.forward_units = numba.njit(**options)(
            _copy(_numba_loops.forward_units_loop, suffix, build)
        )
        self.backward = numba.njit(**options)(_copy(_numba_loops.backward_loop, suffix, build))
        self.backward_units = numba.njit(**options)(
            _copy(_numba_loops.backward_units_loop, suffix, build)
        )


@functools.cache
def kernels(parallel: bool, reset_after: bool) -> Kernels:
    """The build, made at its first use in a process, which says so once (logger "grukern")."""
    _log.info(
        "grukern: first use of the %s %s kernels in this process; Numba compiles them now "
        "(about 5-15 s) unless its disk cache already holds them (then under a second)",
        "parallel" if parallel else "serial",
        "reset_after=True" if reset_after else "reset_after=False",
    )
    return Kernels(parallel, reset_after)


_log = logging.getLogger("grukern")


def _copy(fn, suffix: str, constants: dict):
    """A copy of fn whose name (and so Numba's cache file) ends in suffix, with `constants`
    replacing globals of the same names (Numba compiles globals as constants)."""
    copy = types.FunctionType(fn.__code__, {**fn.__globals__, **constants}, fn.__name__ + suffix)
    copy.__qualname__ = fn.__qualname__ + suffix
    return copy
