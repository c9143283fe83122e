"""Summarise benchmark results of benchmarks/test_grid.py as Markdown tables.

    python benchmarks/report.py benchmarks/results/cpu-*.json

With several files (repeated runs), every time is the median over the runs and every ratio
the median of the per-run ratios, so one noisy run moves nothing. Forward: median ms per
runner, numba's GFLOP/s, and the ratios the issue tracks (ONNX Runtime time / numba time,
torch time / numba time; > 1 means numba is faster). Training (forward + backward): the
same for numpy, numba and torch. Last, numba's G4 forward rate as a share of the 2048³
SGEMM rate measured in the same runs. Runs that also hold benchmarks/test_layer.py add the
2-layer bidirectional tables (numba vs torch with a PackedSequence), and runs of
benchmarks/test_concurrency.py the time of calls from N Python threads over the same calls
made from one.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict

from grukern import results

PEERS = {
    "forward": ["onnxruntime", "torch"],
    "forward+backward": ["torch"],
    "layer forward": ["torch"],
    "layer forward+backward": ["torch"],
}
RUNNERS = {
    "forward": ["numpy", "numba", "torch", "onnxruntime"],
    "forward+backward": ["numpy", "numba", "torch"],
    "layer forward": ["numba", "torch"],  # benchmarks/test_layer.py, torch with PackedSequence
    "layer forward+backward": ["numba", "torch"],
}


def report(paths: list[str]) -> str:
    runs = defaultdict(dict)  # source -> (kind, size, runner) -> record
    for record in results.load(paths):
        runs[record["source"]][record["kind"], record["size"], record["runner"]] = record
    runs = list(runs.values())
    lines = [f"Medians over {len(runs)} run(s) (each table: over the runs that hold it).", ""]
    for kind, runners in RUNNERS.items():
        sizes = sorted({size for run in runs for (k, size, _) in run if k == kind})
        if not sizes:
            continue
        peers = PEERS[kind]
        count = sum(any(key[0] == kind for key in run) for run in runs)
        header = [f"{kind} ({count} runs)", *(f"{r} ms" for r in runners), "numba GFLOP/s"]
        header += [f"{p} / numba" for p in peers]
        lines += ["| " + " | ".join(header) + " |", "| --- " * len(header) + "|"]
        for size in sizes:
            cells = [_ms(runs, kind, size, r) for r in runners]
            cells.append(f"{_median(runs, kind, size, 'numba', 'gflops'):.1f}")
            cells += [_ratio(runs, kind, size, p) for p in peers]
            lines.append(f"| {size} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _concurrency(runs)
    sgemms = [record["gflops"] for run in runs for key, record in run.items() if key[0] == "sgemm"]
    if sgemms and any(("forward", "G4", "numba") in run for run in runs):
        sgemm = statistics.median(sgemms)
        g4 = _median(runs, "forward", "G4", "numba", "gflops")
        lines.append(
            f"2048³ SGEMM: {sgemm:.1f} GFLOP/s; numba G4 forward: {g4:.1f} GFLOP/s "
            f"= {100 * g4 / sgemm:.0f}% of it."
        )
    return "\n".join(lines)


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


def _median(runs, kind, size, runner, field) -> float:
    """The median of a field over the runs that measured (kind, size, runner)."""
    key = kind, size, runner
    return statistics.median(run[key][field] for run in runs if key in run)


def _ms(runs, kind, size, runner) -> str:
    if all((kind, size, runner) not in run for run in runs):
        return "-"
    return f"{1e3 * _median(runs, kind, size, runner, 'seconds'):.3f}"


def _ratio(runs, kind, size, peer) -> str:
    ratios = [
        run[kind, size, peer]["seconds"] / run[kind, size, "numba"]["seconds"]
        for run in runs
        if (kind, size, peer) in run
    ]
    return f"{statistics.median(ratios):.2f}" if ratios else "-"


if __name__ == "__main__":
    print(report(sys.argv[1:]))
