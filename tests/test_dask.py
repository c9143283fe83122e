"""grukern.dask against grukern on the whole array: every chunking, lengths, layouts, dtypes,
the gradient reduction, errors at graph construction, and a 2-process LocalCluster."""

from __future__ import annotations

import numpy as np
import pytest

import grukern
from tests.helpers import assert_same_bits, make_problem, tolerance

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
import grukern.dask as gdask  # noqa: E402  (after the skip: needs dask)

T, B, I, H = 5, 11, 3, 4

# Batch chunkings of B = 11 rows: one chunk, even-ish, a ragged last chunk, single rows.
CHUNKINGS = [(11,), (6, 5), (4, 4, 3), (1,) * 11]


def _problem(rng, dtype=np.float64, reset_after=True):
    return make_problem(rng, T, B, I, H, dtype=dtype, reset_after=reset_after)


def _lazy_x(x, rows, *, batch_first=False, time_chunks=-1, feature_chunks=-1):
    """x as a dask array with `rows` chunks along the batch (and optionally split T and I)."""
    chunks = (time_chunks, rows, feature_chunks)
    if batch_first:
        chunks = (rows, time_chunks, feature_chunks)
    return da.from_array(x, chunks=chunks)


def _lengths(rng):
    lengths = rng.integers(0, T + 1, B)
    lengths[0] = T  # one full row
    return lengths


