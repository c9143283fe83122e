"""The real-GPU check of the CUDA backend: correctness first, then timings against cuDNN.

One command on a GPU machine with numba-cuda, CuPy and torch (with cuDNN) installed:

    python benchmarks/gpu_check.py            # writes $OUT/gpu-<date>.json (or ./ without OUT)

1. Correctness: both algorithms, both variants, float64 and float32, with and without lengths,
   on fresh random inputs at several sizes (including persistent grids of many blocks), every
   array the backend allocates poisoned with NaN; outputs and every gradient against the NumPy
   reference under the tests' tolerance table, with NumPy inputs (NumPy results) and with CuPy
   inputs and device params (CuPy results, no copies). Each check runs CALLS_PER_CHECK times, so
   that the standard loops run issued from Python, captured as a CUDA graph, and replayed.
   Then segment=k on device arrays, grukern.GRU (2 bidirectional layers, lengths, dropout) on
   CuPy arrays against the same layer on the reference, and grukern.torch.GRU on CUDA tensors
   against torch.nn.GRU (cuDNN) with the same weights.
2. Timings, float32, reset_after=True: forward and forward+backward of grukern's standard
   algorithm (its loops replayed as CUDA graphs, and issued step by step from Python), of the
   persistent kernels, and of torch.nn.GRU (cuDNN) holding the same weights with TF32 off (the
   like-for-like row) and on, all on device arrays, for B in {1, 8, 64, 256} x H in
   {256, 512, 1024}, T = 100, I = H. CUDA events around each call after warm-up: the median of
   up to REPEATS calls (at most SECONDS_PER_TIMING each); and the host time of each call (until
   it returns, the GPU still working), whose median shows the per-step Python a graph removes.
3. The tables, printed last, and a JSON file grukern.results reads (records of kind "forward"
   and "forward+backward"; correctness results under "checks"), rewritten after every size so
   that a run cut short keeps what it measured. A size or runner that fails is recorded with its
   error and the run goes on; sizes not reached within --budget seconds are recorded as skipped.

`--simulate` runs part 1 at tiny sizes under numba's CUDA simulator (no GPU, no CuPy, no torch):
CI uses it to keep this script honest.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import faulthandler
import importlib.metadata
import json
import os
import pathlib
import statistics
import sys
import time
import traceback

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.helpers holds the tolerance table

T_TIMED = 100
BATCHES = (1, 8, 64, 256)
HIDDEN = (256, 512, 1024)
REPEATS = 20
SECONDS_PER_TIMING = 1.0
WARMUP = 3  # issued, captured, replayed: the timed calls replay a graph
CALLS_PER_CHECK = 3
# A run that reports no progress for this long (a kernel that never returns) prints every
# thread's stack and exits, so that a lease is not spent waiting on it.
WATCHDOG_SECONDS = 120
_watchdog: list[float] = []  # its seconds, once main() has armed it (not when simulated)

# (T, B, I, H, lengths or None): on a GPU the persistent kernels give H/⌈H/SMs⌉ units to each of
# many blocks, so H ≥ 200 spreads over ~100 or more blocks; H=1 and I≠H are the awkward edges.
CHECK_SIZES = [
    (7, 1, 5, 1, None),
    (20, 3, 33, 200, None),
    (12, 5, 64, 256, [12, 0, 5, 1, 11]),
    (6, 70, 48, 96, None),
]
SIMULATED_CHECK_SIZES = [(3, 2, 3, 5, None), (4, 3, 2, 6, [4, 0, 2])]
DTYPES = (np.float64, np.float32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--simulate", action="store_true", help="correctness only, simulated GPU")
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="directory for JSON")
    parser.add_argument(
        "--budget", type=float, default=360.0, help="seconds after which no new size is timed"
    )
    args = parser.parse_args(argv)
    deadline = time.perf_counter() + args.budget
    if args.simulate:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"  # before numba.cuda is first imported
    import grukern

    if "cuda" not in grukern.backends():
        print(f"backend 'cuda' is unavailable: {grukern._backends.unavailable_reason('cuda')}")
        return 1
    simulated = args.simulate
    if not simulated:
        _watchdog.append(WATCHDOG_SECONDS)
        progress(json.dumps(gpu_facts(), indent=1))
    checks = check_correctness(SIMULATED_CHECK_SIZES if simulated else CHECK_SIZES, simulated)
    checks.append(_recorded("segment=k", check_segments))
    checks.append(_recorded("grukern.GRU", check_layer))
    if not simulated:
        checks.append(_recorded("grukern.torch", check_torch_module))
    failed = [c for c in checks if not c["status"].startswith(("ok", "skipped"))]
    print(format_checks(checks), flush=True)
    if simulated:
        return 1 if failed else 0
    path = pathlib.Path(args.out) / f"gpu-{datetime.date.today().isoformat()}.json"
    records = []
    write_results(path, records, checks)
    for H in HIDDEN:
        for B in BATCHES:
            if time.perf_counter() > deadline:
                records.append(_skipped(B, H, f"not timed: past the --budget of {args.budget} s"))
            else:
                records += _time_size(B, H) + _time_step_pieces(B, H)
                _free_device_memory()
            write_results(path, records, checks)
    print(format_checks(checks))
    print(format_table(records))
    print(format_host_table(records))
    print(format_step_table(records))
    print(f"\nwritten: {path}")
    return 1 if failed else 0


def progress(message: str) -> None:
    """Print a line of progress, and give the watchdog (if armed) another WATCHDOG_SECONDS."""
    print(message, flush=True)
    if _watchdog:
        faulthandler.dump_traceback_later(_watchdog[0], exit=True)


def gpu_facts() -> dict:
    """The GPU, its driver and the libraries the timings depend on."""
    import cupy
    from numba import cuda

    from grukern.results import gpu_name

    device = cuda.get_current_device()
    facts = {
        "gpu": gpu_name(),
        "compute_capability": list(device.compute_capability),
        "multiprocessors": device.MULTIPROCESSOR_COUNT,
        "driver": cupy.cuda.runtime.driverGetVersion(),
        "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
    }
    for package in ("numba", "numba-cuda", "cupy-cuda13x", "cupy-cuda12x", "torch"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            facts[package] = importlib.metadata.version(package)
    with contextlib.suppress(ImportError):
        import torch

        facts["cudnn"] = torch.backends.cudnn.version()
    return facts


# ---------------------------------------------------------------------------------------------
# 1. Correctness


def check_correctness(sizes, simulated: bool) -> list[dict]:
    """Every algorithm x variant x dtype x size x input place, against the reference."""
    import grukern

    places = ["host"] if simulated else ["host", "device"]
    calls = 1 if simulated else CALLS_PER_CHECK
    checks = []
    for algorithm in ("standard", "persistent"):
        for reset_after in (True, False):
            for dtype in DTYPES:
                for T, B, I, H, lengths in sizes:
                    for place in places:
                        check = {"algorithm": algorithm, "reset_after": reset_after}
                        check.update(dtype=np.dtype(dtype).name, place=place)
                        check.update(T=T, B=B, I=I, H=H, lengths=lengths)
                        try:
                            with grukern.cuda_algorithm(algorithm):
                                check["status"] = _check_one(
                                    algorithm, T, B, I, H, lengths, reset_after, dtype, place,
                                    calls,
                                )  # fmt: skip
                        except Exception as error:  # recorded; the other checks still run
                            check["status"] = f"error: {error!r}"
                            check["traceback"] = traceback.format_exc(limit=6)
                        checks.append(check)
                        progress(f"check {_label(check)}: {check['status']}")
    return checks


def _check_one(algorithm, T, B, I, H, lengths, reset_after, dtype, place, calls) -> str:
    import grukern
    from grukern import _device
    from grukern._backends import _cuda_graphs
    from grukern._backends import cuda as cuda_backend
    from tests.helpers import assert_grads_close, fill_padding, make_problem, tolerance

    itemsize = np.dtype(dtype).itemsize
    for kernel in ("persistent_forward", "persistent_backward"):
        obstacle = cuda_backend._persistent_obstacle(B, H, itemsize, kernel)
        if algorithm == "persistent" and obstacle is not None:
            return f"skipped: {kernel}: {obstacle}"
    seed = int.from_bytes(os.urandom(4), "little")  # fresh inputs every run
    p = make_problem(np.random.default_rng(seed), T, B, I, H, dtype=dtype, reset_after=reset_after)
    lengths = None if lengths is None else np.array(lengths)
    if lengths is not None:  # padding is never read: NaN there must change nothing
        p = dataclasses.replace(
            p, x=fill_padding(p.x, lengths, np.nan), dy=fill_padding(p.dy, lengths, np.nan)
        )
    reference = _train("numpy", p.x, p.params, p.h0, p.dy, p.dh_n, lengths)
    xp = _device.array_module()
    inputs = (p.x, p.params, p.h0, p.dy, p.dh_n)
    if place == "device":
        inputs = (xp.asarray(p.x), p.params.to_device(), *(xp.asarray(a) for a in inputs[2:]))
    original_empty = cuda_backend._empty
    cuda_backend._empty = lambda shape, dtype: xp.full(shape, np.nan, dtype=dtype)
    before = dict(_cuda_graphs.counts)
    worst = 0.0
    try:
        for _ in range(calls):  # the standard loops: issued, then captured, then replayed
            y, h_n, grads = _train("cuda", *inputs, lengths)
            if place == "device":
                assert _device.is_device_array(y) and _device.is_device_array(grads.x)
                y, h_n = y.get(), h_n.get()
                grads = grukern.Gradients(grads.x.get(), grads.h0.get(), grads.params.to_host())
            else:
                assert isinstance(y, np.ndarray) and isinstance(grads.params.w_hh, np.ndarray)
            np.testing.assert_allclose(y, reference[0], **tolerance(dtype, "output"))
            np.testing.assert_allclose(h_n, reference[1], **tolerance(dtype, "output"))
            assert_grads_close(grads, reference[2], dtype, T, B)
            results = (y, h_n, grads.x, grads.h0, *grads.params.arrays())
            assert all(np.isfinite(a).all() for a in results), "NaN or inf in a result"
            if y.size:
                worst = max(worst, float(np.abs(y - reference[0]).max()))
            del y, h_n, grads, results  # their blocks go back to the pool for the next call
    finally:
        cuda_backend._empty = original_empty
    loops = {k: v - before.get(k, 0) for k, v in _cuda_graphs.counts.items()}
    loops = ", ".join(f"{v} {k}" for k, v in loops.items() if v)
    return f"ok (max |y - ref| = {worst:.1e}, seed {seed}; loops: {loops or 'none'})"


def check_segments() -> str:
    """forward_train(segment=3) on device arrays (padded lengths): every gradient against the
    reference's full tape."""
    import grukern
    from grukern import _device
    from tests.helpers import assert_grads_close, make_problem

    xp = _device.array_module()
    p = make_problem(np.random.default_rng(7), 10, 4, 6, 9)
    lengths = np.array([10, 3, 0, 7])
    x, h0, dy = (xp.asarray(a) for a in (p.x, p.h0, p.dy))
    tape = grukern.forward_train(x, p.params.to_device(), h0, backend="cuda", lengths=lengths,
                                 segment=3)[2]  # fmt: skip
    grads = grukern.backward(tape, dy=dy)
    tape_ref = grukern.forward_train(p.x, p.params, p.h0, backend="numpy", lengths=lengths)[2]
    host = grukern.Gradients(
        _device.to_host(grads.x), _device.to_host(grads.h0), grads.params.to_host()
    )
    assert_grads_close(host, grukern.backward(tape_ref, dy=p.dy), np.float64, 10, 4)
    return "ok"


