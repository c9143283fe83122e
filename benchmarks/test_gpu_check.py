"""benchmarks/gpu_check.py imports without a GPU, and its table reads its records right.
(Its correctness part runs in CI under the CUDA simulator: gpu_check.py --simulate.)"""

from benchmarks import gpu_check


def test_table_compares_each_runner_with_cudnn():
    common = {"size": "T=100 B=1 I=256 H=256"}
    records = [
        {**common, "runner": "cuda-persistent", "kind": "forward", "seconds": 0.001},
        {**common, "runner": "cuda-persistent", "kind": "forward+backward", "error": "boom"},
        {**common, "runner": "torch-cudnn", "kind": "forward", "seconds": 0.004},
        {**common, "runner": "torch-cudnn", "kind": "forward+backward", "seconds": 0.01},
    ]
    lines = gpu_check.format_table(records).splitlines()
    persistent = next(line for line in lines if "cuda-persistent" in line).split()
    assert persistent[-4:] == ["1.000", "4.00", "-", "-"]


def test_step_table_has_one_column_per_piece():
    common = {"size": "T=100 B=8 I=256 H=256", "kind": "step"}
    records = [
        {**common, "runner": "backward GEMM", "microseconds": 6.66},
        {**common, "runner": "pointwise forward kernel", "error": "boom"},
        {"size": common["size"], "kind": "forward", "runner": "torch-cudnn", "seconds": 0.001},
    ]
    lines = gpu_check.format_step_table(records).splitlines()
    assert lines[1] == "µs per step piece: backward GEMM | pointwise forward kernel"
    assert lines[2].split()[-2:] == ["6.66", "-"]
    assert "step" not in gpu_check.format_table(records)
    assert "backward GEMM" not in gpu_check.format_table(records)
