"""The Numba kernels' threads: the threading layer, a process-wide thread budget, one-thread BLAS.

Threading layer. Numba's default layer on Linux, GNU OpenMP ("omp"), kills a child forked after
a parallel region, and its "workqueue" layer aborts when two threads run parallel code at once.
TBB ("tbb") is fork- and thread-safe, and Numba tries it first, but only finds the library the
pip package tbb installs (in the environment's lib/ folder) if the dynamic loader searches that
folder, which it does not by default. `load_tbb` (run when grukern is imported, before Numba
starts its threads) loads it by its full path; Numba's own load by name then finds it loaded.

But where torch is loaded first, its GNU OpenMP runtime is in the process's global symbols, and
torch's parallel operations and TBB's threads would fight over the cores: each spins for
milliseconds after its work, and threads created while the other spins wait for a core (a
compiled model's training step at G3 took 12 ms on average instead of 7, with steps of 30).
So the first parallel kernel (`_choose_layer`), if Numba's threads have not started, asks
Numba for its "omp" layer instead: Numba's OpenMP pool then binds to that runtime, and the
kernels and torch share one team of threads. Numba kills a forked child that starts a parallel
region on that layer, so a child forked after the kernels ran runs the serial builds of the
same plans (`parallel_builds`): the same chunks in order, on one thread, the same bits. A
layer or priority set with NUMBA_THREADING_LAYER(_PRIORITY) still wins. `threading_layer()`
reports what runs and why.

Budget. The kernels use at most `get_num_threads()` threads for the whole process (default:
Numba's NUMBA_NUM_THREADS, the number of cores). The budget decides how a call is split into
row chunks, and the results depend on that split only. Each kernel call is admitted (`run`):
it takes as many of the free threads as it has chunks (at least one, waiting while none is
free), runs its chunks on them (several chunks per thread when it got fewer), and gives them
back. So N Python threads calling at once share the cores instead of each starting a full set
of threads, and a call's bits do not depend on how many threads it got or which thread called.

BLAS. The kernels' large products call BLAS (np.dot in compiled code), which must run on one
thread inside a kernel: its threads would fight Numba's for the cores, and OpenBLAS's results
depend on its thread count (it splits a product's rows across threads and computes the edges
with other kernels). `run(..., limit_blas=True)` holds every loaded BLAS at one thread while
any such kernel runs, through OpenBLAS's own setter: threadpoolctl (3.8) ignores OpenBLAS
limits set from any thread but the first that set one, which made results depend on the
calling thread.

OpenMP. Where the kernels run on TBB and torch's OpenMP runtime came later (torch imported
after the first parallel kernel, or loaded without global symbols), its threads spin for
milliseconds after each parallel region on the cores a kernel is about to use (behind a
torch.compile'd head, a training step took 1.9x as long). Before a parallel kernel, `run` then
releases the calling thread's idle team in every loaded libgomp (omp_pause_resource_all,
OpenMP 5.0: its threads exit, and the team's next region starts them again). GNU's pause
touches only the calling thread's team; LLVM's and Intel's runtimes pause process-wide, so they
are left alone, as is libgomp when it runs Numba's own threads ("omp" layer) and in forked
children, whose copy of the parent's team has no threads to release.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import os
import pathlib
import sys
import threading

_TBB_LIBRARY = {"linux": "libtbb.so.12", "darwin": "libtbb.12.dylib"}
_tbb_load_error: str | None = "not attempted"


def load_tbb() -> None:
    """Load the pip package tbb's library by its full path, so that Numba can use it."""
    global _tbb_load_error
    name = _TBB_LIBRARY.get(sys.platform)
    if name is None:
        _tbb_load_error = f"grukern does not load TBB on {sys.platform}"
        return
    candidates = [pathlib.Path(sys.prefix, "lib", name)]  # where pip puts it in an environment
    if not candidates[0].exists():
        try:  # a --user or other scheme install: the package's own file list says where
            dist = importlib.metadata.distribution("tbb")
            candidates = [dist.locate_file(f) for f in dist.files or () if f.name == name]
        except importlib.metadata.PackageNotFoundError:
            _tbb_load_error = "the tbb package is not installed (pip install tbb)"
            return
    if not candidates:
        _tbb_load_error = f"the tbb package has no {name}"
    for path in candidates:
        try:
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        except OSError as error:
            _tbb_load_error = f"{path} did not load: {error}"
        else:
            _tbb_load_error = None
            return


def threading_layer() -> tuple[str, str]:
    """(layer, why): the Numba threading layer the kernels run on, and why it is that one.

    Starts Numba's threads if they have not started (as the first parallel kernel would)."""
    import numba

    _choose_layer()
    numba.get_num_threads()  # starts the threads, choosing the layer
    layer = numba.threading_layer()
    requested = os.environ.get("NUMBA_THREADING_LAYER")
    if layer == "omp" and _shares_openmp and not requested:
        return layer, (
            "GNU OpenMP loaded before the first kernel (torch's): the kernels share its threads;"
            " a child forked after they ran runs them on one thread"
        )
    if requested:
        why = f"NUMBA_THREADING_LAYER={requested}"
    elif layer == "tbb":
        why = "TBB found: fork- and thread-safe"
    else:
        why = f"TBB unavailable ({_tbb_load_error}); Numba's next choice"
    if layer != "tbb":
        why += "; not fork-safe" if layer == "omp" else "; concurrent calls are not safe"
    return layer, why


