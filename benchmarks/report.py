"""Summarise benchmark results as Markdown tables, or write the performance page.

    python benchmarks/report.py benchmarks/results/cpu-*.json     # tables on stdout
    python benchmarks/report.py --page docs/performance.md          # the page and its plot

--page reads benchmarks/results/cpu-*.json and concurrency-*.json (or the paths given) and
writes the page (machine, commands, tables) and a plot beside it (needs matplotlib); and, from
benchmarks/results/gpu-*.json, a GPU section, whose summary and table it also writes into the
README and docs/cuda.md (between the GPU_MARKERS lines).

With several files (repeated runs), every time is the median over the runs and every ratio
the median of the per-run ratios, so one noisy run moves nothing. Forward: median ms per
runner, numba's GFLOP/s, and the ratios the issue tracks (ONNX Runtime time / numba time,
torch time / numba time; > 1 means numba is faster), and the same ratios with numba and
each peer called in turn in one test, which a slow phase of a shared machine moves far less
than tests timed one after the other. Training (forward + backward): the
same for numpy, numba and torch. Last, numba's G4 forward rate as a share of the 2048³
SGEMM rate measured in the same runs. Runs that also hold benchmarks/test_layer.py add the
2-layer bidirectional tables (numba vs torch with a PackedSequence), and runs of
benchmarks/test_concurrency.py the time of calls from N Python threads over the same calls
made from one, and runs of benchmarks/test_dask.py grukern.dask's batch inference against one
grukern.forward call, and runs of benchmarks/test_torch_paths.py and test_keras_paths.py the
torch and Keras layers against the kernels they call.
"""

from __future__ import annotations

import argparse
import glob
import pathlib
import statistics
from collections import defaultdict

from grukern import results

PEERS = {
    "cell step": ["onnxruntime", "torch"],
    "forward": ["openvino", "onnxruntime", "torch"],
    "forward+backward": ["torch"],
    "layer forward": ["torch"],
    "layer forward+backward": ["torch"],
    "small forward": ["openvino", "onnxruntime", "torch"],
}
RUNNERS = {
    "cell step": ["numba", "torch", "onnxruntime"],  # GRUCell, torch.nn.GRUCell, ORT on T = 1
    "forward": ["numpy", "numba", "torch", "onnxruntime", "openvino"],
    "forward+backward": ["numpy", "numba", "torch"],
    "layer forward": ["numba", "torch"],  # benchmarks/test_layer.py, torch with PackedSequence
    "layer forward+backward": ["numba", "torch"],
    "small forward": ["numba", "openvino", "onnxruntime", "torch"],  # test_small_batch.py
}


def report(paths: list[str]) -> str:
    runs = defaultdict(dict)  # source -> (kind, size, runner) -> record
    for record in results.load(paths):
        runs[record["source"]][record["kind"], record["size"], record["runner"]] = record
    runs = list(runs.values())
    lines = [
        f"Medians over {len(runs)} result files (each table: over the files that hold it).",
        "",
    ]
    for kind, runners in RUNNERS.items():
        lines += _runners_table(runs, kind, runners)
        if kind == "forward":
            lines += _paired(runs)
    lines += _bandwidth(runs)
    lines += _concurrency(runs)
    lines += _scaling(runs)
    lines += _dask(runs)
    lines += _paths(runs)
    sgemms = [record["gflops"] for run in runs for key, record in run.items() if key[0] == "sgemm"]
    if sgemms and any(("forward", "G4", "numba") in run for run in runs):
        sgemm = statistics.median(sgemms)
        g4 = _median(runs, "forward", "G4", "numba", "gflops")
        lines.append(
            f"2048³ SGEMM: {sgemm:.1f} GFLOP/s; numba G4 forward: {g4:.1f} GFLOP/s "
            f"= {100 * g4 / sgemm:.0f}% of it."
        )
    return "\n".join(lines)


