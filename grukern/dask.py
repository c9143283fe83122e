"""grukern on Dask arrays: a batch sharded into chunks, one grukern call per chunk.

    import dask, dask.array as da
    import grukern, grukern.dask

    params = grukern.init_params(128, 128, seed=0)
    x = da.random.default_rng(0).standard_normal(
        (100, 8192, 128), chunks=(100, 1024, 128), dtype="float32"
    )                                            # (T, B, I), 8 chunks of 1024 sequences
    y, h_n = grukern.dask.forward(x, params)     # lazy: y (T, B, H) chunked like x, h_n (B, H)
    y, h_n = dask.compute(y, h_n)                # or persist, to_zarr, a distributed Client

The recurrence is sequential in time and every step reads all of a row's features, so a task
needs all T steps and all I features of its rows: chunks along time or features are merged
first (rechunk), and only the batch axis is split. Rows are independent, so chunk k of y and h_n
is grukern.forward on chunk k of x and the tasks exchange nothing. The params enter the graph
once, as one key that every task reads: a distributed scheduler sends them to each worker once
per graph, not once per task.

Threads: on the threaded scheduler the tasks of one process share grukern's process-wide thread
budget (grukern.set_num_threads). In a dask.distributed worker a task sets grukern's budget to
the worker's thread count, so N worker processes of k threads use N·k cores, not N times all.

Needs the optional extra grukern[dask] (dask[array]; dask.distributed for clusters).
"""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np

import grukern
from grukern import _backends
from grukern._arguments import (
    check_batch_first,
    check_dtype,
    check_sequence_shape,
    checked_lengths,
)
from grukern.params import GRUParams
from grukern.tape import Gradients, Layout

try:
    import dask
    import dask.array as da
except ImportError as error:  # pragma: no cover - the extra is installed wherever tests run
    raise ImportError(
        "grukern.dask needs dask's arrays: pip install 'grukern[dask]' (or 'dask[array]')"
    ) from error


def forward(
    x,
    params: GRUParams,
    h0=None,
    *,
    backend: str = "auto",
    batch_first: bool = False,
    lengths=None,
):
    """Lazy grukern.forward over a dask array x. Returns dask arrays (y, h_n).

    x: dask.array.Array (T, B, I), or (B, T, I) with batch_first=True; any chunks along B
    (chunks along T or I are merged: the recurrence needs a row's whole sequence).
    h0 (B, H) and lengths (B,): None, NumPy or dask arrays, as for grukern.forward.
    y: (T, B, H) or (B, T, H), chunked like x along B; h_n: (B, H), chunked the same along B.
    Each chunk's result is grukern.forward of its rows: equal to one call on the whole batch to
    rounding, and bitwise where that call runs the same kernel path.
    """
    shards = _Shards.check(x, params, batch_first)
    inputs = shards.inputs(x, h0, lengths)
    shared = _shared(params)
    _backends.resolve(backend)  # an unknown or unavailable backend fails here, not in a task
    outputs = [
        dask.delayed(_forward_rows, nout=2, pure=True)(*rows, shared, backend, batch_first)
        for rows in inputs
    ]
    return (
        shards.sequences([y for y, _ in outputs], shards.H),
        shards.states([h_n for _, h_n in outputs]),
    )


def forward_backward(
    x,
    params: GRUParams,
    dy=None,
    dh_n=None,
    h0=None,
    *,
    backend: str = "auto",
    batch_first: bool = False,
    lengths=None,
):
    """One data-parallel training step: forward_train and backward on every chunk of rows.

    Arguments as forward, plus dL/dy (y's shape) and dL/dh_n ((B, H)), NumPy or dask arrays,
    at least one of them. Runs the graph (dask.persist), because the parameter gradients are
    sums over all chunks. Returns (y, h_n, Gradients): y and h_n are dask arrays chunked like x
    along B, Gradients.x has x's chunks and Gradients.h0 ((B, H)) a dask h0's chunks (else x's
    along B), all held in memory (or on the workers). Gradients.params is a NumPy GRUParams,
    the chunks' gradients summed pairwise in chunk order (((g0 + g1) + (g2 + g3)) + ...), so a
    given chunking gives the same bits.
    """
    shards = _Shards.check(x, params, batch_first)
    if dy is None and dh_n is None:
        raise ValueError("backward needs dy or dh_n (or both); both are None")
    inputs = shards.inputs(x, h0, lengths)
    upstream = zip(
        shards.sequence_chunks("dy", dy, shards.H),
        shards.state_chunks("dh_n", dh_n),
        strict=True,
    )
    shared = _shared(params)
    _backends.resolve(backend)
    outputs = [
        dask.delayed(_train_rows, nout=5, pure=True)(*rows, *up, shared, backend, batch_first)
        for rows, up in zip(inputs, upstream, strict=True)
    ]
    y, h_n, dx, dh0 = (
        shards.sequences([out[0] for out in outputs], shards.H),
        shards.states([out[1] for out in outputs]),
        shards.sequences([out[2] for out in outputs], shards.I).rechunk(x.chunks),
        shards.states([out[3] for out in outputs]),
    )
    if isinstance(h0, da.Array):
        dh0 = dh0.rechunk(h0.chunks)
    total = _pairwise_sum([out[4] for out in outputs])
    y, h_n, dx, dh0, total = dask.persist(y, h_n, dx, dh0, total)
    return y, h_n, Gradients(x=dx, h0=dh0, params=total.compute())


