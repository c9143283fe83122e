"""Threads and processes: forked, forkserver and spawned children (and a fork-based torch
DataLoader) after parallel kernels ran, the same bits in any calling thread and under
concurrent calls, the process-wide thread budget, and the threading layer: TBB, or torch's
OpenMP threads shared where torch came first (this test session's case: test modules import
torch when they are collected), and torch's idle OpenMP threads made to leave the cores to a
kernel on TBB. Where the case needs another import order, a fresh interpreter runs it."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import pathlib
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import grukern
from grukern import _threads
from grukern._backends import numba_cpu
from tests.helpers import assert_same_bits

pytest.importorskip("numba")

# Large enough for the parallel kernels (numba_cpu.PARALLEL_MIN_FLOPS), small enough to be quick.
T, B, I, H = 30, 8, 32, 32
TWO_THREADS = pytest.mark.skipif(
    grukern.get_num_threads() < 2, reason="needs a thread budget of at least 2"
)


def _problem(seed, size):
    T, B, I, H = size
    rng = np.random.default_rng(seed)
    params = grukern.init_params(I, H, seed=seed)
    x = rng.standard_normal((T, B, I), dtype=np.float32)
    dy = rng.standard_normal((T, B, H), dtype=np.float32)
    lengths = rng.integers(1, T + 1, size=B)
    return params, x, dy, lengths


def train_step(seed: int = 0, size=(T, B, I, H)) -> list[np.ndarray]:
    """y, h_n and every gradient of one padded training step on the numba backend (module
    level: child processes import and run it)."""
    params, x, dy, lengths = _problem(seed, size)
    y, h_n, tape = grukern.forward_train(x, params, backend="numba", lengths=lengths)
    grads = grukern.backward(tape, dy=dy)
    return [y, h_n, grads.x, grads.h0, *grads.params.arrays()]


def test_the_problem_runs_the_parallel_kernels():
    if grukern.get_num_threads() < 2:
        pytest.skip("needs a thread budget of at least 2")
    assert numba_cpu._plan(T, B, I, H).n_chunks > 1


def test_this_sessions_layer_and_why():
    """torch is installed with the test extras and imported before the first kernel here."""
    layer, why = _threads.threading_layer()
    shared = "GNU OpenMP loaded before the first kernel (torch's): the kernels share its threads"
    if "torch" in sys.modules and layer == "omp":
        assert why.startswith(shared)
    else:
        assert (layer, why) == ("tbb", "TBB found: fork- and thread-safe")


ROOT = pathlib.Path(__file__).resolve().parents[1]

# Run in a fresh interpreter (_in_fresh_python): the layer is chosen once per process.
_PRELUDE = """
import concurrent.futures, multiprocessing, os, sys, time
sys.modules["torch"] = None  # the test modules' imports must not load it: a script does
from grukern import _threads
from tests.helpers import assert_same_bits
from tests.test_concurrency import train_step
del sys.modules["torch"]

def thread_ids():
    return set(os.listdir("/proc/self/task"))

def until(condition, timeout=2.0):  # a thread told to exit is gone a little later
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        time.sleep(0.01)
    return condition()

def forked_child_bits(parent):
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        assert_same_bits(pool.submit(train_step).result(timeout=300), parent, "forked child")

def torch_openmp_op():  # large enough for ATen to split it over its threads
    import torch
    torch.ones(1 << 22).mul_(2)
"""


def _in_fresh_python(code: str) -> str:
    """Run _PRELUDE + code in a new interpreter at the repository's root; its stdout."""
    script = _PRELUDE + textwrap.dedent(code)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


LINUX_TWO_THREADS = pytest.mark.skipif(
    sys.platform != "linux" or grukern.get_num_threads() < 2,
    reason="needs Linux (/proc, fork) and a thread budget of at least 2",
)


@LINUX_TWO_THREADS
def test_without_torch_the_kernels_run_on_tbb_and_forked_children_give_the_parents_bits():
    out = _in_fresh_python("""
        parent = train_step()
        print(_threads.threading_layer()[0])
        forked_child_bits(parent)
    """)
    assert out.split() == ["tbb"]


@LINUX_TWO_THREADS
def test_with_torch_first_the_kernels_and_torch_share_one_openmp_team():
    """torch's parallel op reuses the team the kernels started (no new threads); a forked
    child runs the serial builds of the same plans and gives the parent's bits."""
    pytest.importorskip("torch")
    out = _in_fresh_python("""
        import torch
        if torch.get_num_threads() < 2:
            print("skip")
            raise SystemExit
        parent = train_step()
        print(_threads.threading_layer()[0])
        before = thread_ids()
        torch_openmp_op()
        print(len(thread_ids() - before))
        forked_child_bits(parent)
    """)
    if out.strip() == "skip":
        pytest.skip("torch runs on one thread here")
    assert out.split() == ["omp", "0"]