def _runners_table(runs, kind: str, runners: list[str]) -> list[str]:
    """One kind's table: median ms per runner, numba's GFLOP/s and the ratios to its peers."""
    sizes = sorted({size for run in runs for (k, size, _) in run if k == kind})
    if not sizes:
        return []
    peers = PEERS[kind]
    count = sum(any(key[0] == kind for key in run) for run in runs)
    header = [f"{kind} ({count} runs)", *(f"{r} ms" for r in runners), "numba GFLOP/s"]
    if kind == "small forward":
        header.append("numba W_hh GB/s")
    header += [f"{p} / numba" for p in peers]
    lines = ["| " + " | ".join(header) + " |", "| --- " * len(header) + "|"]
    for size in sizes:
        cells = [_ms(runs, kind, size, r) for r in runners]
        cells.append(f"{_median(runs, kind, size, 'numba', 'gflops'):.1f}")
        if kind == "small forward":
            cells.append(f"{_weights_rate(runs, kind, size):.0f}")
        cells += [_ratio(runs, kind, size, p) for p in peers]
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _paired(runs) -> list[str]:
    """numba's forward alternating in turns with each peer's (test_forward_paired): numba's
    median ms (over all pairings) and the median of the per-run ratios peer / numba, each run's
    two medians taken over the same stretch of time."""
    keys = {key for run in runs for key in run if key[0] == "paired forward"}
    if not keys:
        return []
    count = sum(any(key[0] == "paired forward" for key in run) for run in runs)
    peers = [p for p in PEERS["forward"] if any(key[2].endswith(f" {p}") for key in keys)]
    header = [f"forward, numba alternating with the peer ({count} runs)", "numba ms"]
    header += [f"{p} / numba" for p in peers]
    lines = ["| " + " | ".join(header) + " |", "| --- " * len(header) + "|"]
    for size in sorted({key[1] for key in keys}):
        records = [record for run in runs for (kind, s, _), record in run.items()
                   if kind == "paired forward" and s == size]  # fmt: skip
        cells = [f"{1e3 * statistics.median(r['seconds'] for r in records):.4g}"]
        for peer in peers:
            ratios = [r["peer_seconds"] / r["seconds"] for r in records if r["peer"] == peer]
            cells.append(f"{statistics.median(ratios):.2f}" if ratios else "-")
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _bandwidth(runs) -> list[str]:
    """The machine's read rates (test_read_bandwidth), to hold the W_hh GB/s above against:
    one line, each level's median GB/s."""
    levels = {size: record for run in runs for (k, size, _), record in run.items()
              if k == "read bandwidth"}  # fmt: skip
    if not levels:
        return []
    count = sum(any(key[0] == "read bandwidth" for key in run) for run in runs)
    rates = []
    for level in ("L2", "L3", "memory"):
        if level in levels:
            record = levels[level]
            seconds = _median(runs, "read bandwidth", level, record["runner"], "seconds")
            size = _bytes(record["array"])
            rates.append(f"{level} ({size}) {record['bytes'] / seconds / 1e9:.0f} GB/s")
    runner = next(iter(levels.values()))["runner"]
    return [f"Read bandwidth ({runner}, {count} runs): " + ", ".join(rates) + ".", ""]


def _bytes(n: int) -> str:
    """n bytes in kB, MB or GB (binary units), as a size is usually said."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n / 2**10:.3g} kB"


def _concurrency(runs) -> list[str]:
    """Calls from N Python threads: median ms and the median of the per-run ratios to the
    same calls made from one thread (≤ 1.15 is the target)."""
    keys = sorted({key for run in runs for key in run if key[0].startswith("concurrent ")})
    if not keys:
        return []
    lines = ["| calls | Python threads | ms | time / one thread's |", "| --- | --- | --- | --- |"]
    for kind, size, runner in keys:
        serial = (kind, size, runner.rsplit(", ", 1)[0] + ", 1 threads")
        ratios = [run[kind, size, runner]["seconds"] / run[serial]["seconds"] for run in runs
                  if (kind, size, runner) in run and serial in run]  # fmt: skip
        ms = 1e3 * _median(runs, kind, size, runner, "seconds")
        threads = runner.rsplit(", ", 1)[1].split()[0]
        lines.append(f"| {size} {kind} | {threads} | {ms:.1f} | {statistics.median(ratios):.2f} |")
    return [*lines, ""]


def _weights_rate(runs, kind, size) -> float:
    """GB/s of W_hh (3H·H float32) read by numba's steps: T passes over it per call."""
    record = next(run[kind, size, "numba"] for run in runs if (kind, size, "numba") in run)
    weight_bytes = 3 * record["H"] * record["H"] * 4
    return record["T"] * weight_bytes / _median(runs, kind, size, "numba", "seconds") / 1e9