# -- the tasks ---------------------------------------------------------------------------------


def _forward_rows(x, h0, lengths, params, backend, batch_first):
    """One chunk of rows: (y, h_n) of grukern.forward."""
    _use_worker_threads()
    return grukern.forward(x, params, h0, backend=backend, batch_first=batch_first, lengths=lengths)


def _train_rows(x, h0, lengths, dy, dh_n, params, backend, batch_first):
    """One chunk of rows: (y, h_n, dx, dh0, parameter gradients) of forward_train + backward."""
    _use_worker_threads()
    y, h_n, tape = grukern.forward_train(
        x, params, h0, backend=backend, batch_first=batch_first, lengths=lengths
    )
    grads = grukern.backward(tape, dy=dy, dh_n=dh_n)
    return y, h_n, grads.x, grads.h0, grads.params


def _use_worker_threads() -> None:
    """Inside a dask.distributed worker, grukern's thread budget is the worker's thread count."""
    if "distributed" not in sys.modules:  # no worker can run in this process
        return
    from distributed import get_worker

    try:
        threads = get_worker().state.nthreads
    except ValueError:  # not called from a worker's task (the threaded scheduler)
        return
    if grukern.get_num_threads() != threads:
        grukern.set_num_threads(threads)


def _add(a: GRUParams, b: GRUParams) -> GRUParams:
    return GRUParams(*(p + q for p, q in zip(a.arrays(), b.arrays(), strict=True)),
                     reset_after=a.reset_after)  # fmt: skip


def _pairwise_sum(parts: list):
    """The delayed sum of delayed GRUParams, pairwise in list order: a tree of depth log2(n)."""
    while len(parts) > 1:
        pairs = [
            dask.delayed(_add, pure=True)(a, b)
            for a, b in zip(parts[::2], parts[1::2], strict=False)
        ]
        parts = pairs + parts[2 * len(pairs) :]  # an odd last part joins the next level
    return parts[0]


def _shared(params: GRUParams):
    """params as one graph key that every task reads (sent to each worker once)."""
    return dask.delayed(params, name=f"grukern-params-{dask.base.tokenize(params)}",
                        traverse=False)  # fmt: skip