_layer_lock = threading.Lock()
_layer_chosen = False
_shares_openmp = False  # Numba's "omp" layer chosen to share an OpenMP runtime loaded before


def _choose_layer() -> None:
    """Before Numba's threads start (once): its "omp" layer where a GNU OpenMP runtime is in the
    process's global symbols, which Numba's OpenMP pool then binds to (module docstring)."""
    global _layer_chosen, _shares_openmp
    if _layer_chosen:
        return
    with _layer_lock:  # a call that finds it chosen must not start Numba's threads before
        if _layer_chosen:
            return
        from numba.np.ufunc import parallel

        user_choice = any(
            name in os.environ
            for name in ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY")
        )
        if not (parallel._is_initialized or user_choice) and _global_gnu_openmp():
            import numba

            # Read by Numba when its threads start, which the caller makes happen next.
            numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]
            _shares_openmp = True
        _layer_chosen = True


def _global_gnu_openmp() -> bool:
    """Whether the process's global symbols hold GNU OpenMP's entry point (torch's runtime)."""
    return os.name == "posix" and hasattr(ctypes.CDLL(None), "GOMP_parallel")


_parallel_builds = True  # False in a child forked after kernels ran on the "omp" layer


def parallel_builds() -> bool:
    """Whether this process may run the parallel builds (else the serial build of the same
    plan, whose chunks then run in order on the calling thread: the same bits)."""
    return _parallel_builds


# ---------------------------------------------------------------------------------------------
# The thread budget.


class _Budget:
    """Kernel threads for the whole process: `total`, of which `free` are not in use.

    A plain lock guards the counts, cheap for a call that finds a thread free; only a call
    that must wait uses the condition."""

    def __init__(self, total: int):
        self.total = total
        self.free = total
        self.waiting = 0  # calls waiting for a thread
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def take(self, wanted: int) -> int:
        """Between 1 and `wanted` threads; waits while none is free. A call takes every free
        thread it can use while no other call waits, and one thread when others do: calls
        running side by side on a thread each finish sooner, together, than the same calls
        each split over the threads one after another (the split costs synchronisation)."""
        with self.lock:
            while self.free < 1:
                self.waiting += 1
                self.changed.wait()
                self.waiting -= 1
            granted = 1 if self.waiting else min(wanted, self.free)
            self.free -= granted
            return granted

    def give_back(self, count: int) -> None:
        with self.lock:
            self.free += count
            if self.waiting:
                self.changed.notify(count)  # as many waiters as can now run

    def resize(self, total: int) -> None:
        with self.lock:
            self.free += total - self.total  # may go below 0 until running calls give back
            self.total = total
            self.changed.notify_all()


@functools.cache
def _most_threads() -> int:
    import numba

    return numba.config.NUMBA_NUM_THREADS


_budget: _Budget | None = None


def _the_budget() -> _Budget:
    global _budget
    if _budget is None:
        _budget = _Budget(_most_threads())
    return _budget


def get_num_threads() -> int:
    """The number of threads grukern's CPU kernels use, at most, for the whole process."""
    return _the_budget().total


def set_num_threads(n: int) -> None:
    """Let grukern's CPU kernels use at most n threads in all, shared by every Python thread
    that calls grukern (1 ≤ n ≤ Numba's NUMBA_NUM_THREADS, the default).

    A call is split into as many row chunks as this allows, so results are bitwise the same
    for the same setting whatever thread calls and however many calls run at once; different
    settings agree to rounding."""
    most = _most_threads()
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= most:
        raise ValueError(f"n must be an int from 1 to NUMBA_NUM_THREADS = {most}, got {n!r}")
    _the_budget().resize(n)


def run(chunks: int, limit_blas: bool, work, *args):
    """work(*args), a kernel of `chunks` row chunks and what prepares it, admitted to up to
    `chunks` threads of the budget (with every BLAS held at one thread if limit_blas); returns
    what work returns.

    A parallel kernel (chunks > 1) runs its prange on the threads it got: Numba's thread count
    is per calling thread, and is restored afterwards. A serial kernel takes one thread. (A
    function, not a context manager: a one-step call is mostly such overheads.)"""
    budget = _budget or _the_budget()
    granted = budget.take(chunks if _parallel_builds else 1)
    try:
        if limit_blas:
            _hold_blas()
        try:
            if chunks == 1 or not _parallel_builds:
                return work(*args)
            import numba

            _choose_layer()
            previous = numba.get_num_threads()
            numba.set_num_threads(granted)
            _release_openmp_teams()
            try:
                return work(*args)
            finally:
                numba.set_num_threads(previous)
        finally:
            if limit_blas:
                _release_blas()
    finally:
        budget.give_back(granted)