def _scaling(runs) -> list[str]:
    """One call at a thread budget of 1 … N: median ms and the speed-up over one thread (the
    median of the per-run ratios)."""
    keys = sorted({key for run in runs for key in run if key[0].startswith("threads ")})
    if not keys:
        return []
    lines = ["| one call | threads | ms | speed-up over 1 thread |", "| --- | --- | --- | --- |"]
    for kind, size, runner in keys:
        one = (kind, size, "numba, 1 threads")
        speedups = [run[one]["seconds"] / run[kind, size, runner]["seconds"] for run in runs
                    if (kind, size, runner) in run and one in run]  # fmt: skip
        ms = 1e3 * _median(runs, kind, size, runner, "seconds")
        threads = runner.rsplit(", ", 1)[1].split()[0]
        T, I, H = (_median(runs, kind, size, runner, dim) for dim in ("T", "I", "H"))
        label = f"{kind.removeprefix('threads ')} T={T} {size} I={I} H={H}"
        lines.append(f"| {label} | {threads} | {ms:.2f} | {statistics.median(speedups):.2f} |")
    return [*lines, ""]


def _dask(runs) -> list[str]:
    """grukern.dask's batch inference: median ms, sequences per second, and the median of the
    per-run ratios to one grukern.forward call on the same data (≤ 1.10 is the target)."""
    keys = sorted(
        {key for run in runs for key in run if key[0] == "dask forward"},
        key=lambda key: (key[2].split(",")[0] != "one process", key[2].split(",")[0],
                         int(key[2].rsplit(" ", 1)[1])),
    )  # fmt: skip
    if not keys:
        return []
    lines = [
        "| batch inference | chunks of | ms | sequences/s | time / one process's |",
        "| --- | --- | --- | --- | --- |",
    ]
    for kind, size, runner in keys:
        one = next(key for key in keys if key[2].startswith("one process"))
        ratios = [run[kind, size, runner]["seconds"] / run[one]["seconds"] for run in runs
                  if (kind, size, runner) in run and one in run]  # fmt: skip
        seconds = _median(runs, kind, size, runner, "seconds")
        B = _median(runs, kind, size, runner, "B")
        setting, chunk = runner.split(", chunks of ")
        lines.append(
            f"| {setting} | {chunk} | {1e3 * seconds:.0f} | {B / seconds:.0f} "
            f"| {statistics.median(ratios):.2f} |"
        )
    return [*lines, ""]


def _paths(runs) -> list[str]:
    """The torch and Keras layers against the kernels they call: median ms, and medians of the
    per-run ratios to the kernels' time in the same file (≤ 1.10 is the target), on time-major
    data and on the data layout the layer hands the kernels (Keras's is batch-first)."""
    keys = sorted({key for run in runs for key in run if " paths " in key[0]})
    if not keys:
        return []
    lines = [
        "| layer path | runner | ms | time / kernels' | time / kernels' on the layer's layout |",
        "| --- | --- | --- | --- | --- |",
    ]
    for kind, size, runner in keys:
        batch_first = (kind, size, "kernels, batch-first") in keys  # the Keras layer's layout
        layout = "kernels, batch-first" if batch_first else "kernels"
        ms = 1e3 * _median(runs, kind, size, runner, "seconds")
        ratios = (_path_ratio(runs, (kind, size, runner), (kind, size, base))
                  for base in ("kernels", layout))  # fmt: skip
        lines.append(f"| {size} {kind} | {runner} | {ms:.2f} | {' | '.join(ratios)} |")
    return [*lines, ""]


def _path_ratio(runs, key, baseline) -> str:
    """The median over runs of key's time / baseline's time in the same run."""
    ratios = [run[key]["seconds"] / run[baseline]["seconds"] for run in runs
              if key in run and baseline in run]  # fmt: skip
    return f"{statistics.median(ratios):.2f}" if ratios else "-"