def check_layer() -> str:
    """grukern.GRU, 2 bidirectional layers with dropout and padded lengths, on CuPy arrays (its
    weights moved once with to_device) against the same layer on the reference: outputs and
    every gradient."""
    import grukern
    from grukern import _device
    from tests.helpers import fill_padding, tolerance

    xp = _device.array_module()
    rng = np.random.default_rng(3)
    gru = grukern.GRU(9, 12, 2, bidirectional=True, dropout=0.3, dtype=np.float64, seed=0)
    x, dy, dh_n = (rng.standard_normal(shape) for shape in [(8, 5, 9), (8, 5, 24), (4, 5, 12)])
    lengths = np.array([8, 0, 3, 1, 6])
    x, dy = fill_padding(x, lengths, np.nan), fill_padding(dy, lengths, np.nan)

    def run(layer, place):
        y, h_n, tape = layer.forward_train(place(x), lengths=lengths, rng=np.random.default_rng(1))
        grads = layer.backward(tape, dy=place(dy), dh_n=place(dh_n))
        weights = (a for p in grads.params for a in p.arrays())
        return [_device.to_host(a) for a in (y, h_n, grads.x, grads.h0, *weights)]

    gru.backend = "numpy"
    expected = run(gru, np.asarray)
    gru.backend = "cuda"
    actual = run(gru.to_device(), xp.asarray)
    for ours, theirs in zip(actual, expected, strict=True):
        np.testing.assert_allclose(ours, theirs, **tolerance(np.float64, "weight_grad", 40))
    return "ok"


