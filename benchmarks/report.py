"""Summarise a pytest-benchmark JSON of benchmarks/test_grid.py as Markdown tables.

    python benchmarks/report.py benchmarks/results/cpu.json

Forward: median ms per runner, numba's GFLOP/s, and the ratios the issue tracks (ONNX Runtime
time / numba time, torch time / numba time; > 1 means numba is faster). Training
(forward + backward): numba and torch, and their ratio. Then numba's G4 forward rate as a
share of the 2048³ SGEMM rate of the same run.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def load(path: str) -> dict:
    """{(test, size, runner): (median seconds, extra_info)} from a pytest-benchmark JSON."""
    with open(path) as handle:
        data = json.load(handle)
    table = {}
    for entry in data["benchmarks"]:
        test = entry["name"].split("[")[0]
        size = entry["params"].get("size", "") if entry.get("params") else ""
        runner = entry["extra_info"].get("runner", "")
        table[test, size, runner] = (entry["stats"]["median"], entry["extra_info"])
    return table


def report(table: dict) -> str:
    sizes = sorted({size for (_, size, _) in table if size})
    forward = defaultdict(dict)
    train = defaultdict(dict)
    for (test, size, runner), (median, _) in table.items():
        (forward if test == "test_forward" else train)[size][runner] = median
    lines = [
        "| size | numpy ms | numba ms | torch ms | ONNX Runtime ms | numba GFLOP/s "
        "| ORT / numba | torch / numba |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size in sizes:
        row = forward[size]
        flops = table["test_forward", size, "numba"][1]["flops"]
        lines.append(
            f"| {size} | {_ms(row, 'numpy')} | {_ms(row, 'numba')} | {_ms(row, 'torch')} "
            f"| {_ms(row, 'onnxruntime')} | {flops / row['numba'] / 1e9:.1f} "
            f"| {_ratio(row, 'onnxruntime')} | {_ratio(row, 'torch')} |"
        )
    lines += [
        "",
        "| size | numpy fwd+bwd ms | numba fwd+bwd ms | torch fwd+bwd ms | torch / numba |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for size in sizes:
        row = train[size]
        lines.append(
            f"| {size} | {_ms(row, 'numpy')} | {_ms(row, 'numba')} | {_ms(row, 'torch')} "
            f"| {_ratio(row, 'torch')} |"
        )
    sgemm = next((v for (test, _, _), v in table.items() if test == "test_sgemm_roofline"), None)
    if sgemm and "G4" in forward:
        sgemm_rate = sgemm[1]["flops"] / sgemm[0] / 1e9
        g4_rate = table["test_forward", "G4", "numba"][1]["flops"] / forward["G4"]["numba"] / 1e9
        lines += [
            "",
            f"2048³ SGEMM: {sgemm_rate:.1f} GFLOP/s; numba G4 forward: {g4_rate:.1f} GFLOP/s "
            f"= {100 * g4_rate / sgemm_rate:.0f}% of it.",
        ]
    return "\n".join(lines)


def _ms(row: dict, runner: str) -> str:
    return f"{1e3 * row[runner]:.3f}" if runner in row else "-"


def _ratio(row: dict, runner: str) -> str:
    return f"{row[runner] / row['numba']:.2f}" if runner in row and "numba" in row else "-"


if __name__ == "__main__":
    print(report(load(sys.argv[1])))
