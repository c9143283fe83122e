"""Threads and processes: forked, forkserver and spawned children (and a fork-based torch
DataLoader) after parallel kernels ran, the same bits in any calling thread and under
concurrent calls, the process-wide thread budget, the threading layer in use, and torch's
idle OpenMP threads made to leave the cores to a parallel kernel."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys
import threading
import time

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


def test_the_threading_layer_is_tbb():
    """A plain install (tbb is a dependency on this platform) runs Numba on TBB."""
    layer, why = _threads.threading_layer()
    assert (layer, why) == ("tbb", "TBB found: fork- and thread-safe")


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


def _torch_openmp_team():
    """Run an op on torch's OpenMP threads (they then stay, idle); skip without them."""
    torch = pytest.importorskip("torch")
    if sys.platform != "linux" or torch.get_num_threads() < 2 or grukern.get_num_threads() < 2:
        pytest.skip("needs Linux (/proc), 2 torch threads and a thread budget of 2")
    if not _threads._libgomp_pauses():
        pytest.skip("torch does not run on GNU OpenMP here")
    torch.ones(1 << 22).mul_(2)  # large enough for ATen to split it over the threads


def _thread_ids() -> set[str]:
    return set(os.listdir("/proc/self/task"))


def _until(condition, timeout: float = 2.0) -> bool:
    """Whether condition() holds within timeout: a thread told to exit is gone a little later."""
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        time.sleep(0.01)
    return condition()


def test_a_parallel_kernel_first_lets_torchs_idle_openmp_threads_exit():
    """They would spin on the cores the kernel needs (grukern._threads): the team's threads
    exit, and torch's next parallel op starts new ones."""
    _torch_openmp_team()
    train_step()  # releases the team, and Numba's threads exist from here on
    before = _thread_ids()
    _torch_openmp_team()
    team = _thread_ids() - before
    assert team, "torch's op started no OpenMP threads"
    train_step()
    assert _until(lambda: not team & _thread_ids()), "the team's threads are still alive"
    _torch_openmp_team()
    assert _thread_ids() - before - team, "torch's next op started no threads"


def _fork_child_train_step(results):
    results.put([a.sum() for a in train_step()])


def test_a_forked_child_of_a_parent_with_an_openmp_team_runs_parallel_kernels():
    """The child's copy of the parent's idle team has no threads: releasing it would wait for
    them forever, so the child leaves it alone."""
    parent = [a.sum() for a in train_step()]
    _torch_openmp_team()  # after the kernels, which release it
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_fork_child_train_step, args=(results,))
    child.start()
    try:
        assert results.get(timeout=120) == parent
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()


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