def check_torch_module() -> str:
    """grukern.torch.GRU on CUDA tensors (2 layers, bidirectional, packed unsorted lengths,
    float64) against torch.nn.GRU (cuDNN) with the same state dict: output, h_n and the
    gradients of x and every weight."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from grukern.torch import GRU

    T, B, I, H = 20, 6, 12, 16
    device = torch.device("cuda")
    ours = GRU(I, H, 2, bidirectional=True, dtype=torch.float64).to(device)
    theirs = torch.nn.GRU(I, H, 2, bidirectional=True, dtype=torch.float64).to(device)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(T, B, I, dtype=torch.float64, device=device)
    lengths = torch.tensor([20, 3, 11, 1, 20, 7])
    outputs = []
    for module in (ours, theirs):
        x_m = x.clone().requires_grad_()
        packed = pack_padded_sequence(x_m, lengths, enforce_sorted=False)
        y_packed, h_n = module(packed)
        y, _ = pad_packed_sequence(y_packed, total_length=T)
        (y.square().sum() + h_n.sum()).backward()
        grads = [x_m.grad, *(p.grad for p in module.parameters())]
        outputs.append([y, h_n, *grads])
    worst = max(float((a - b).abs().max()) for a, b in zip(*outputs, strict=True))
    return f"ok (max difference {worst:.1e})" if worst < 1e-9 else f"mismatch {worst}"


def _recorded(name: str, check) -> dict:
    """Run one named check; its status, or its error with a traceback."""
    record = {"algorithm": name, "reset_after": True, "place": "device", "lengths": True}
    try:
        record["status"] = check()
    except Exception as error:  # recorded; the rest of the run goes on
        record["status"] = f"error: {error!r}"
        record["traceback"] = traceback.format_exc(limit=6)
    progress(f"check {_label(record)}: {record['status']}")
    return record


def _train(backend, x, params, h0, dy, dh_n, lengths):
    import grukern

    y, h_n, tape = grukern.forward_train(x, params, h0, backend=backend, lengths=lengths)
    return y, h_n, grukern.backward(tape, dy=dy, dh_n=dh_n)


def _label(check: dict) -> str:
    if "T" not in check:
        return f"{check['algorithm']:<10} ({check['place']})"
    variant = "reset_after" if check["reset_after"] else "reset_before"
    size = f"T={check['T']} B={check['B']} I={check['I']} H={check['H']}"
    padded = " lengths" if check["lengths"] else ""
    return (
        f"{check['algorithm']:<10} {variant:<12} {check['dtype']:<7} {size}{padded} "
        f"({check['place']})"
    )


def format_checks(checks: list[dict]) -> str:
    passed = sum(c["status"].startswith("ok") for c in checks)
    skipped = sum(c["status"].startswith("skipped") for c in checks)
    lines = [f"\ncorrectness: {passed} ok, {skipped} skipped, of {len(checks)}"]
    for c in checks:
        if not c["status"].startswith("ok"):
            lines.append(f"  {_label(c)}: {c['status']}")
            lines += ["    " + line for line in c.get("traceback", "").splitlines()[-6:]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# 2. Timings

# grukern's runners: (name, cuda_algorithm, whether the standard loops are graphs).
GRUKERN_RUNNERS = (
    ("cuda-standard", "standard", True),
    ("cuda-standard-issued", "standard", False),
    ("cuda-persistent", "persistent", True),
)


def _time_size(B: int, H: int) -> list[dict]:
    """forward and forward+backward of grukern's runners and of cuDNN at one size."""
    import cupy
    import torch

    import grukern
    from grukern import peers
    from grukern._backends import _cuda_graphs
    from grukern._backends import cuda as cuda_backend

    rng = np.random.default_rng(B * 10_000 + H)
    params = grukern.init_params(H, H, seed=int(rng.integers(2**31)))
    shapes = ((T_TIMED, B, H), (B, H), (T_TIMED, B, H))
    host = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
    x, h0, dy = (cupy.asarray(a) for a in host)
    device_params = params.to_device()
    common = _common(B, H)
    records = []
    for runner, algorithm, graphs in GRUKERN_RUNNERS:

        def forward(algorithm=algorithm):
            with grukern.cuda_algorithm(algorithm):
                grukern.forward(x, device_params, h0, backend="cuda")

        def train(algorithm=algorithm):
            with grukern.cuda_algorithm(algorithm):
                tape = grukern.forward_train(x, device_params, h0, backend="cuda")[2]
                grukern.backward(tape, dy=dy)

        reason = None
        if algorithm == "persistent":
            for kernel in ("persistent_forward", "persistent_backward"):
                obstacle = cuda_backend._persistent_obstacle(B, H, 4, kernel)
                reason = reason or (obstacle and f"{kernel}: {obstacle}")
        _cuda_graphs.ENABLED = graphs
        try:
            for kind, fn in (("forward", forward), ("forward+backward", train)):
                if reason is None:
                    records.append(_timed(common, kind, runner, fn, _cupy_events))
                else:
                    error = f"not run: {reason}"
                    records.append({**common, "kind": kind, "runner": runner, "error": error})
        finally:
            _cuda_graphs.ENABLED = True
    _cuda_graphs.clear()

    module = peers.torch_gru(params).cuda()
    x_t, h0_t, dy_t = (torch.from_numpy(a).cuda() for a in host)

    def torch_forward():
        with torch.no_grad():
            module(x_t, h0_t[None])

    def torch_train():
        module.zero_grad(set_to_none=True)
        x_grad = x_t.detach().requires_grad_()
        module(x_grad, h0_t[None])[0].backward(dy_t)

    for runner, tf32 in (("torch-cudnn", False), ("torch-cudnn-tf32", True)):
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for kind, fn in (("forward", torch_forward), ("forward+backward", torch_train)):
            records.append(_timed(common, kind, runner, fn, _torch_events))
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    return records