@LINUX_TWO_THREADS
def test_on_tbb_a_parallel_kernel_first_lets_torchs_idle_openmp_threads_exit():
    """torch imported after the first kernel: its team would spin on the cores the next kernel
    needs; the kernel makes its threads exit, torch's next op starts new ones, and a child
    forked while a team exists (whose copy has no threads to release) runs the kernels."""
    pytest.importorskip("torch")
    out = _in_fresh_python("""
        parent = train_step()  # TBB, and its threads, from here on
        import torch
        if torch.get_num_threads() < 2 or not _threads._libgomp_pauses():
            print("skip")
            raise SystemExit
        before = thread_ids()
        torch_openmp_op()
        team = thread_ids() - before
        train_step()
        exited = until(lambda: not team & thread_ids())
        torch_openmp_op()
        restarted = len(thread_ids() - before - team) > 0
        print(_threads.threading_layer()[0], len(team) > 0, exited, restarted)
        forked_child_bits(parent)  # the team exists: the op above started it
    """)
    if out.strip() == "skip":
        pytest.skip("torch runs on one thread, or not on GNU OpenMP, here")
    assert out.split() == ["tbb", "True", "True", "True"]


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_a_child_process_after_parallel_use_gives_the_parents_bits(method):
    parent = train_step()  # the parent has run parallel kernels before the child starts
    context = multiprocessing.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        child = pool.submit(train_step).result(timeout=300)  # never hang
    assert_same_bits(child, parent)


def test_a_fork_based_dataloader_whose_dataset_runs_grukern_torch():
    torch = pytest.importorskip("torch")
    import grukern.torch as gt

    class Sequences(torch.utils.data.Dataset):
        def __init__(self):
            self.gru = gt.GRU(I, H, 2, bidirectional=True)
            self.x = torch.randn(4, T, B, I, generator=torch.Generator().manual_seed(0))

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            with torch.no_grad():
                return self.gru(self.x[i])[0]

    data = Sequences()
    expected = torch.stack([data[i] for i in range(len(data))])  # parallel use in the parent
    loader = torch.utils.data.DataLoader(
        data, batch_size=1, num_workers=2, multiprocessing_context="fork", timeout=300
    )
    loaded = torch.cat(list(loader))
    torch.testing.assert_close(loaded, expected, rtol=0, atol=0)


def _in_thread(fn, *args):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", fn(*args)))
    thread.start()
    thread.join()
    return result["value"]


def test_the_same_bits_in_any_calling_thread():
    """At G3's size, where BLAS would run its products on several threads if it could (its
    results depend on how many), and at the small size."""
    for size in [(100, 32, 128, 128), (T, B, I, H)]:
        main = train_step(0, size)
        assert_same_bits(_in_thread(train_step, 0, size), main, f"a new thread, {size}")
        assert_same_bits(_in_thread(train_step, 0, size), main, f"another new thread, {size}")
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            assert_same_bits(pool.submit(train_step, 0, size).result(), main, f"a pool, {size}")


def test_concurrent_calls_give_the_serial_bits():
    seeds = list(range(6)) * 4
    serial = [train_step(seed) for seed in seeds]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        concurrent_results = list(pool.map(train_step, seeds))
    for seed, ours, expected in zip(seeds, concurrent_results, serial, strict=True):
        assert_same_bits(ours, expected, f"seed {seed}")


@TWO_THREADS
def test_set_num_threads_sets_the_split_and_the_bits_follow_the_setting():
    default = grukern.get_num_threads()
    two = train_step()
    try:
        grukern.set_num_threads(1)
        assert grukern.get_num_threads() == 1
        assert numba_cpu._plan(T, B, I, H).n_chunks == 1
        one = train_step()
        assert_same_bits(_in_thread(train_step), one, "one thread, in a new thread")
    finally:
        grukern.set_num_threads(default)
    for a, b in zip(one, two, strict=True):  # another split: the same to rounding
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert_same_bits(train_step(), two, "back at the default")


@pytest.mark.parametrize("bad", [0, -1, 10_000, 1.5, True, "2"])
def test_set_num_threads_refuses_what_it_cannot_do(bad):
    most = _threads._most_threads()
    with pytest.raises(ValueError, match=rf"n must be an int from 1 to NUMBA_NUM_THREADS = {most}"):
        grukern.set_num_threads(bad)


def test_the_budget_is_never_exceeded():
    """Eight threads asking for 2 threads each from a budget of 3: at most 3 in use at once,
    every request gets at least one, and all come back."""
    budget = _threads._Budget(3)
    in_use, most_in_use, lock = [0], [0], threading.Lock()

    def call():
        granted = budget.take(2)
        with lock:
            in_use[0] += granted
            most_in_use[0] = max(most_in_use[0], in_use[0])
        assert 1 <= granted <= 2
        threading.Event().wait(0.002)
        with lock:
            in_use[0] -= granted
        budget.give_back(granted)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(call) for _ in range(200)]:
            future.result()
    assert most_in_use[0] <= 3 and budget.free == 3
    budget.resize(1)
    assert budget.take(5) == 1 and budget.free == 0


def test_kernels_run_within_the_budget(monkeypatch):
    """The threads each kernel call is admitted to, summed over the calls running at once,
    never exceed the budget."""
    budget = _threads._the_budget()
    lowest_free = [budget.free]
    take = budget.take

    def recording_take(wanted):
        granted = take(wanted)
        lowest_free[0] = min(lowest_free[0], budget.free)
        return granted

    monkeypatch.setattr(budget, "take", recording_take)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(train_step, range(8)))
    assert lowest_free[0] >= 0 and budget.free == budget.total
