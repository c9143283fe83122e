"""The comparisons behind `python -m grukern bench` and the pytest-benchmark suite (benchmarks/).

One registry drives both: named problem sizes (GRID), and a Runner per grukern backend and per
installed peer (PyTorch nn.GRU, ONNX Runtime's GRU operator), all loaded with the same weights
and fed the same inputs. Every runner is checked against the float64 NumPy reference before it
is timed, and timing starts after a warm-up call, so JIT compilation is excluded.
"""

from __future__ import annotations

import dataclasses
import importlib.util
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
    name: str = ""

    @property
    def forward_flops(self) -> float:
        """2·T·B·3H·(I+H): the input and recurrent products (docs/math.md §8)."""
        return 2.0 * self.T * self.B * 3 * self.H * (self.I + self.H)

    @property
    def train_flops(self) -> float:
        """Forward plus backward, ≈ 3× the forward (docs/math.md §8)."""
        return 3.0 * self.forward_flops

    def __str__(self) -> str:
        variant = "" if self.reset_after else ", reset_after=False"
        label = f"{self.name}: " if self.name else ""
        return f"{label}T={self.T} B={self.B} I={self.I} H={self.H} {self.dtype}{variant}"


def named_problems(sizes: dict[str, tuple[int, int, int, int]]) -> dict[str, Problem]:
    """{name: Problem} from {name: (T, B, I, H)}, float32, reset_after=True."""
    return {name: Problem(T, B, I, H, name=name) for name, (T, B, I, H) in sizes.items()}


# The benchmark grid: long single sequence, tiny input, mid, large, wide batch, one step.
GRID = named_problems(
    {
        "G1": (1000, 1, 32, 32),
        "G2": (100, 32, 1, 32),
        "G3": (100, 32, 128, 128),
        "G4": (100, 64, 512, 512),
        "G5": (50, 256, 256, 256),
        "G6": (1, 1, 64, 64),
    }
)

# `python -m grukern bench` without --sizes: the grid sizes that time in seconds on 2 cores.
DEFAULT_SIZES = ("G1", "G2", "G3", "G6")


@dataclasses.dataclass(frozen=True)
class Runner:
    """One implementation on one set of weights. Arrays are time-major NumPy arrays.

    forward(x, h0) -> y (T, B, H); train(x, h0, dy) -> dL/dx after a forward pass and its
    backward with dL/dy = dy (None when the implementation has no backward).
    """

    name: str
    forward: Callable[[np.ndarray, np.ndarray], np.ndarray]
    train: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None


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


def reference(params: GRUParams, x, h0, dy) -> tuple[np.ndarray, np.ndarray]:
    """The float64 NumPy reference's y and dL/dx for these inputs."""
    as64 = [a.astype(np.float64) for a in (x, h0, dy)]
    y, _, tape = grukern.forward_train(as64[0], params.astype(np.float64), as64[1], backend="numpy")
    return y, grukern.backward(tape, dy=as64[2]).x


RUNNERS = ("numpy", "numba", "cuda", "torch", "onnxruntime", "openvino")


def runner_names(params: GRUParams) -> list[str]:
    """The runners that can run these params here: grukern backends, then peers."""
    return [name for name in RUNNERS if unavailable_reason(name, params) is None]


def unavailable_reason(name: str, params: GRUParams) -> str | None:
    """None if runner `name` can run these params here, else why not (one clause)."""
    if name in ("numpy", "numba", "cuda"):
        return grukern._backends.unavailable_reason(name)
    if name == "torch":
        if not _installed("torch"):
            return "torch is not installed"
        if not params.reset_after:
            return "torch.nn.GRU has no reset_after=False variant"
        return None
    if name in ("onnxruntime", "openvino"):  # the ONNX GRU operator (peers.onnx_gru_model)
        if not _installed(name):
            return f"{name} is not installed"
        if params.dtype != np.float32:
            return f"grukern runs {name}'s GRU operator in float32 only"
        return None
    return f"unknown runner (the runners are {', '.join(RUNNERS)})"