def _time_step_pieces(B: int, H: int) -> list[dict]:
    """Microseconds of each piece of one standard step, float32, each captured STEP_REPEATS times
    in a graph and replayed (what bounds the standard loop): the forward's recurrent GEMM with
    W_hhᵀ as a transposed view and as a contiguous copy (_cuda_gemm.transposed picks), the
    backward's, and the fused pointwise forward kernel."""
    import cupy

    from grukern._backends import _cuda_gemm, _cuda_graphs
    from grukern._backends import _cuda_kernels as kernels
    from grukern._backends import cuda as cuda_backend

    rng = np.random.default_rng(B + H)
    w = cupy.asarray(rng.standard_normal((3 * H, H)).astype(np.float32))
    h, dgh = (cupy.asarray(rng.standard_normal(s).astype(np.float32)) for s in [(B, H), (B, 3 * H)])
    gh, dh = cupy.empty((B, 3 * H), np.float32), cupy.empty((B, H), np.float32)
    T = 2
    step_arrays = [cupy.zeros(s, np.float32) for s in [(T, B, 3 * H), (3 * H,)]]
    step_arrays += [cupy.full(B, T, np.int64)]
    step_arrays += [cupy.zeros(s, np.float32) for s in [(T + 1, B, H), (T, B, 3 * H), (T, B, H)]]
    gi, b_hh, lengths, states, gates, hn = step_arrays
    views = cuda_backend._views(gi, gh, b_hh, lengths, states, gates, hn)
    launch = cuda_backend._pointwise_launch(B * H)
    w_t_copy = cupy.ascontiguousarray(w.T)

    def pointwise():
        kernels.step_forward[(*launch, _cuda_graphs.numba_stream())](*views, 0)

    pieces = {
        "forward GEMM, W_hh transposed view": lambda: _cuda_gemm.gemm(h, w.T, gh),
        "forward GEMM, W_hh transposed copy": lambda: _cuda_gemm.gemm(h, w_t_copy, gh),
        "backward GEMM": lambda: _cuda_gemm.gemm(dgh, w, dh),
        "pointwise forward kernel": pointwise,
    }
    records = []
    for piece, fn in pieces.items():
        record = {**_common(B, H), "kind": "step", "runner": piece}
        try:
            record["microseconds"] = _graph_microseconds(fn)
        except Exception as error:  # recorded; the run goes on
            record["error"] = repr(error)
        records.append(record)
    progress(f"step pieces {_common(B, H)['size']}: " + ", ".join(
        f"{r['runner']} {r.get('microseconds', float('nan')):.2f} µs" for r in records
    ))  # fmt: skip
    return records


