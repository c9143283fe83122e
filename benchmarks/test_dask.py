"""Batch inference on Dask: sequences per second of grukern.dask.forward at T=100, B=8192,
I=H=128, float32, against one grukern.forward call on the same data in this process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest benchmarks/test_dask.py \
        --benchmark-only --benchmark-group-by=group \
        --benchmark-json=benchmarks/results/dask-DATE-runN.json
    python benchmarks/report.py benchmarks/results/dask-*.json

Settings: "one process" (grukern.forward, all cores), "threads" (the threaded scheduler, one
worker thread per core), and "Nx1 processes" (a LocalCluster of N worker processes of one thread
each), each at several chunk sizes. Every dask round persists y and h_n (results stay chunked,
in memory or on the workers, as before writing them out); on a cluster x is on the workers
before the clock starts, as data read from shared storage would be. notebooks/06_scale_out.ipynb
studies the results.
"""

import dask
import numpy as np
import pytest

import grukern
from grukern import bench

distributed = pytest.importorskip("distributed")
import grukern.dask  # noqa: E402

PROBLEM = bench.Problem(100, 8192, 128, 128, name="D1")
THREAD_CHUNKS = [256, 1024, 4096, 8192]
CLUSTER_CHUNKS = [1024, 4096]
WORKERS = [1, 2]


@pytest.fixture(scope="module")
def case():
    params, x, h0, _ = bench.make_inputs(PROBLEM)
    y_ref, h_ref = grukern.forward(x, params, h0)  # also compiles before timing
    return params, x, h0, y_ref, h_ref


def _record(benchmark, setting: str, chunk: int, workers: int) -> None:
    benchmark.group = f"dask forward: {PROBLEM}"
    benchmark.extra_info.update(
        runner=setting, chunk=chunk, workers=workers, size=PROBLEM.name,
        flops=PROBLEM.forward_flops, T=PROBLEM.T, B=PROBLEM.B, I=PROBLEM.I, H=PROBLEM.H,
    )  # fmt: skip


def _check(y, h_n, case) -> None:
    *_, y_ref, h_ref = case
    np.testing.assert_allclose(np.asarray(h_n), h_ref, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(np.asarray(y[-1]), y_ref[-1], rtol=1e-4, atol=2e-5)


def _pedantic(benchmark, run):
    return benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)


def test_dask_forward_one_process(benchmark, add_gflops, case):
    params, x, h0, *_ = case
    _record(benchmark, "one process", PROBLEM.B, 1)
    y, h_n = _pedantic(benchmark, lambda: grukern.forward(x, params, h0))
    _check(y, h_n, case)
    add_gflops(PROBLEM.forward_flops)


@pytest.mark.parametrize("chunk", THREAD_CHUNKS)
def test_dask_forward_threads(benchmark, add_gflops, case, chunk):
    params, x, h0, *_ = case
    x_lazy = dask.array.from_array(x, chunks=(PROBLEM.T, chunk, PROBLEM.I))
    h0_lazy = dask.array.from_array(h0, chunks=(chunk, PROBLEM.H))
    _record(benchmark, "threads", chunk, 1)

    def run():
        y, h_n = grukern.dask.forward(x_lazy, params, h0_lazy)
        return dask.persist(y, h_n, scheduler="threads")

    y, h_n = _pedantic(benchmark, run)
    _check(y.compute(), h_n.compute(), case)
    add_gflops(PROBLEM.forward_flops)


@pytest.fixture(scope="module", params=WORKERS, ids=lambda n: f"{n}x1")
def client(request):
    cluster = distributed.LocalCluster(
        n_workers=request.param, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with cluster, distributed.Client(cluster) as client:
        yield client


@pytest.mark.parametrize("chunk", CLUSTER_CHUNKS)
def test_dask_forward_cluster(benchmark, add_gflops, case, client, chunk):
    params, x, h0, *_ = case
    workers = len(client.scheduler_info()["workers"])
    x_lazy = _scattered(client, x, chunk, axis=1)
    h0_lazy = _scattered(client, h0, chunk, axis=0)
    _record(benchmark, f"{workers}x1 processes", chunk, workers)

    def run():
        # New keys every round: the last round's results, released when its futures went, can
        # still be in the workers' memory, and the same keys would be answered from there
        # (8 ms instead of 560 in two of three runs before this).
        y, h_n = grukern.dask.forward(x_lazy(), params, h0_lazy())
        distributed.wait(client.persist([y, h_n]))

    _pedantic(benchmark, run)
    y, h_n = grukern.dask.forward(x_lazy(), params, h0_lazy())
    _check(y[-1:].compute(), h_n.compute(), case)
    add_gflops(PROBLEM.forward_flops)


def _scattered(client, a: np.ndarray, chunk: int, axis: int):
    """A function that returns a as a dask array whose chunks of `chunk` rows along `axis`
    already lie on the workers, under new keys at every call."""
    starts = range(0, a.shape[axis], chunk)
    pieces = [
        np.ascontiguousarray(a.take(range(s, min(s + chunk, a.shape[axis])), axis)) for s in starts
    ]
    futures = client.scatter(pieces)
    distributed.wait(futures)

    def fresh():  # an impure task per chunk passes it on under a new key (no copy)
        chunks = [
            dask.array.from_delayed(
                dask.delayed(_same, pure=False)(future), shape=piece.shape, dtype=piece.dtype
            )
            for future, piece in zip(futures, pieces, strict=True)
        ]
        return dask.array.concatenate(chunks, axis=axis)

    return fresh


def _same(a):
    return a