# ---------------------------------------------------------------------------------------------
# BLAS at one thread.

_blas_lock = threading.Lock()
_blas_users = 0  # kernels inside one_blas_thread right now
_blas_saved: list = []  # (set, threads before) to restore when the last one leaves


def _hold_blas() -> None:
    """Hold every loaded BLAS at one thread until the matching _release_blas. Calls from
    several Python threads nest: the first one in saves the settings, the last one out restores
    them (the setters are found once)."""
    global _blas_users, _blas_saved
    with _blas_lock:
        if _blas_users == 0:
            _blas_saved = [(set_, get()) for get, set_ in _blas_setters()]
            for set_, threads in _blas_saved:
                if threads != 1:
                    set_(1)
        _blas_users += 1


def _release_blas() -> None:
    global _blas_users
    with _blas_lock:
        _blas_users -= 1
        if _blas_users == 0:
            for set_, threads in _blas_saved:
                if threads != 1:
                    set_(threads)


@functools.cache
def _blas_setters() -> tuple:
    """(get, set) of every loaded BLAS's thread count: SciPy's, which np.dot calls in compiled
    code, and also NumPy's, whose idle worker threads otherwise keep spinning on the cores the
    kernel needs."""
    from scipy.linalg import cython_blas  # loads SciPy's BLAS before threadpoolctl looks
    from threadpoolctl import ThreadpoolController

    del cython_blas
    setters = []
    for lib in ThreadpoolController().select(user_api="blas").lib_controllers:
        own = _openblas_functions(lib.filepath) if lib.internal_api == "openblas" else None
        setters.append(own or (lib.get_num_threads, lib.set_num_threads))
    return tuple(setters)


def _openblas_functions(path: str):
    """OpenBLAS's own openblas_get/set_num_threads in the library at path (whose symbols may
    carry a prefix or suffix, as SciPy's and NumPy's builds do), or None."""
    library = ctypes.CDLL(path)
    for prefix in ("", "scipy_"):
        for suffix in ("", "64_", "_64"):
            get = getattr(library, f"{prefix}openblas_get_num_threads{suffix}", None)
            set_ = getattr(library, f"{prefix}openblas_set_num_threads{suffix}", None)
            if get is not None and set_ is not None:
                return get, set_
    return None


# ---------------------------------------------------------------------------------------------
# Idle OpenMP teams.

_OMP_PAUSE_SOFT = 1  # omp_pause_soft: threads may be started again by the next region
_openmp_modules_seen = -1  # len(sys.modules) when the loaded libgomps were last listed
_openmp_pauses: tuple = ()  # omp_pause_resource_all of each loaded libgomp
_openmp_in_child = False


def _release_openmp_teams() -> None:
    """Make the calling thread's idle GNU OpenMP teams exit (module docstring), in every
    libgomp loaded when this process last imported a module: the list is made again after
    imports, which are what load such libraries (torch's on `import torch`)."""
    global _openmp_modules_seen, _openmp_pauses
    if _openmp_in_child:
        return
    if len(sys.modules) != _openmp_modules_seen:
        _openmp_modules_seen = len(sys.modules)
        _openmp_pauses = _libgomp_pauses()
    for pause in _openmp_pauses:
        pause(_OMP_PAUSE_SOFT)


def _libgomp_pauses() -> tuple:
    """omp_pause_resource_all of every loaded libgomp that has one (GCC 9 on), unless Numba's
    threads are a libgomp team themselves."""
    import numba
    from threadpoolctl import ThreadpoolController

    if numba.threading_layer() == "omp":
        return ()
    pauses = []
    for lib in (
        ThreadpoolController().select(internal_api="openmp", prefix="libgomp").lib_controllers
    ):
        pause = getattr(ctypes.CDLL(lib.filepath), "omp_pause_resource_all", None)
        if pause is not None:
            pause.argtypes = (ctypes.c_int,)
            pauses.append(pause)
    return tuple(pauses)


def _reinitialise_in_child() -> None:
    """After fork the child has one thread: locks another thread held stay held, threads
    counted as taken will never give them back, an OpenMP team copied from the parent would
    wait forever for its threads to exit, and on the "omp" layer Numba kills the child at its
    first parallel region. Start the child's state afresh."""
    global _blas_lock, _blas_users, _budget, _openmp_in_child, _parallel_builds
    _openmp_in_child = True
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    if parallel is not None and getattr(parallel, "_threading_layer", None) == "omp":
        _parallel_builds = False  # Numba kills a child that starts an OpenMP region
    _blas_lock = threading.Lock()
    _blas_users = 0
    if _budget is not None:
        _budget = _Budget(_budget.total)


os.register_at_fork(after_in_child=_reinitialise_in_child)