STEP_REPEATS = 100


def _graph_microseconds(fn) -> float:
    """Median µs per call of fn, captured STEP_REPEATS times in one graph, replayed 7 times."""
    import cupy

    fn()  # issued once first: the handle, the kernel's module
    cupy.cuda.Device().synchronize()
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        for _ in range(STEP_REPEATS):
            fn()
        graph = stream.end_capture()
    current = cupy.cuda.get_current_stream()
    graph.launch(current)
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    times = []
    for _ in range(7):
        start.record()
        graph.launch(current)
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) * 1e3 / STEP_REPEATS)
    return statistics.median(times)


def _common(B: int, H: int) -> dict:
    common = {"size": f"T={T_TIMED} B={B} I={H} H={H}", "T": T_TIMED, "B": B, "I": H, "H": H}
    return {**common, "dtype": "float32", "reset_after": True}


def _skipped(B: int, H: int, reason: str) -> dict:
    return {**_common(B, H), "kind": "forward", "runner": "all", "error": reason}


def _free_device_memory() -> None:
    import cupy
    import torch

    cupy.get_default_memory_pool().free_all_blocks()
    torch.cuda.empty_cache()


def _timed(common: dict, kind: str, runner: str, fn, events) -> dict:
    record = {**common, "kind": kind, "runner": runner}
    try:
        seconds, host_seconds = _median_seconds(fn, events)
    except Exception as error:  # recorded; the other timings still run
        progress(f"{runner} {kind} {common['size']}: {error!r}")
        return {**record, "error": repr(error), "traceback": traceback.format_exc(limit=6)}
    flops = 2.0 * common["T"] * common["B"] * 3 * common["H"] * (common["I"] + common["H"])
    flops *= 3 if kind == "forward+backward" else 1
    progress(
        f"{runner:<20} {kind:<17} {common['size']}: {seconds * 1e3:9.3f} ms "
        f"(host {host_seconds * 1e3:7.3f} ms)"
    )
    return {
        **record, "seconds": seconds, "host_seconds": host_seconds, "gflops": flops / seconds / 1e9
    }  # fmt: skip


