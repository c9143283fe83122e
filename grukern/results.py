"""The benchmark-results store (benchmarks/results/) and a loader that makes it one tidy table.

Files the store holds, each tagged with the machine it ran on (machine_facts()):

    cpu-*.json          pytest-benchmark JSON of benchmarks/test_grid.py
    bench-*.json        `python -m grukern bench --json PATH`
    gpu-*.json          benchmarks/gpu_check.py on a real GPU; grukern's own format
    concurrency-*.json  pytest-benchmark JSON of benchmarks/test_concurrency.py
    cell-*.json         pytest-benchmark JSON of benchmarks/test_cell.py
    small-*.json        pytest-benchmark JSON of benchmarks/test_small_batch.py
    dask-*.json         pytest-benchmark JSON of benchmarks/test_dask.py
    paths-*.json        pytest-benchmark JSON of benchmarks/test_torch_paths.py and
                        benchmarks/test_keras_paths.py

load() turns any mix of them into records, one per measurement:

    source, machine, kind ("forward" | "forward+backward" | "sgemm", or "paired forward" for
    numba's forward alternating with a peer's (fields peer, peer_seconds), or "layer forward" and
    "layer forward+backward" for the 2-layer bidirectional benchmark, or "concurrent forward"
    and "concurrent forward+backward" for calls from N Python threads, "small forward" for few
    rows of many units, "threads forward" and "threads forward+backward" for one call at a
    thread budget of N, "dask forward" for grukern.dask's batch inference, runner "SETTING,
    chunks of N" with fields chunk and workers, "torch paths forward" ... "keras paths train
    step" for the framework layers against the kernels they call), size (e.g. "G3" or
    "T=100 B=32 I=64 H=128"), runner, T, B, I, H, seconds (median), gflops

to_frame() makes a pandas DataFrame of them (pandas comes with the `notebooks` extra).
"""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys

_KINDS = {
    "test_forward": "forward",
    "test_forward_backward": "forward+backward",
    # benchmarks/test_grid.py: numba alternating in turns with a peer; runner "numba,
    # alternating with PEER", fields peer and peer_seconds (the peer's median)
    "test_forward_paired": "paired forward",
    "test_sgemm_roofline": "sgemm",
    "test_layer_forward": "layer forward",  # benchmarks/test_layer.py: 2-layer bidirectional
    "test_layer_forward_backward": "layer forward+backward",
    # benchmarks/test_concurrency.py: "concurrent forward" and "concurrent forward+backward",
    # runner "numba, N threads" (N Python threads making the same calls)
    "test_concurrent_calls": "concurrent",
    "test_cell_step": "cell step",  # benchmarks/test_cell.py: one GRUCell step
    "test_small_forward": "small forward",  # benchmarks/test_small_batch.py: B = 1 to 4
    # benchmarks/test_small_batch.py: "threads forward" and "threads forward+backward",
    # runner "numba, N threads" (the call at a thread budget of N)
    "test_thread_scaling": "threads",
    # benchmarks/test_small_batch.py: size L2, L3 or memory; bytes read per call, array bytes
    "test_read_bandwidth": "read bandwidth",
    # benchmarks/test_dask.py: one grukern.forward call, the threaded scheduler, a LocalCluster
    "test_dask_forward_one_process": "dask forward",
    "test_dask_forward_threads": "dask forward",
    "test_dask_forward_cluster": "dask forward",
    # benchmarks/test_torch_paths.py and test_keras_paths.py: the layers against the kernels
    "test_torch_path_forward": "torch paths forward",
    "test_torch_path_forward_backward": "torch paths forward+backward",
    "test_torch_model_step": "torch paths model step",
    "test_keras_forward": "keras paths forward",
    "test_keras_forward_backward": "keras paths forward+backward",
    "test_keras_train_step": "keras paths train step",
}