# -- sharding ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Shards:
    """How x's batch is split: chunk k holds rows[k] rows of every sequence.

    T, I, H: the problem's sizes; batch_axis: x's batch axis (1 time-major, 0 batch-first).
    """

    T: int
    I: int
    H: int
    rows: tuple[int, ...]
    dtype: np.dtype
    batch_first: bool

    @classmethod
    def check(cls, x, params, batch_first) -> _Shards:
        """Check x and params as grukern.forward does, from x's metadata (nothing computed)."""
        if not isinstance(x, da.Array):
            raise TypeError(
                f"x must be a dask.array.Array, got {type(x).__name__} "
                "(for a NumPy array call grukern.forward)"
            )
        if not isinstance(params, GRUParams):
            raise TypeError(f"params must be a GRUParams, got {type(params).__name__}")
        params.validate()
        if params.on_device:
            raise TypeError("grukern.dask runs host params; call params.to_host() first")
        check_batch_first(batch_first)
        check_dtype("x", x.dtype, params.dtype)
        check_sequence_shape("x", x.shape, params.input_size, batch_first, "params.input_size")
        if x.ndim != 3:
            raise ValueError(
                f"x must have 3 dimensions to be sharded along its batch, got shape {x.shape} "
                "(one unbatched sequence: call grukern.forward)"
            )
        if any(math.isnan(n) for n in x.shape):
            raise ValueError(
                f"x has unknown chunk sizes (shape {x.shape}); call x.compute_chunk_sizes() first"
            )
        batch_axis = 0 if batch_first else 1
        T = x.shape[1 - batch_axis]
        return cls(
            T=T, I=params.input_size, H=params.hidden_size, rows=x.chunks[batch_axis],
            dtype=params.dtype, batch_first=bool(batch_first),
        )  # fmt: skip

    @property
    def B(self) -> int:
        return sum(self.rows)

    @property
    def batch_axis(self) -> int:
        return 0 if self.batch_first else 1

    def sequence_shape(self, rows: int, features: int) -> tuple[int, int, int]:
        """(T, rows, features), or (rows, T, features) batch-first."""
        return (rows, self.T, features) if self.batch_first else (self.T, rows, features)

    def inputs(self, x, h0, lengths) -> list[tuple]:
        """(x, h0, lengths) of every chunk: delayed pieces, None where an argument is None."""
        return list(
            zip(
                self.sequence_chunks("x", x, self.I),
                self.state_chunks("h0", h0),
                self.length_chunks(lengths),
                strict=True,
            )
        )

    def sequence_chunks(self, name, value, features: int) -> list:
        """A (T, B, k) or (B, T, k) argument split into the chunks' rows, whole along T and k."""
        if value is None:
            return [None] * len(self.rows)
        value = self._lazy(name, value, self.sequence_shape(self.B, features))
        return self._split(value, {self.batch_axis: self.rows, 1 - self.batch_axis: -1, 2: -1})

    def state_chunks(self, name, value) -> list:
        """A (B, H) argument split into the chunks' rows."""
        if value is None:
            return [None] * len(self.rows)
        return self._split(self._lazy(name, value, (self.B, self.H)), (self.rows, -1))

    def length_chunks(self, lengths) -> list:
        """lengths (B,) split into the chunks' rows; a NumPy array's values are checked now,
        a dask array's by each chunk's grukern call."""
        if lengths is None:
            return [None] * len(self.rows)
        if isinstance(lengths, np.ndarray):
            lengths = checked_lengths(lengths, (self.T, self.B, self.I), Layout(self.batch_first))
            lengths = da.from_array(lengths, chunks=-1)
        elif not isinstance(lengths, da.Array):
            raise TypeError(
                "lengths must be a numpy.ndarray or dask.array.Array of integers, got "
                f"{type(lengths).__name__}"
            )
        if lengths.dtype.kind not in "iu":
            raise TypeError(f"lengths must have an integer dtype, got {lengths.dtype}")
        if lengths.shape != (self.B,):
            raise ValueError(
                f"lengths must have shape ({self.B},) (one per batch row), got {lengths.shape}"
            )
        return self._split(lengths, (self.rows,))

    def sequences(self, chunks: list, features: int):
        """One dask array (T, B, k) or (B, T, k) from the chunks' delayed results."""
        return da.concatenate(
            [
                da.from_delayed(chunk, shape=self.sequence_shape(rows, features), dtype=self.dtype)
                for rows, chunk in zip(self.rows, chunks, strict=True)
            ],
            axis=self.batch_axis,
        )

    def states(self, chunks: list):
        """One dask array (B, H) from the chunks' delayed results."""
        return da.concatenate(
            [
                da.from_delayed(chunk, shape=(rows, self.H), dtype=self.dtype)
                for rows, chunk in zip(self.rows, chunks, strict=True)
            ],
            axis=0,
        )

    def _lazy(self, name, value, shape):
        """A NumPy or dask array argument as a dask array, its dtype and shape checked."""
        if isinstance(value, np.ndarray):
            value = da.from_array(value, chunks=-1)
        elif not isinstance(value, da.Array):
            raise TypeError(
                f"{name} must be a numpy.ndarray or dask.array.Array, got {type(value).__name__}"
            )
        check_dtype(name, value.dtype, self.dtype)
        if value.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {value.shape}")
        return value

    @staticmethod
    def _split(value, chunks) -> list:
        """The blocks of value rechunked to `chunks`, as delayed objects in batch order."""
        return list(value.rechunk(chunks).to_delayed().ravel())