def _median(runs, kind, size, runner, field) -> float:
    """The median of a field over the runs that measured (kind, size, runner)."""
    key = kind, size, runner
    return statistics.median(run[key][field] for run in runs if key in run)


def _ms(runs, kind, size, runner) -> str:
    if all((kind, size, runner) not in run for run in runs):
        return "-"
    return f"{1e3 * _median(runs, kind, size, runner, 'seconds'):.4g}"


def _ratio(runs, kind, size, peer) -> str:
    ratios = [
        run[kind, size, peer]["seconds"] / run[kind, size, "numba"]["seconds"]
        for run in runs
        if (kind, size, peer) in run
    ]
    return f"{statistics.median(ratios):.2f}" if ratios else "-"


ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_PATTERNS = tuple(
    f"benchmarks/results/{kind}-*.json"
    for kind in ("cpu", "concurrency", "cell", "small", "dask", "paths")
)
COMMANDS = """\
```bash
for i in 1 2 3; do env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest \\
  benchmarks/test_grid.py benchmarks/test_layer.py --benchmark-only --benchmark-group-by=group \\
  --benchmark-min-rounds=10 --benchmark-json=benchmarks/results/cpu-DATE-run$i.json
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest benchmarks/test_concurrency.py \\
  --benchmark-only --benchmark-json=benchmarks/results/concurrency-DATE-run$i.json
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest benchmarks/test_cell.py \\
  --benchmark-only --benchmark-json=benchmarks/results/cell-DATE-run$i.json
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest benchmarks/test_small_batch.py \\
  --benchmark-only --benchmark-json=benchmarks/results/small-DATE-run$i.json
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest benchmarks/test_dask.py \\
  --benchmark-only --benchmark-json=benchmarks/results/dask-DATE-run$i.json
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest benchmarks/test_torch_paths.py \\
  benchmarks/test_keras_paths.py --benchmark-only \\
  --benchmark-json=benchmarks/results/paths-DATE-run$i.json; done
python benchmarks/report.py --page docs/performance.md
```"""


GPU_PATTERN = "benchmarks/results/gpu-*.json"
# The files beside the page (paths relative to the repository) holding a generated GPU block,
# between GPU_MARKERS: the README its summary, docs/cuda.md the full table.
GPU_BLOCKS = {"README.md": "summary", "docs/cuda.md": "table"}
GPU_MARKERS = (
    "<!-- generated by benchmarks/report.py --page from gpu-*.json: do not edit -->",
    "<!-- end of the generated block -->",
)


