"""`python -m grukern info`: what grukern runs on here, for bug reports and benchmark notes.

Versions, the backends (and why one is unavailable), the kernels' threads and threading layer,
BLAS and its threads, the CPU's vector features, and GPUs.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform

import grukern
from grukern import _backends, _threads, bench, results

PACKAGES = (
    "numpy", "numba", "llvmlite", "scipy", "threadpoolctl", "tbb", "numba-cuda", "cupy-cuda12x",
    "cupy-cuda13x", "torch", "onnxruntime", "keras",
)  # fmt: skip


def lines() -> list[str]:
    """The report, one line per fact."""
    report = [
        f"grukern {grukern.__version__} (Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()})",
        "versions: " + ", ".join(f"{name} {_version(name)}" for name in PACKAGES),
    ]
    for name in _backends.known_backends()[:-1]:  # not "auto"
        reason = _backends.unavailable_reason(name)
        report.append(f"backend {name}: " + ("available" if reason is None else reason))
    if _backends.unavailable_reason("numba") is None:
        import numba

        layer, why = _threads.threading_layer()
        report += [
            f"threads: {_threads.get_num_threads()} for grukern's kernels "
            f"(grukern.set_num_threads; at most NUMBA_NUM_THREADS = "
            f"{numba.config.NUMBA_NUM_THREADS})",
            f"threading layer: {layer} ({why})",
        ]
    report += [
        f"BLAS: {bench.blas_description()}"
        + ("" if "OPENBLAS_CORETYPE" not in os.environ else
           f"; OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} is set"),
        f"CPU: {results.cpu_model()}, {os.cpu_count()} cores; vector features: "
        + (" ".join(results.cpu_features()) or "unknown"),
        f"GPU: {results.gpu_name() or 'none found'}",
    ]  # fmt: skip
    return report


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"
