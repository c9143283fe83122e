"""The standard algorithm's time loops, replayed as CUDA graphs.

Issued from Python, a time loop costs tens of µs of host time per step (a cuBLAS call through
CuPy, a numba launch), T times per call. Captured once through CuPy's stream capture and replayed,
it costs one graph launch per call.

A graph holds the device address of every array its loop touches, so it is cached under those
addresses, with their shapes and strides: a call whose arrays sit where an earlier call's sat
replays that call's graph (CuPy's memory pool hands the same blocks back to a loop of same-shaped
calls). A key seen for the first time runs eagerly: that compiles the kernels and sets up cuBLAS
outside any capture, and keeps a one-off call from paying for a capture it never replays.
"""

from __future__ import annotations

import collections
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
_graphs: collections.OrderedDict = collections.OrderedDict()  # key -> _Graph
_seen: collections.OrderedDict = collections.OrderedDict()  # keys run once eagerly
# How each loop ran: "issued" (from Python), "captured" (then launched), "replayed"; and
# "refused": captures that failed (the loop was issued instead).
counts: collections.Counter = collections.Counter()


def run(tag: str, arrays, loop) -> None:
    """Issue loop(stream) on CuPy's current stream, or replay its graph.

    loop(stream) issues the time loop: CuPy products on CuPy's current stream and numba kernels
    launched on `stream`. arrays: every device array the loop reads or writes (views included
    through their base arrays' addresses, shapes and strides); tag names the loop and anything
    else it depends on.
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
            graph.launch(current)
            return
    if graph is None or graph is _REFUSED:
        _count("issued")
        loop(numba_stream(current))
        return
    _count("replayed")
    graph.launch(current)


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


def cached() -> int:
    """How many graphs are cached."""
    return len(_graphs)


def _capture_or_refusal(tag, loop):
    """loop's graph, or _REFUSED (with a warning, once per key) if the driver or a library
    refuses to capture it: the loop is then issued from Python, as with graphs off."""
    try:
        return _capture(loop)
    except Exception as error:  # any refusal: the loop still runs, issued
        _count("refused")
        warnings.warn(
            f"grukern could not capture its {tag[0] if isinstance(tag, tuple) else tag} loop "
            f"as a CUDA graph ({error!r}); it is issued step by step instead",
            RuntimeWarning,
            stacklevel=4,
        )
        return _REFUSED


def _capture(loop) -> _Graph:
    """loop's work as a graph, captured on a fresh stream (nothing runs during the capture).

    Any memory CuPy allocates during the capture (a temporary of a product, say) is used by
    every replay, so the graph keeps it: it never goes back to the pool while the graph lives."""
    import cupy

    pool = cupy.get_default_memory_pool()
    kept = []

    def keeping_malloc(size: int):
        memory = pool.malloc(size)
        kept.append(memory)
        return memory

    stream = cupy.cuda.Stream(non_blocking=True)
    with stream, cupy.cuda.using_allocator(keeping_malloc):
        stream.begin_capture()
        try:
            loop(numba_stream(stream))
        except BaseException:
            stream.end_capture()  # leaves the stream out of capture mode; the loop's error shows
            raise
        return _Graph(stream.end_capture(), tuple(kept))


class _Graph:
    """A captured graph and the memory allocated while it was captured."""

    def __init__(self, graph, memory: tuple):
        self.graph = graph
        self.memory = memory

    def launch(self, stream) -> None:
        self.graph.launch(stream=stream)


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