def _median_seconds(fn, events) -> tuple[float, float]:
    """Median seconds per call between CUDA events, and median host seconds per call (until fn
    returns), after WARMUP untimed calls."""
    start, stop, elapsed_ms, synchronize = events()
    for _ in range(WARMUP):
        fn()
    synchronize()
    times, host_times = [], []
    budget_end = time.perf_counter() + SECONDS_PER_TIMING
    while len(times) < REPEATS and (len(times) < 3 or time.perf_counter() < budget_end):
        start.record()
        issued = time.perf_counter()
        fn()
        host_times.append(time.perf_counter() - issued)
        stop.record()
        stop.synchronize()
        times.append(elapsed_ms(start, stop) / 1e3)
    return statistics.median(times), statistics.median(host_times)


def _cupy_events():
    import cupy

    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    return start, stop, cupy.cuda.get_elapsed_time, cupy.cuda.Device().synchronize


def _torch_events():
    import torch

    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    return start, stop, lambda a, b: a.elapsed_time(b), torch.cuda.synchronize


# ---------------------------------------------------------------------------------------------
# 3. Results


def write_results(path: pathlib.Path, records: list[dict], checks: list[dict]) -> None:
    """grukern.results' format: {"machine": ..., "records": [...]}, plus the checks."""
    from grukern.results import machine_facts

    machine = {**machine_facts(), **gpu_facts(), "tf32": "off except runner torch-cudnn-tf32"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        json.dump({"machine": machine, "records": records, "checks": checks}, handle, indent=1)


def format_table(records: list[dict]) -> str:
    """One line per size and runner; "x cuDNN" is cuDNN's time (TF32 off) over the runner's
    (> 1: faster)."""
    lines = [
        "",
        f"{'size':<24} {'runner':<20} {'fwd ms':>9} {'x cuDNN':>8} {'fwd+bwd ms':>11} "
        f"{'x cuDNN':>8}",
    ]
    records = [r for r in records if r["kind"] != "step"]
    times = {(r["size"], r["runner"], r["kind"]): r.get("seconds") for r in records}  # None: failed
    for size in dict.fromkeys(r["size"] for r in records):
        for runner in dict.fromkeys(r["runner"] for r in records if r["size"] == size):
            cells = []
            for kind in ("forward", "forward+backward"):
                ours, cudnn = (
                    times.get((size, runner, kind)),
                    times.get((size, "torch-cudnn", kind)),
                )
                cells.append(f"{ours * 1e3:9.3f}" if ours else f"{'-':>9}")
                cells.append(f"{cudnn / ours:8.2f}" if ours and cudnn else f"{'-':>8}")
            lines.append(f"{size:<24} {runner:<20} {cells[0]} {cells[1]} {cells[2]:>11} {cells[3]}")
    return "\n".join(lines)


def format_host_table(records: list[dict]) -> str:
    """Host milliseconds per call of grukern's runners: what Python spends issuing the work."""
    lines = ["", f"{'size':<24} {'runner':<20} {'host fwd ms':>12} {'host fwd+bwd ms':>16}"]
    host = {(r["size"], r["runner"], r["kind"]): r.get("host_seconds") for r in records}
    for size in dict.fromkeys(r["size"] for r in records):
        for runner, _, _ in GRUKERN_RUNNERS:
            cells = [host.get((size, runner, kind)) for kind in ("forward", "forward+backward")]
            if any(cells):
                text = [f"{c * 1e3:.3f}" if c else "-" for c in cells]
                lines.append(f"{size:<24} {runner:<20} {text[0]:>12} {text[1]:>16}")
    return "\n".join(lines)


def format_step_table(records: list[dict]) -> str:
    """µs per piece of one standard step, one line per size."""
    steps = [r for r in records if r["kind"] == "step"]
    pieces = list(dict.fromkeys(r["runner"] for r in steps))
    lines = ["", "µs per step piece: " + " | ".join(pieces)]
    for size in dict.fromkeys(r["size"] for r in steps):
        cells = [
            next((f"{r['microseconds']:.2f}" for r in steps if r["size"] == size
                  and r["runner"] == piece and "microseconds" in r), "-")
            for piece in pieces
        ]  # fmt: skip
        lines.append(f"{size:<26} " + "  ".join(f"{c:>8}" for c in cells))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