def make_runner(name: str, params: GRUParams) -> Runner:
    if name == "torch":
        return _torch_runner(params)
    if name == "onnxruntime":
        session = peers.onnx_gru_session(params, intra_op_threads=2)
        return Runner(name, lambda x, h0: peers.run_onnx(session, x, h0)[0], None)
    if name == "openvino":
        compiled = peers.openvino_gru(params, threads=2)
        return Runner(name, lambda x, h0: peers.run_openvino(compiled, x, h0)[0], None)
    return _grukern_runner(name, params)


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds per call in each of several timed rounds (each round the median of a timed
    loop), and their minimum, median and maximum."""

    rounds: tuple[float, ...]

    @property
    def min(self) -> float:
        return min(self.rounds)

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    @property
    def max(self) -> float:
        return max(self.rounds)

    @property
    def repeats(self) -> int:
        return len(self.rounds)

    @property
    def spread(self) -> float:
        """(max - min) / median: how much the rounds disagree."""
        return (self.max - self.min) / self.median


def time_call(
    fn: Callable[[], object], *, repeats: int = 5, round_seconds: float = 0.05, max_calls: int = 100
) -> Timing:
    """Time fn() after one untimed warm-up call: `repeats` rounds, each the median of at least 3
    calls and as many as fit in round_seconds (at most max_calls)."""
    fn()
    medians = []
    for _ in range(repeats):
        times = []
        start = time.perf_counter()
        while len(times) < 3 or (
            time.perf_counter() - start < round_seconds and len(times) < max_calls
        ):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        medians.append(statistics.median(times))
    return Timing(tuple(medians))


# Rounds that disagree by more than this (max - min over the median) make bench say so.
NOISY_SPREAD = 0.25


@dataclasses.dataclass
class Result:
    problem: Problem
    name: str
    forward: Timing
    train: Timing | None  # forward + backward, or None without a backward
    max_error: float  # max |y - y_ref| against the float64 reference

    @property
    def forward_ms(self) -> float:
        return 1e3 * self.forward.median

    @property
    def train_ms(self) -> float | None:
        return None if self.train is None else 1e3 * self.train.median

    @property
    def forward_gflops(self) -> float:
        return self.problem.forward_flops / (self.forward_ms * 1e6)

    def records(self) -> list[dict]:
        """This result as records of grukern.results' tidy table (forward, forward+backward)."""
        p = self.problem
        common = {"size": p.name or f"T={p.T} B={p.B} I={p.I} H={p.H}", "runner": self.name}
        common.update(T=p.T, B=p.B, I=p.I, H=p.H, dtype=p.dtype, reset_after=p.reset_after)
        timed = [("forward", self.forward_ms, p.forward_flops)]
        if self.train_ms is not None:
            timed.append(("forward+backward", self.train_ms, p.train_flops))
        return [
            {"kind": kind, **common, "seconds": ms / 1e3, "gflops": flops / (ms * 1e6)}
            for kind, ms, flops in timed
        ]


def check_runners(problems: list[Problem], names: list[str] | None) -> None:
    """Raise ValueError, naming each runner and why, if a requested runner cannot run one of
    the problems here (before any work is done)."""
    for problem in problems:
        params = make_inputs(dataclasses.replace(problem, T=1, B=1))[0]
        reasons = {n: unavailable_reason(n, params) for n in names or ()}
        refused = [f"{n} ({why})" for n, why in reasons.items() if why is not None]
        if refused:
            raise ValueError(
                f"cannot run {', '.join(refused)} on {problem}; available: "
                f"{', '.join(runner_names(params))}"
            )


def run(
    problems: list[Problem], names: list[str] | None = None, progress=None, repeats: int = 5
) -> list[Result]:
    """Check, then time, every requested runner on every problem (progress bar on stderr)."""
    progress = progress or sys.stderr
    check_runners(problems, names)
    plan = []
    for problem in problems:
        inputs = make_inputs(problem)
        plan.append((problem, inputs, names or runner_names(inputs[0])))
    total = sum(len(selected) for _, _, selected in plan)
    results = []
    for problem, inputs, selected in plan:
        y_ref, _ = reference(*inputs)
        for name in selected:
            _progress_bar(progress, len(results), total, f"{name} on {problem.name or problem}")
            runner = make_runner(name, inputs[0])
            results.append(_measure(problem, runner, inputs, y_ref, repeats))
    _progress_bar(progress, total, total, "done")
    print(file=progress)
    return results


def _measure(problem: Problem, runner: Runner, inputs, y_ref: np.ndarray, repeats: int) -> Result:
    _, x, h0, dy = inputs
    error = float(np.abs(runner.forward(x, h0) - y_ref).max())
    forward = time_call(lambda: runner.forward(x, h0), repeats=repeats)
    train = None
    if runner.train is not None:
        train = time_call(lambda: runner.train(x, h0, dy), repeats=repeats)
    return Result(problem, runner.name, forward, train, error)