def gpu_blocks(paths: list[str]) -> dict[str, str]:
    """The GPU tables from gpu_check.py results: "summary" (speed-ups over cuDNN per B and H),
    "table" (times, speed-ups of both algorithms, host time per call), "steps" (µs per piece of
    one standard step); {} without GPU results. Times are medians over the runs, speed-ups the
    medians of the per-run ratios cuDNN / grukern (> 1: grukern is faster)."""
    kinds = ("forward", "forward+backward", "step")
    records = [r for r in results.load(paths) if r["kind"] in kinds]
    if not records:
        return {}
    runs = defaultdict(dict)  # source -> (kind, B, H, runner) -> record
    for r in records:
        runs[r["source"]][r["kind"], r["B"], r["H"], r["runner"]] = r
    runs = list(runs.values())
    sizes = sorted({(r["H"], r["B"]) for r in records})
    hidden = sorted({h for h, _ in sizes})
    batches = sorted({b for _, b in sizes})

    def median(kind, B, H, runner, field="seconds"):
        values = [run[kind, B, H, runner][field] for run in runs
                  if run.get((kind, B, H, runner), {}).get(field) is not None]  # fmt: skip
        return statistics.median(values) if values else None

    def speedup(kind, B, H, runner):
        ratios = [run[kind, B, H, "torch-cudnn"]["seconds"] / run[kind, B, H, runner]["seconds"]
                  for run in runs
                  if run.get((kind, B, H, runner), {}).get("seconds")
                  and (kind, B, H, "torch-cudnn") in run]  # fmt: skip
        return f"{statistics.median(ratios):.2f}" if ratios else "-"

    def ms(value):
        return "-" if value is None else f"{1e3 * value:.3g}"

    machine = records[0]["machine"]
    versions = machine.get("versions") or {}
    setup = (
        f"{machine.get('gpu')} ({machine.get('multiprocessors')} SMs; driver "
        f"{machine.get('driver')}, CUDA runtime {machine.get('cuda_runtime')}; numba-cuda "
        f"{machine.get('numba-cuda')}, CuPy {machine.get('cupy-cuda13x')}, NumPy "
        f"{versions.get('numpy')}, torch {machine.get('torch')}, cuDNN {machine.get('cudnn')}), "
        f"{len(runs)} runs of `benchmarks/gpu_check.py`, T = 100, I = H, float32, TF32 off"
    )
    summary = [
        f"On an {setup}: `backend=\"cuda\"` (its `\"auto\"` choice, the standard loops "
        "replayed as CUDA graphs) against `torch.nn.GRU` on cuDNN with the same weights, "
        "cuDNN's time over grukern's (> 1: grukern is faster):",
        "",
        "| B | " + " | ".join(f"forward H={h}" for h in hidden) + " | "
        + " | ".join(f"forward+backward H={h}" for h in hidden) + " |",
        "| --- " * (1 + 2 * len(hidden)) + "|",
    ]  # fmt: skip
    for B in batches:
        cells = [speedup(k, B, h, "cuda-standard") for k in ("forward", "forward+backward")
                 for h in hidden]  # fmt: skip
        summary.append(f"| {B} | " + " | ".join(cells) + " |")
    table = [
        f"{setup}. Milliseconds per call (CUDA events, median); x cuDNN is cuDNN's time over "
        "grukern's; host ms is the time until the call returns, with the loop replayed as a "
        "graph and issued step by step from Python.",
        "",
        "| B | H | cuDNN fwd ms | standard fwd ms | x cuDNN | persistent x cuDNN "
        "| cuDNN fwd+bwd ms | standard fwd+bwd ms | x cuDNN | persistent x cuDNN "
        "| host fwd ms, graph / issued |",
        "| --- " * 11 + "|",
    ]
    for H, B in sizes:
        row = [str(B), str(H)]
        for kind in ("forward", "forward+backward"):
            row += [ms(median(kind, B, H, "torch-cudnn")), ms(median(kind, B, H, "cuda-standard"))]
            row += [speedup(kind, B, H, "cuda-standard"), speedup(kind, B, H, "cuda-persistent")]
        host = [median("forward", B, H, r, "host_seconds")
                for r in ("cuda-standard", "cuda-standard-issued")]  # fmt: skip
        row.append(f"{ms(host[0])} / {ms(host[1])}")
        table.append("| " + " | ".join(row) + " |")
    pieces = list(dict.fromkeys(r["runner"] for r in records if r["kind"] == "step"))
    steps = [
        "Microseconds per piece of one standard step (each captured 100 times in a graph and "
        "replayed; median):",
        "",
        "| B | H | " + " | ".join(pieces) + " |",
        "| --- " * (2 + len(pieces)) + "|",
    ]
    for H, B in sizes:
        cells = [median("step", B, H, piece, "microseconds") for piece in pieces]
        steps.append(f"| {B} | {H} | " + " | ".join("-" if c is None else f"{c:.2f}"
                                                    for c in cells) + " |")  # fmt: skip
    return {"summary": "\n".join(summary), "table": "\n".join(table), "steps": "\n".join(steps)}


def replace_block(text: str, block: str, name: str) -> str:
    """text with the part between GPU_MARKERS replaced by block."""
    start, end = GPU_MARKERS
    if start not in text or end not in text:
        raise ValueError(f"{name} has no generated GPU block (the lines {start} and {end})")
    head, rest = text.split(start, 1)
    return f"{head}{start}\n{block}\n{end}{rest.split(end, 1)[1]}"


