"""`python -m grukern bench`: every available backend and installed peer on one problem.

Each implementation is first checked against the float64 NumPy reference on the same inputs,
then timed after a warm-up call (so JIT compilation is excluded): the median of repeated calls.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

import grukern
from grukern import peers
from grukern.params import GRUParams


@dataclasses.dataclass(frozen=True)
class Problem:
    T: int
    B: int
    I: int
    H: int
    dtype: str = "float32"
    reset_after: bool = True

    @property
    def forward_flops(self) -> float:
        """2·T·B·3H·(I+H): the input and recurrent products (docs/math.md §FLOPs)."""
        return 2.0 * self.T * self.B * 3 * self.H * (self.I + self.H)

    def __str__(self) -> str:
        variant = "" if self.reset_after else ", reset_after=False"
        return f"T={self.T} B={self.B} I={self.I} H={self.H} {self.dtype}{variant}"


DEFAULT_PROBLEM = Problem(T=100, B=32, I=64, H=128)


@dataclasses.dataclass
class Result:
    name: str
    forward_ms: float | None = None
    train_ms: float | None = None  # forward_train + backward (or the peer's autograd step)
    max_error: float | None = None  # max |y - y_ref| against the float64 reference


def time_call(fn: Callable[[], object], *, min_seconds: float = 0.2, max_calls: int = 200) -> float:
    """Median seconds per call of fn(), after one untimed warm-up call."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_seconds and len(times) < max_calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def make_inputs(problem: Problem, seed: int = 0):
    """params, x (T, B, I), h0 (B, H) and an upstream gradient dy (T, B, H)."""
    rng = np.random.default_rng(seed)
    params = grukern.init_params(
        problem.I, problem.H, dtype=problem.dtype, seed=seed, reset_after=problem.reset_after
    )
    x = rng.standard_normal((problem.T, problem.B, problem.I)).astype(problem.dtype)
    h0 = rng.standard_normal((problem.B, problem.H)).astype(problem.dtype)
    dy = rng.standard_normal((problem.T, problem.B, problem.H)).astype(problem.dtype)
    return params, x, h0, dy


def implementations(params: GRUParams):
    """(name, forward, train step) for every grukern backend and every installed peer.

    forward(x, h0) -> y (T, B, H); train(x, h0, dy) runs a forward pass and its backward.
    """
    for backend in grukern.backends():

        def forward(x, h0, backend=backend):
            return grukern.forward(x, params, h0, backend=backend)[0]

        def train(x, h0, dy, backend=backend):
            _, _, tape = grukern.forward_train(x, params, h0, backend=backend)
            return grukern.backward(tape, dy=dy)

        yield backend, forward, train
    if params.reset_after and _importable("torch"):
        yield "torch", *_torch_runners(params)
    if params.dtype == np.float32 and _importable("onnxruntime"):
        session = peers.onnx_gru_session(params, intra_op_threads=0)
        yield "onnxruntime", lambda x, h0: peers.run_onnx(session, x, h0)[0], None


def run(problem: Problem = DEFAULT_PROBLEM, progress=sys.stderr) -> list[Result]:
    params, x, h0, dy = make_inputs(problem)
    y_ref, _ = grukern.forward(
        x.astype(np.float64), params.astype(np.float64), h0.astype(np.float64), backend="numpy"
    )
    results = []
    for name, forward, train in implementations(params):
        print(f"  timing {name} ...", file=progress, flush=True)
        result = Result(name, max_error=float(np.abs(forward(x, h0) - y_ref).max()))
        result.forward_ms = 1e3 * time_call(lambda forward=forward: forward(x, h0))
        if train is not None:
            result.train_ms = 1e3 * time_call(lambda train=train: train(x, h0, dy))
        results.append(result)
    return results


def format_table(problem: Problem, results: list[Result]) -> str:
    header = f"{'implementation':<14} {'forward ms':>11} {'GFLOP/s':>8} {'fwd+bwd ms':>11} "
    header += f"{'max |y - ref64|':>16}"
    lines = [
        f"grukern {grukern.__version__} bench: {problem}",
        f"BLAS: {blas_description()}",
        header,
        "-" * len(header),
    ]
    for r in results:
        gflops = problem.forward_flops / (r.forward_ms * 1e6)
        train = f"{r.train_ms:11.3f}" if r.train_ms is not None else f"{'-':>11}"
        lines.append(f"{r.name:<14} {r.forward_ms:11.3f} {gflops:8.2f} {train} {r.max_error:16.2e}")
    return "\n".join(lines)


def blas_description() -> str:
    """The BLAS library, its kernel (architecture) and thread count, as threadpoolctl sees them."""
    from threadpoolctl import threadpool_info

    found = [
        f"{info['internal_api']} {info['version']} {info.get('architecture') or ''} "
        f"({info['num_threads']} threads)"
        for info in threadpool_info()
        if info["user_api"] == "blas"
    ]
    return "; ".join(found) or "none loaded"


def _torch_runners(params: GRUParams):
    import torch

    module = peers.torch_gru(params)

    def forward(x, h0):
        with torch.no_grad():
            return module(torch.from_numpy(x), torch.from_numpy(h0)[None])[0].numpy()

    def train(x, h0, dy):
        module.zero_grad(set_to_none=True)
        x_t = torch.from_numpy(x).requires_grad_()
        y_t, _ = module(x_t, torch.from_numpy(h0)[None])
        y_t.backward(torch.from_numpy(dy))
        return x_t.grad

    return forward, train


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
