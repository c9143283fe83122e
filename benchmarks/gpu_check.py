"""The real-GPU check of the CUDA backend: correctness first, then timings against cuDNN.

One command on a GPU machine with numba-cuda, CuPy and torch (with cuDNN) installed:

    python benchmarks/gpu_check.py            # writes $OUT/gpu-<date>.json (or ./ without OUT)

1. Correctness, float64: both algorithms, both variants, with and without lengths, on fresh
   random inputs at several sizes (including persistent grids of many blocks), every array the
   backend allocates poisoned with NaN; outputs and every gradient against the NumPy reference
   under the tests' tolerance table, once with NumPy inputs (NumPy results) and once with CuPy
   inputs and device params (CuPy results, no copies). Then grukern.torch.GRU on CUDA tensors
   (2 bidirectional layers, packed lengths) against torch.nn.GRU with the same weights.
2. Timings, float32, reset_after=True: forward and forward+backward of grukern's "standard" and
   "persistent" algorithms and of torch.nn.GRU (cuDNN) holding the same weights, all on device
   arrays, for B in {1, 8, 64, 256} x H in {256, 512, 1024}, T = 100, I = H. CUDA events around
   each call after warm-up; the median of up to REPEATS calls (at most SECONDS_PER_TIMING each).
   TF32 is off for torch, so both sides compute in full float32.
3. The table, printed last, and a JSON file grukern.results reads (records of kind "forward" and
   "forward+backward"; correctness results under "checks"). A size or runner that fails is
   recorded with its error and the run goes on.

`--simulate` runs part 1 at tiny sizes under numba's CUDA simulator (no GPU, no CuPy, no torch):
CI uses it to keep this script honest.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
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
REPEATS = 30
SECONDS_PER_TIMING = 2.0
WARMUP = 3

# (T, B, I, H, lengths or None): on a GPU the persistent kernel gives H/⌈H/SMs⌉ units to each of
# many blocks, so H ≥ 200 spreads over ~100 or more blocks; H=1 and I≠H are the awkward edges.
CHECK_SIZES = [
    (7, 1, 5, 1, None),
    (20, 3, 33, 200, None),
    (12, 5, 64, 256, [12, 0, 5, 1, 11]),
    (6, 70, 48, 96, None),
]
SIMULATED_CHECK_SIZES = [(3, 2, 3, 5, None), (4, 3, 2, 6, [4, 0, 2])]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--simulate", action="store_true", help="correctness only, simulated GPU")
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="directory for JSON")
    args = parser.parse_args(argv)
    if args.simulate:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"  # before numba.cuda is first imported
    import grukern

    if "cuda" not in grukern.backends():
        print(f"backend 'cuda' is unavailable: {grukern._backends.unavailable_reason('cuda')}")
        return 1
    checks = check_correctness(SIMULATED_CHECK_SIZES if args.simulate else CHECK_SIZES)
    if not args.simulate:
        checks.append(check_torch_module())
    failed = [c for c in checks if not c["status"].startswith(("ok", "skipped"))]
    if args.simulate:
        print(format_checks(checks))
        return 1 if failed else 0
    records = time_against_cudnn()
    path = pathlib.Path(args.out) / f"gpu-{datetime.date.today().isoformat()}.json"
    write_results(path, records, checks)
    print(format_checks(checks))
    print(format_table(records))
    print(f"\nwritten: {path}")
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------
# 1. Correctness


def check_correctness(sizes) -> list[dict]:
    """Every algorithm x variant x size x input place, against the float64 reference."""
    import grukern
    from grukern import _device

    places = ["host"] if _device.simulated() else ["host", "device"]
    checks = []
    for algorithm in ("standard", "persistent"):
        for reset_after in (True, False):
            for T, B, I, H, lengths in sizes:
                for place in places:
                    check = {"algorithm": algorithm, "reset_after": reset_after, "place": place}
                    check.update(T=T, B=B, I=I, H=H, lengths=lengths)
                    try:
                        with grukern.cuda_algorithm(algorithm):
                            check["status"] = _check_one(
                                algorithm, T, B, I, H, lengths, reset_after, place
                            )
                    except Exception as error:  # recorded; the other checks still run
                        check["status"] = f"error: {error!r}"
                        check["traceback"] = traceback.format_exc(limit=4)
                    checks.append(check)
                    print(f"check {_label(check)}: {check['status']}", flush=True)
    return checks


def _check_one(algorithm, T, B, I, H, lengths, reset_after, place) -> str:
    import grukern
    from grukern import _device
    from grukern._backends import cuda as cuda_backend
    from tests.helpers import assert_grads_close, fill_padding, make_problem, tolerance

    obstacle = cuda_backend._persistent_obstacle(B, H, np.dtype(np.float64).itemsize)
    if algorithm == "persistent" and obstacle is not None:
        return f"skipped: {obstacle}"
    seed = int.from_bytes(os.urandom(4), "little")  # fresh inputs every run
    p = make_problem(np.random.default_rng(seed), T, B, I, H, reset_after=reset_after)
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
    try:
        y, h_n, grads = _train("cuda", *inputs, lengths)
    finally:
        cuda_backend._empty = original_empty
    if place == "device":
        assert _device.is_device_array(y) and _device.is_device_array(grads.x)
        y, h_n = y.get(), h_n.get()
        grads = grukern.Gradients(grads.x.get(), grads.h0.get(), grads.params.to_host())
    else:
        assert isinstance(y, np.ndarray) and isinstance(grads.params.w_hh, np.ndarray)
    np.testing.assert_allclose(y, reference[0], **tolerance(np.float64, "output"))
    np.testing.assert_allclose(h_n, reference[1], **tolerance(np.float64, "output"))
    assert_grads_close(grads, reference[2], np.float64, T, B)
    results = (y, h_n, grads.x, grads.h0, *grads.params.arrays())
    assert all(np.isfinite(a).all() for a in results), "NaN or inf in a result"
    error = float(np.abs(y - reference[0]).max()) if y.size else 0.0
    return f"ok (max |y - ref| = {error:.1e}, seed {seed})"


def check_torch_module() -> dict:
    """grukern.torch.GRU on CUDA tensors (2 layers, bidirectional, packed unsorted lengths,
    float64) against torch.nn.GRU (cuDNN) with the same state dict: output, h_n and the
    gradients of x and every weight. This exercises grukern.GRU on CuPy arrays as well."""
    T, B, I, H = 20, 6, 12, 16
    check = {"algorithm": "grukern.torch", "reset_after": True, "place": "CUDA tensors"}
    check.update(T=T, B=B, I=I, H=H, lengths=True)
    try:
        import torch
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        from grukern.torch import GRU

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
        check["status"] = (
            f"ok (max difference {worst:.1e})" if worst < 1e-9 else f"mismatch {worst}"
        )
    except Exception as error:  # recorded; the rest of the run goes on
        check["status"] = f"error: {error!r}"
        check["traceback"] = traceback.format_exc(limit=4)
    print(f"check {_label(check)}: {check['status']}", flush=True)
    return check


def _train(backend, x, params, h0, dy, dh_n, lengths):
    import grukern

    y, h_n, tape = grukern.forward_train(x, params, h0, backend=backend, lengths=lengths)
    return y, h_n, grukern.backward(tape, dy=dy, dh_n=dh_n)


def _label(check: dict) -> str:
    variant = "reset_after" if check["reset_after"] else "reset_before"
    size = f"T={check['T']} B={check['B']} I={check['I']} H={check['H']}"
    padded = " lengths" if check["lengths"] else ""
    return f"{check['algorithm']:<10} {variant:<12} {size}{padded} ({check['place']})"


def format_checks(checks: list[dict]) -> str:
    passed = sum(c["status"].startswith("ok") for c in checks)
    skipped = sum(c["status"].startswith("skipped") for c in checks)
    lines = [f"\ncorrectness (float64): {passed} ok, {skipped} skipped, of {len(checks)}"]
    lines += [f"  {_label(c)}: {c['status']}" for c in checks if not c["status"].startswith("ok")]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# 2. Timings


def time_against_cudnn() -> list[dict]:
    import cupy
    import torch

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    records = []
    for H in HIDDEN:
        for B in BATCHES:
            records += _time_size(B, H)
            cupy.get_default_memory_pool().free_all_blocks()
            torch.cuda.empty_cache()
    return records


def _time_size(B: int, H: int) -> list[dict]:
    """forward and forward+backward of both algorithms and of cuDNN at one size."""
    import cupy
    import torch

    import grukern
    from grukern import peers
    from grukern._backends import cuda as cuda_backend

    rng = np.random.default_rng(B * 10_000 + H)
    params = grukern.init_params(H, H, seed=int(rng.integers(2**31)))
    shapes = ((T_TIMED, B, H), (B, H), (T_TIMED, B, H))
    host = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
    x, h0, dy = (cupy.asarray(a) for a in host)
    device_params = params.to_device()
    common = {"size": f"T={T_TIMED} B={B} I={H} H={H}", "T": T_TIMED, "B": B, "I": H, "H": H}
    common.update(dtype="float32", reset_after=True)
    records = []
    for algorithm in ("standard", "persistent"):
        runner = f"cuda-{algorithm}"

        def forward(algorithm=algorithm):
            with grukern.cuda_algorithm(algorithm):
                grukern.forward(x, device_params, h0, backend="cuda")

        def train(algorithm=algorithm):
            with grukern.cuda_algorithm(algorithm):
                tape = grukern.forward_train(x, device_params, h0, backend="cuda")[2]
                grukern.backward(tape, dy=dy)

        reason = None
        if algorithm == "persistent":
            reason = cuda_backend._persistent_obstacle(B, H, np.dtype(np.float32).itemsize)
        for kind, fn in (("forward", forward), ("forward+backward", train)):
            if reason is None:
                records.append(_timed(common, kind, runner, fn, _cupy_events))
            else:
                error = f"not run: {reason}"
                records.append({**common, "kind": kind, "runner": runner, "error": error})

    module = peers.torch_gru(params).cuda()
    x_t, h0_t, dy_t = (torch.from_numpy(a).cuda() for a in host)

    def torch_forward():
        with torch.no_grad():
            module(x_t, h0_t[None])

    def torch_train():
        module.zero_grad(set_to_none=True)
        x_grad = x_t.detach().requires_grad_()
        module(x_grad, h0_t[None])[0].backward(dy_t)

    for kind, fn in (("forward", torch_forward), ("forward+backward", torch_train)):
        records.append(_timed(common, kind, "torch-cudnn", fn, _torch_events))
    return records


def _timed(common: dict, kind: str, runner: str, fn, events) -> dict:
    record = {**common, "kind": kind, "runner": runner}
    try:
        seconds = _median_seconds(fn, events)
    except Exception as error:  # recorded; the other timings still run
        print(f"{runner} {kind} {common['size']}: {error!r}", flush=True)
        return {**record, "error": repr(error)}
    flops = 2.0 * common["T"] * common["B"] * 3 * common["H"] * (common["I"] + common["H"])
    flops *= 3 if kind == "forward+backward" else 1
    print(f"{runner:<16} {kind:<17} {common['size']}: {seconds * 1e3:9.3f} ms", flush=True)
    return {**record, "seconds": seconds, "gflops": flops / seconds / 1e9}


def _median_seconds(fn, events) -> float:
    """Median seconds per call between CUDA events, after WARMUP untimed calls."""
    start, stop, elapsed_ms, synchronize = events()
    for _ in range(WARMUP):
        fn()
    synchronize()
    times = []
    budget_end = time.perf_counter() + SECONDS_PER_TIMING
    while len(times) < REPEATS and (len(times) < 3 or time.perf_counter() < budget_end):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(elapsed_ms(start, stop) / 1e3)
    return statistics.median(times)


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
    import torch

    from grukern.results import machine_facts

    machine = machine_facts()
    machine["cudnn"] = torch.backends.cudnn.version()
    machine["tf32"] = False
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        json.dump({"machine": machine, "records": records, "checks": checks}, handle, indent=1)


def format_table(records: list[dict]) -> str:
    """One line per size and runner; "x cuDNN" is cuDNN's time over the runner's (> 1: faster)."""
    lines = [
        "",
        f"{'size':<24} {'runner':<16} {'fwd ms':>9} {'x cuDNN':>8} {'fwd+bwd ms':>11} "
        f"{'x cuDNN':>8}",
    ]
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
            lines.append(f"{size:<24} {runner:<16} {cells[0]} {cells[1]} {cells[2]:>11} {cells[3]}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