def page(paths: list[str], target: pathlib.Path, gpu_paths: list[str] = ()) -> None:
    """Write the performance page `target` and its plot (target with .png) from `paths`, with a
    GPU section from `gpu_paths`, whose blocks also go into GPU_BLOCKS' files beside the page."""
    records = results.load(paths)
    machines = {_machine_line(r["machine"]) for r in records}
    plot = target.with_suffix(".png")
    plotted = _plot(records, plot)
    lines = [
        "# Performance",
        "",
        f"Generated by `python benchmarks/report.py --page {_shown(target)}` from "
        f"{len({r['source'] for r in records})} result files in `benchmarks/results/`; "
        "do not edit.",
        "",
        "Grid (float32, reset_after=True): "
        + " · ".join(f"{name} T={p.T} B={p.B} I={p.I} H={p.H}" for name, p in _grid().items())
        + ". Each case is checked against the float64 reference before it is timed; peers run "
        "in the same session (torch's nn.GRU; the ONNX GRU operator in ONNX Runtime and in "
        "OpenVINO, 2 threads each). Ratios "
        "are peer time / numba time, the median of the per-run ratios (> 1: numba is faster). "
        "The forward table times each runner in its own test; the table after it times numba "
        "and OpenVINO in turns within one test, so that both see the same phases of the "
        "machine.",
        "",
        "Machine" + ("s" if len(machines) > 1 else "") + ":",
        "",
        *(f"- {line}" for line in sorted(machines)),
        "",
        "Made with:",
        "",
        COMMANDS,
        "",
    ]
    if plotted:
        lines += [f"![GFLOP/s per grid size]({plot.name})", ""]
    lines.append(report(paths))
    blocks = gpu_blocks(list(gpu_paths))
    if blocks:
        lines += ["", "## GPU", "", blocks["table"], "", blocks["steps"]]
        root = target.parent.parent
        for name, block in GPU_BLOCKS.items():
            path = root / name
            if path.exists():
                path.write_text(replace_block(path.read_text(), blocks[block], name))
    target.write_text("\n".join(lines) + "\n")


def _shown(path: pathlib.Path) -> str:
    """path relative to the repository when it lies inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _grid():
    from grukern import bench

    return bench.GRID


def _machine_line(machine: dict) -> str:
    versions = machine.get("versions") or {}
    libraries = ", ".join(f"{k} {v}" for k, v in versions.items() if v)
    features = " ".join(machine.get("cpu_features") or []) or "not recorded"
    blas = "; ".join(sorted((machine.get("blas") or "not recorded").split("; ")))
    layer = machine.get("threading_layer", "not recorded")
    return (
        f"{machine.get('cpu')}, {machine.get('cores')} cores, vector features: {features}; "
        f"BLAS: {blas}; Numba threading layer: {layer}; {libraries}"
    )


def _plot(records, path: pathlib.Path) -> bool:
    """Numba's and the peers' median GFLOP/s per grid size, forward and training; False when
    matplotlib is missing or there is nothing to plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    kinds = ["forward", "forward+backward"]
    rates = defaultdict(list)  # (kind, size, runner) -> GFLOP/s of each run
    for r in records:
        if r["kind"] in kinds and r["gflops"]:
            rates[r["kind"], r["size"], r["runner"]].append(r["gflops"])
    if not rates:
        return False
    figure, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for axis, kind in zip(axes, kinds, strict=True):
        sizes = sorted({size for k, size, _ in rates if k == kind})
        runners = [r for r in RUNNERS[kind] if any((kind, s, r) in rates for s in sizes)]
        width = 0.8 / len(runners)
        for i, runner in enumerate(runners):
            values = [statistics.median(rates.get((kind, s, runner), [0])) for s in sizes]
            axis.bar([j + i * width for j in range(len(sizes))], values, width, label=runner)
        axis.set_xticks([j + 0.4 - width / 2 for j in range(len(sizes))], sizes)
        axis.set_yscale("log")
        axis.set_title(f"{kind}, float32")
        axis.set_ylabel("GFLOP/s (higher is better)")
        axis.grid(axis="y", which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="result files (default: the results store)")
    parser.add_argument("--page", metavar="PATH.md", help="write the performance page there")
    args = parser.parse_args(argv)
    paths = args.paths or sorted(
        p for pattern in DEFAULT_PATTERNS for p in glob.glob(str(ROOT / pattern))
    )
    if args.page:
        gpu_paths = sorted(glob.glob(str(ROOT / GPU_PATTERN)))
        page(paths, pathlib.Path(args.page).resolve(), gpu_paths)
    else:
        print(report(paths))


if __name__ == "__main__":
    main()