@pytest.mark.parametrize("rows", CHUNKINGS)
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_forward_equals_one_call_on_the_whole_batch(rng, rows, backend):
    p = _problem(rng)
    y, h_n = gdask.forward(_lazy_x(p.x, rows), p.params, p.h0, backend=backend)
    assert y.chunks == ((T,), rows, (H,)) and h_n.chunks == (rows, (H,))
    y_ref, h_ref = grukern.forward(p.x, p.params, p.h0, backend=backend)
    y, h_n = dask.compute(y, h_n)
    if len(rows) == 1:  # the same call: the same bits
        assert_same_bits(y, y_ref, "y")
        assert_same_bits(h_n, h_ref, "h_n")
    np.testing.assert_allclose(y, y_ref, **tolerance(np.float64, "output"))
    np.testing.assert_allclose(h_n, h_ref, **tolerance(np.float64, "output"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("reset_after", [True, False])
def test_forward_layouts_lengths_and_lazy_arguments(rng, dtype, batch_first, reset_after):
    p = _problem(rng, dtype, reset_after)
    lengths = _lengths(rng)
    x = p.x.transpose(1, 0, 2).copy() if batch_first else p.x
    # x split along time and features too (merged by grukern.dask), h0 and lengths as dask
    # arrays chunked differently from x.
    x_lazy = _lazy_x(x, (4, 4, 3), batch_first=batch_first, time_chunks=2, feature_chunks=2)
    h0_lazy = da.from_array(p.h0, chunks=(5, 2))
    lengths_lazy = da.from_array(lengths, chunks=3)
    y, h_n = gdask.forward(x_lazy, p.params, h0_lazy, batch_first=batch_first, lengths=lengths_lazy)
    assert y.chunks[0 if batch_first else 1] == (4, 4, 3)
    y_ref, h_ref = grukern.forward(x, p.params, p.h0, batch_first=batch_first, lengths=lengths)
    y, h_n = dask.compute(y, h_n)
    np.testing.assert_allclose(y, y_ref, **tolerance(dtype, "output"))
    np.testing.assert_allclose(h_n, h_ref, **tolerance(dtype, "output"))


def test_forward_is_lazy_and_ships_the_params_once(rng):
    p = _problem(rng)
    calls = []

    def load(block):  # stands for reading x from storage
        calls.append(block.shape)
        return block

    x = _lazy_x(p.x, (4, 4, 3)).map_blocks(load, meta=p.x[:0, :0, :0])
    y, h_n = gdask.forward(x, p.params)
    assert calls == []  # building the graph computed nothing
    for result in (y, h_n):
        keys = [key for key in dict(result.__dask_graph__()) if "grukern-params-" in str(key)]
        assert len(keys) == 1  # one key for all three chunks' tasks
    dask.compute(y, h_n)
    assert sorted(calls) == [(T, 3, I), (T, 4, I), (T, 4, I)]


def _chunk_gradients(p, rows, backend):
    """grukern.backward on each chunk of rows separately, the reference for the reduction."""
    grads, start = [], 0
    for n in rows:
        block = slice(start, start + n)
        _, _, tape = grukern.forward_train(p.x[:, block], p.params, p.h0[block], backend=backend)
        grads.append(grukern.backward(tape, dy=p.dy[:, block], dh_n=p.dh_n[block]).params)
        start += n
    return grads


@pytest.mark.parametrize("rows", [(11,), (4, 4, 3), (3, 3, 3, 2)])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_forward_backward_equals_backward_on_the_whole_batch(rng, rows, backend):
    p = _problem(rng)
    y, h_n, grads = gdask.forward_backward(
        _lazy_x(p.x, rows), p.params, dy=p.dy, dh_n=da.from_array(p.dh_n), h0=p.h0,
        backend=backend,
    )  # fmt: skip
    assert grads.x.chunks == ((T,), rows, (I,)) and grads.h0.chunks == (rows, (H,))
    y_ref, h_ref, tape = grukern.forward_train(p.x, p.params, p.h0, backend=backend)
    ref = grukern.backward(tape, dy=p.dy, dh_n=p.dh_n)
    for name, got, want, kind in (
        ("y", y, y_ref, "output"), ("h_n", h_n, h_ref, "output"),
        ("dx", grads.x, ref.x, "grad"), ("dh0", grads.h0, ref.h0, "grad"),
    ):  # fmt: skip
        np.testing.assert_allclose(got.compute(), want, err_msg=name, **tolerance(np.float64, kind))
    for got, want in zip(grads.params.arrays(), ref.params.arrays(), strict=True):
        np.testing.assert_allclose(got, want, **tolerance(np.float64, "weight_grad", T * B))
    # The parameter gradients are the chunks' gradients summed pairwise in chunk order.
    parts = _chunk_gradients(p, rows, backend)
    while len(parts) > 1:
        pairs = [gdask._add(a, b) for a, b in zip(parts[::2], parts[1::2], strict=False)]
        parts = pairs + parts[2 * len(pairs) :]
    for got, want in zip(grads.params.arrays(), parts[0].arrays(), strict=True):
        assert_same_bits(got, want, "parameter gradient")


@pytest.mark.parametrize("batch_first", [False, True])
def test_forward_backward_with_lengths_dy_or_dh_n_only(rng, batch_first):
    p = _problem(rng, np.float32)
    lengths = _lengths(rng)
    x, dy = p.x, p.dy
    if batch_first:
        x, dy = (a.transpose(1, 0, 2).copy() for a in (x, dy))
    x_lazy = _lazy_x(x, (6, 5), batch_first=batch_first)
    for upstream in ({"dy": dy}, {"dh_n": p.dh_n}):
        _, _, grads = gdask.forward_backward(
            x_lazy, p.params, batch_first=batch_first, lengths=lengths, **upstream
        )
        assert grads.x.chunks == x_lazy.chunks
        _, _, tape = grukern.forward_train(x, p.params, batch_first=batch_first, lengths=lengths)
        ref = grukern.backward(tape, **upstream)
        np.testing.assert_allclose(grads.x.compute(), ref.x, **tolerance(np.float32, "grad"))
        np.testing.assert_allclose(grads.h0.compute(), ref.h0, **tolerance(np.float32, "grad"))
        for got, want in zip(grads.params.arrays(), ref.params.arrays(), strict=True):
            np.testing.assert_allclose(got, want, **tolerance(np.float32, "weight_grad", T * B))


def test_input_gradients_are_chunked_like_the_inputs(rng):
    p = _problem(rng)
    x = _lazy_x(p.x, (4, 4, 3), time_chunks=2, feature_chunks=2)  # merged for the kernels
    h0 = da.from_array(p.h0, chunks=(5, 2))
    _, _, grads = gdask.forward_backward(x, p.params, dy=p.dy, h0=h0)
    assert grads.x.chunks == x.chunks and grads.h0.chunks == h0.chunks
    _, _, tape = grukern.forward_train(p.x, p.params, p.h0)
    ref = grukern.backward(tape, dy=p.dy)
    np.testing.assert_allclose(grads.x.compute(), ref.x, **tolerance(np.float64, "grad"))
    np.testing.assert_allclose(grads.h0.compute(), ref.h0, **tolerance(np.float64, "grad"))


def test_forward_backward_is_reproducible(rng):
    p = _problem(rng, np.float32)
    x = _lazy_x(p.x, (3, 3, 3, 2))
    first = gdask.forward_backward(x, p.params, dy=p.dy)[2].params
    second = gdask.forward_backward(x, p.params, dy=p.dy)[2].params
    for a, b in zip(first.arrays(), second.arrays(), strict=True):
        assert_same_bits(a, b, "parameter gradient")


def test_inputs_are_not_modified(rng):
    p = _problem(rng)
    before = [a.copy() for a in (p.x, p.h0, p.dy, *p.params.arrays())]
    gdask.forward_backward(_lazy_x(p.x, (6, 5)), p.params, dy=p.dy, h0=p.h0)
    for a, b in zip(before, (p.x, p.h0, p.dy, *p.params.arrays()), strict=True):
        assert_same_bits(a, b, "input")


# -- errors at graph construction ----------------------------------------------------------------


def _bad_calls(p):
    x = _lazy_x(p.x, (6, 5))
    return [
        (TypeError, "x must be a dask.array.Array, got ndarray",
         lambda: gdask.forward(p.x, p.params)),
        (TypeError, "params must be a GRUParams", lambda: gdask.forward(x, {})),
        (TypeError, "x has dtype float32 but the params have dtype float64",
         lambda: gdask.forward(x.astype(np.float32), p.params)),
        (ValueError, "x has 2 features", lambda: gdask.forward(x[..., :2], p.params)),
        (ValueError, "one unbatched sequence: call grukern.forward",
         lambda: gdask.forward(x[:, 0], p.params)),
        (ValueError, f"h0 must have shape ({B}, {H}), got (1, {B}, {H})",
         lambda: gdask.forward(x, p.params, p.h0[None])),
        (TypeError, "h0 must be a numpy.ndarray or dask.array.Array, got list",
         lambda: gdask.forward(x, p.params, p.h0.tolist())),
        (ValueError, f"lengths must lie in [0, T] = [0, {T}]",
         lambda: gdask.forward(x, p.params, lengths=np.full(B, T + 1))),
        (ValueError, f"lengths must have shape ({B},)",
         lambda: gdask.forward(x, p.params, lengths=da.zeros(B + 1, dtype=int))),
        (TypeError, "lengths must have an integer dtype",
         lambda: gdask.forward(x, p.params, lengths=da.zeros(B))),
        (ValueError, "backend must be one of", lambda: gdask.forward(x, p.params, backend="jax")),
        (TypeError, "batch_first must be a bool",
         lambda: gdask.forward(x, p.params, batch_first=1)),
        (ValueError, "backward needs dy or dh_n", lambda: gdask.forward_backward(x, p.params)),
        (ValueError, f"dy must have shape ({T}, {B}, {H})",
         lambda: gdask.forward_backward(x, p.params, dy=p.dy[:, :1])),
        (ValueError, "unknown chunk sizes",
         lambda: gdask.forward(x[da.from_array(np.ones(T, bool))], p.params)),
    ]  # fmt: skip


def test_bad_input_fails_when_the_graph_is_built(rng):
    p = _problem(rng)
    for error, message, call in _bad_calls(p):
        with pytest.raises(error) as caught:
            call()
        assert message in str(caught.value), (message, str(caught.value))


def test_lengths_in_a_dask_array_are_checked_by_the_chunk_that_holds_them(rng):
    p = _problem(rng)
    lengths = da.from_array(np.full(B, T + 1), chunks=4)
    y, _ = gdask.forward(_lazy_x(p.x, (6, 5)), p.params, lengths=lengths)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T\]"):
        y.compute()


# -- a cluster of worker processes ----------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with cluster, distributed.Client(cluster) as client:
        yield client


def test_local_cluster_of_two_processes_gives_the_threaded_results(rng, client):
    p = _problem(rng, np.float32)
    lengths = _lengths(rng)
    x = _lazy_x(p.x, (4, 4, 3))
    y, h_n = gdask.forward(x, p.params, p.h0, lengths=lengths)
    y_ref, h_ref = grukern.forward(p.x, p.params, p.h0, lengths=lengths)
    y, h_n = client.compute([y, h_n], sync=True)
    np.testing.assert_allclose(y, y_ref, **tolerance(np.float32, "output"))
    np.testing.assert_allclose(h_n, h_ref, **tolerance(np.float32, "output"))
    # Each worker runs grukern on its own thread: its budget is the worker's, not all cores.
    assert set(client.run(grukern.get_num_threads).values()) == {1}

    _, _, grads = gdask.forward_backward(x, p.params, dy=p.dy, h0=p.h0, lengths=lengths)
    with dask.config.set(scheduler="threads"):
        _, _, threaded = gdask.forward_backward(x, p.params, dy=p.dy, h0=p.h0, lengths=lengths)
    np.testing.assert_allclose(
        grads.x.compute(), threaded.x.compute(), **tolerance(np.float32, "grad")
    )
    for got, want in zip(grads.params.arrays(), threaded.params.arrays(), strict=True):
        np.testing.assert_allclose(got, want, **tolerance(np.float32, "weight_grad", T * B))