def machine_facts() -> dict:
    """What the numbers depend on: CPU, cores, BLAS kernel, GPU, the kernels' threading layer
    (None before they started), and library versions."""
    from grukern.bench import blas_description

    versions = {}
    packages = ("grukern", "numpy", "numba", "scipy", "torch", "onnxruntime", "openvino", "keras")
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu_model(),
        "cpu_features": cpu_features(),
        "cores": os.cpu_count(),
        "blas": blas_description(),
        "gpu": gpu_name(),
        "threading_layer": _threading_layer(),
        "versions": versions,
    }


def _threading_layer() -> str | None:
    """The layer Numba's threads run on, without starting them."""
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    return getattr(parallel, "_threading_layer", None)


def load(paths) -> list[dict]:
    """Records from result files; `paths` is a path, a glob pattern, or a list of them."""
    if isinstance(paths, str):
        paths = [paths]
    records = []
    for pattern in paths:
        for path in sorted(glob.glob(pattern)) or [pattern]:
            with open(path) as handle:
                data = json.load(handle)
            if "benchmarks" in data:  # pytest-benchmark
                records += _from_pytest_benchmark(data, os.path.basename(path))
            else:  # grukern's own format: {"machine": ..., "records": [...]}
                for record in data["records"]:
                    records.append(
                        {"source": os.path.basename(path), "machine": data["machine"], **record}
                    )
    return records


def to_frame(records: list[dict]):
    """A pandas DataFrame of load()'s records, with the machine's CPU and BLAS as columns."""
    import pandas as pd

    rows = []
    for record in records:
        machine = record.get("machine") or {}
        rows.append(
            {
                **{k: v for k, v in record.items() if k != "machine"},
                "cpu": machine.get("cpu"),
                "blas": machine.get("blas"),
            }
        )
    return pd.DataFrame(rows)


def write(path: str, records: list[dict]) -> None:
    """Store records (with this machine's facts) in grukern's own JSON format."""
    with open(path, "w") as handle:
        json.dump({"machine": machine_facts(), "records": records}, handle, indent=1)


def _from_pytest_benchmark(data: dict, source: str) -> list[dict]:
    machine = data["machine_info"].get("grukern") or {
        "cpu": data["machine_info"].get("cpu", {}).get("brand_raw"),
        "cores": data["machine_info"].get("cpu", {}).get("count"),
    }
    records = []
    for entry in data["benchmarks"]:
        kind = _KINDS.get(entry["name"].split("[")[0])
        if kind is None:
            continue
        info = entry["extra_info"]
        params = entry.get("params") or {}
        seconds = entry["stats"]["median"]
        runner = info.get("runner")
        sharding = {}
        if kind in ("concurrent", "threads"):
            kind, runner = f"{kind} {params['kind']}", f"{runner}, {info['threads']} threads"
        elif kind == "dask forward":
            runner = f"{runner}, chunks of {info['chunk']}"
            sharding = {"chunk": info["chunk"], "workers": info["workers"]}
        elif kind == "paired forward":
            runner = f"{runner}, alternating with {info['peer']}"
        records.append(
            {
                "source": source,
                "machine": machine,
                "kind": kind,
                "size": params.get("size", info.get("size", "2048³")),
                "runner": runner,
                **{dim: info.get(dim) for dim in ("T", "B", "I", "H")},
                "seconds": seconds,
                "gflops": info["flops"] / seconds / 1e9 if "flops" in info else None,
                **{
                    key: info[key]
                    for key in ("bytes", "array", "peer", "peer_seconds")
                    if key in info
                },
                **sharding,
            }
        )
    return records


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The vector features the kernels' speed depends on, as /proc/cpuinfo names them.
VECTOR_FEATURES = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16")


def cpu_features() -> list[str]:
    """Which of VECTOR_FEATURES this CPU has (Linux; empty where /proc/cpuinfo is absent)."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next(
                (line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), []
            )
    except OSError:
        return []
    return [feature for feature in VECTOR_FEATURES if feature in flags]


def gpu_name() -> str | None:
    """The first CUDA GPU's name if numba-cuda is installed and sees one, else None."""
    if importlib.util.find_spec("numba_cuda") is None:
        return None
    from numba import cuda

    if not cuda.is_available():
        return None
    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else name  # bytes in older numba-cuda releases
