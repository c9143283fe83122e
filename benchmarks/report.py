"""Summarise pytest-benchmark JSON files of benchmarks/test_grid.py as Markdown tables.

    python benchmarks/report.py benchmarks/results/cpu-2026-11-26-run*.json

With several files (repeated runs), every time is the median over the runs and every ratio
the median of the per-run ratios, so one noisy run moves nothing. Forward: median ms per
runner, numba's GFLOP/s, and the ratios the issue tracks (ONNX Runtime time / numba time,
torch time / numba time; > 1 means numba is faster). Training (forward + backward): the
same for numpy, numba and torch. Last, numba's G4 forward rate as a share of the 2048³
SGEMM rate measured in the same runs.
"""

from __future__ import annotations

import json
import statistics
import sys

TESTS = {"test_forward": "forward", "test_forward_backward": "forward+backward"}


def load(path: str) -> dict:
    """{(test, size, runner): (median seconds, extra_info)} from a pytest-benchmark JSON."""
    with open(path) as handle:
        data = json.load(handle)
    table = {}
    for entry in data["benchmarks"]:
        test = entry["name"].split("[")[0]
        size = (entry.get("params") or {}).get("size", "")
        table[test, size, entry["extra_info"].get("runner", "")] = (
            entry["stats"]["median"],
            entry["extra_info"],
        )
    return table


def report(runs: list[dict]) -> str:
    lines = [f"Medians over {len(runs)} run(s).", ""]
    sizes = sorted({size for run in runs for (_, size, _) in run if size})
    for test, title in TESTS.items():
        peers = ["onnxruntime", "torch"] if test == "test_forward" else ["torch"]
        runners = ["numpy", "numba", "torch"] + (["onnxruntime"] if test == "test_forward" else [])
        lines.append(
            f"| {title} | "
            + " | ".join(f"{r} ms" for r in runners)
            + " | numba GFLOP/s | "
            + " | ".join(f"{p} / numba" for p in peers)
            + " |"
        )
        lines.append("| --- " * (2 + len(runners) + len(peers)) + "|")
        for size in sizes:
            cells = [_ms(runs, test, size, r) for r in runners]
            numba = _median(runs, test, size, "numba")
            flops = runs[0][test, size, "numba"][1]["flops"]
            cells.append(f"{flops / numba / 1e9:.1f}")
            cells += [_ratio(runs, test, size, p) for p in peers]
            lines.append(f"| {size} | " + " | ".join(cells) + " |")
        lines.append("")
    sgemm = statistics.median(
        run[key][1]["flops"] / run[key][0] / 1e9
        for run in runs
        for key in run
        if key[0] == "test_sgemm_roofline"
    )
    g4 = runs[0]["test_forward", "G4", "numba"][1]["flops"] / 1e9
    g4_rate = g4 / _median(runs, "test_forward", "G4", "numba")
    lines.append(
        f"2048³ SGEMM: {sgemm:.1f} GFLOP/s; numba G4 forward: {g4_rate:.1f} GFLOP/s "
        f"= {100 * g4_rate / sgemm:.0f}% of it."
    )
    return "\n".join(lines)


def _median(runs, test, size, runner) -> float:
    return statistics.median(run[test, size, runner][0] for run in runs)


def _ms(runs, test, size, runner) -> str:
    if any((test, size, runner) not in run for run in runs):
        return "-"
    return f"{1e3 * _median(runs, test, size, runner):.3f}"


def _ratio(runs, test, size, peer) -> str:
    ratios = [
        run[test, size, peer][0] / run[test, size, "numba"][0]
        for run in runs
        if (test, size, peer) in run
    ]
    return f"{statistics.median(ratios):.2f}" if ratios else "-"


if __name__ == "__main__":
    print(report([load(path) for path in sys.argv[1:]]))
