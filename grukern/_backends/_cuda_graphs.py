"""The CUDA backend's time loops (and persistent launches), replayed as CUDA graphs.

Issued from Python, a time loop costs tens of µs of host time per step (a cuBLAS call, a numba
launch), T times per call. Captured once through CuPy's stream capture and replayed, it costs
one graph launch per call.

A graph holds the device address of every array its loop touches, so it is cached under those
addresses, with their shapes and strides: a call whose arrays sit where an earlier call's sat
replays that call's graph (CuPy's memory pool hands the same blocks back to a loop of same-shaped
calls). A key seen for the first time runs eagerly: that compiles the kernels and sets up cuBLAS
outside any capture, and keeps a one-off call from paying for a capture it never replays.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import warnings

from numba import cuda

from grukern import _device

# Whether the standard loops are captured and replayed (else issued step by step from Python).
ENABLED = True
# Graphs (and first-seen keys) kept per process, least recently used dropped first.
CACHE_SIZE = 32

_REFUSED = "refused"  # cached in place of a graph for a loop that could not be captured
_lock = threading.Lock()
_graphs: collections.OrderedDict = collections.OrderedDict()  # key -> cupy.cuda.Graph
_seen: collections.OrderedDict = collections.OrderedDict()  # keys run once eagerly
# How each loop ran: "issued" (from Python), "captured" (then launched), "replayed"; and
# "refused": captures that failed (the loop was issued instead).
counts: collections.Counter = collections.Counter()


def run(tag: tuple, arrays, loop) -> None:
    """Issue loop(stream) on CuPy's current stream, or replay its graph.

    loop(stream) issues the time loop: GEMMs on CuPy's current stream and numba kernels launched
    on `stream`. arrays: every device array the loop reads or writes, or takes views of (their
    addresses, shapes, strides and dtypes make the key); tag: the loop's name and every other
    value its launches depend on (launch configuration, variant).
    """
    if _device.simulated():
        loop(0)
        return
    import cupy

    current = cupy.cuda.get_current_stream()
    if not ENABLED:
        _count("issued")
        loop(numba_stream(current))
        return
    key = (tag, cupy.cuda.Device().id, *(_where(a) for a in arrays))
    with _lock:
        graph = _graphs.get(key)
        first_sight = graph is None and key not in _seen
        if graph is not None:
            _graphs.move_to_end(key)
        elif first_sight:
            _remember(_seen, key, None)
    if graph is None and not first_sight:
        graph = _capture_or_refusal(tag, loop)
        with _lock:
            _remember(_graphs, key, graph)
        if graph is not _REFUSED:
            _count("captured")
            graph.launch(stream=current)
            return
    if graph is None or graph is _REFUSED:
        _count("issued")
        loop(numba_stream(current))
        return
    _count("replayed")
    graph.launch(stream=current)


def numba_stream(stream=None):
    """numba's handle on a CuPy stream (default: CuPy's current one), for kernel launches;
    0, numba's name for the legacy default stream, for that stream and under the simulator."""
    if _device.simulated():
        return 0
    if stream is None:
        import cupy

        stream = cupy.cuda.get_current_stream()
    return cuda.external_stream(stream.ptr) if stream.ptr else 0


def clear() -> None:
    """Forget every graph (tests; a process that wants the memory of their nodes back)."""
    with _lock:
        _graphs.clear()
        _seen.clear()
        counts.clear()


def _capture_or_refusal(tag, loop):
    """loop's graph, or _REFUSED (with a warning, once per key) if the driver or a library
    refuses to capture it: the loop is then issued from Python, as with graphs off."""
    try:
        return _capture(loop)
    except Exception as error:  # any refusal: the loop still runs, issued
        _count("refused")
        warnings.warn(
            f"grukern could not capture its {tag[0]} loop "
            f"as a CUDA graph ({error!r}); it is issued step by step instead",
            RuntimeWarning,
            stacklevel=4,
        )
        return _REFUSED


def _capture(loop):
    """loop's work as a cupy.cuda.Graph, captured on a fresh stream (nothing runs during the
    capture). A loop must not allocate while captured: a replay would use memory that went
    back to the pool. CuPy allocations raise during the capture, so such a loop is refused."""
    import cupy

    stream = cupy.cuda.Stream(non_blocking=True)
    with stream, cupy.cuda.using_allocator(_refuse_allocation):
        stream.begin_capture()
        try:
            loop(numba_stream(stream))
        except BaseException:
            with contextlib.suppress(Exception):  # out of capture mode; the loop's error shows
                stream.end_capture()
            raise
        return stream.end_capture()


def _refuse_allocation(size: int):
    raise RuntimeError(f"the loop allocated {size} bytes of device memory while captured")


def _count(how: str) -> None:
    with _lock:
        counts[how] += 1


def _where(a) -> tuple:
    return (a.data.ptr, a.shape, a.strides, a.dtype.str)


def _remember(cache: collections.OrderedDict, key, value) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > CACHE_SIZE:
        cache.popitem(last=False)