def format_table(results: list[Result]) -> str:
    """One block per problem: times as min / median / max over the rounds, GFLOP/s from the
    median, and each runner's median time over grukern numba's (> 1: numba is faster)."""
    repeats = results[0].forward.repeats if results else 0
    lines = [
        f"grukern {grukern.__version__} bench; BLAS: {blas_description()}",
        f"Times in ms per call: min / median / max over {repeats} rounds (each the median of a "
        "timed loop); 'x numba' is the runner's median over numba's (> 1: numba is faster).",
    ]
    for problem in dict.fromkeys(r.problem for r in results):
        rows = [r for r in results if r.problem == problem]
        numba = next((r for r in rows if r.name == "numba"), None)
        lines += ["", str(problem)]
        lines.append(
            f"  {'runner':<12} {'forward ms':>26} {'GFLOP/s':>8} {'forward+backward ms':>26} "
            f"{'max |y - y_ref|':>15} {'forward x numba':>15} {'fwd+bwd x numba':>15}"
        )
        for r in rows:
            forward_ratio = f"{r.forward_ms / numba.forward_ms:.2f}" if numba else "-"
            train_ratio = "-"
            if numba and numba.train_ms and r.train_ms:
                train_ratio = f"{r.train_ms / numba.train_ms:.2f}"
            lines.append(
                f"  {r.name:<12} {_spread(r.forward):>26} {r.forward_gflops:8.2f} "
                f"{_spread(r.train):>26} {r.max_error:15.2e} {forward_ratio:>15} {train_ratio:>15}"
            )
    return "\n".join(lines)


def warnings_about(results: list[Result], load_average: float | None, cores: int) -> list[str]:
    """What makes these timings less trustworthy: rounds that disagree, a busy machine."""
    warnings = []
    noisy = [
        f"{r.name} {kind} on {r.problem.name or r.problem} ({timing.spread:.0%})"
        for r in results
        for kind, timing in (("forward", r.forward), ("forward+backward", r.train))
        if timing is not None and timing.spread > NOISY_SPREAD
    ]
    if noisy:
        warnings.append(
            f"the rounds disagree by more than {NOISY_SPREAD:.0%} of the median for: "
            + "; ".join(noisy)
            + ". Compare ratios measured in one run, or repeat with a larger --repeat."
        )
    if load_average is not None and load_average >= cores:
        warnings.append(
            f"the load average was {load_average:.1f} on {cores} cores when the run started: "
            "other processes were running, so times may be slower and noisier than on an idle "
            "machine."
        )
    return warnings


def _spread(timing: Timing | None) -> str:
    if timing is None:
        return "-"
    return f"{1e3 * timing.min:.3f} / {1e3 * timing.median:.3f} / {1e3 * timing.max:.3f}"


def plot(results: list[Result], path: str) -> None:
    """Save a bar chart of forward and forward+backward times per problem and runner."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise RuntimeError("plot needs matplotlib: pip install grukern[notebooks]") from error
    problems = list(dict.fromkeys(r.problem for r in results))
    names = list(dict.fromkeys(r.name for r in results))
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    width = 0.8 / len(names)
    for axis, kind in zip(axes, ("forward", "forward+backward"), strict=True):
        for n, name in enumerate(names):
            times = []
            for problem in problems:
                result = next(r for r in results if r.problem == problem and r.name == name)
                times.append(result.forward_ms if kind == "forward" else result.train_ms)
            positions = [i + n * width for i in range(len(problems))]
            axis.bar(positions, [t or 0 for t in times], width, label=name)
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(problems))])
        axis.set_xticklabels([p.name or f"T={p.T} B={p.B}\nI={p.I} H={p.H}" for p in problems])
        axis.set_yscale("log")
        axis.set_title(f"{kind} ({problems[0].dtype})")
        axis.grid(axis="y", which="both", alpha=0.3)
    axes[0].set_ylabel("time per call (ms, log scale)")
    axes[0].legend(title="runner")
    figure.suptitle("python -m grukern bench: lower is better")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def blas_description() -> str:
    """The BLAS libraries, their kernel (architecture) and threads, as threadpoolctl sees them."""
    from threadpoolctl import threadpool_info

    found = [
        f"{info['internal_api']} {info['version']} {info.get('architecture') or ''} "
        f"({info['num_threads']} threads)"
        for info in threadpool_info()
        if info["user_api"] == "blas"
    ]
    return "; ".join(found) or "none loaded"


def sgemm_gflops(n: int = 2048) -> float:
    """GFLOP/s of an n³ float32 matrix product with NumPy's BLAS (the machine's roofline)."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    return 2.0 * n**3 / time_call(lambda: a @ a, repeats=3, round_seconds=0.3).median / 1e9


def _grukern_runner(backend: str, params: GRUParams) -> Runner:
    def forward(x, h0):
        return grukern.forward(x, params, h0, backend=backend)[0]

    def train(x, h0, dy):
        _, _, tape = grukern.forward_train(x, params, h0, backend=backend)
        return grukern.backward(tape, dy=dy).x

    return Runner(backend, forward, train)


def _torch_runner(params: GRUParams) -> Runner:
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
        return x_t.grad.numpy()

    return Runner("torch", forward, train)


def _progress_bar(stream, done: int, total: int, label: str, width: int = 30) -> None:
    filled = width * done // max(total, 1)
    stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:<40}")
    stream.flush()


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
