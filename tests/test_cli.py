"""`python -m grukern bench`: the table lists every runner, each checked against the reference."""

import re

import pytest

import grukern
import grukern.results
from grukern.__main__ import main


def test_bench_prints_a_checked_row_per_backend_with_the_spread_of_its_rounds(capsys):
    assert main(["bench", "--size", "3,2,4,5", "--dtype", "float64", "--repeat", "3"]) == 0
    out = capsys.readouterr()
    assert "T=3 B=2 I=4 H=5 float64" in out.out
    assert "BLAS:" in out.out and "min / median / max over 3 rounds" in out.out
    for backend in grukern.backends():
        row = re.search(rf"^  {backend} .*$", out.out, re.MULTILINE)
        assert row, f"no row for {backend} in\n{out.out}"
        fields = row.group(0).split()
        low, median, high = float(fields[1]), float(fields[3]), float(fields[5])
        assert low <= median <= high
        assert float(fields[12]) < 1e-12  # max |y - y_ref|
    assert "done" in out.err  # the progress bar finished


def test_bench_runs_named_grid_sizes_and_selected_runners(capsys):
    assert main(["bench", "--sizes", "G6", "--backends", "numpy"]) == 0
    table = capsys.readouterr().out
    assert "G6: T=1 B=1 I=64 H=64 float32" in table
    assert re.search(r"^  numpy ", table, re.MULTILINE)
    assert not re.search(r"^  torch ", table, re.MULTILINE)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--size", "3,2,4"], "expected four positive integers T,B,I,H"),
        (["--size", "3,2,0,5"], "expected four positive integers T,B,I,H"),
        (["--sizes", "G9"], "unknown sizes ['G9']"),
    ],
)
def test_bench_rejects_bad_arguments(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--backends", "numpy,jax"], "cannot run jax (unknown runner (the runners are numpy"),
        (
            ["--reset-before", "--backends", "torch"],
            "cannot run torch (torch.nn.GRU has no reset_after=False variant)",
        ),
        (["--json", "/no/such/folder/x.json"], "--json /no/such/folder/x.json: the folder"),
        (["--plot", "/no/such/folder/x.png"], "--plot /no/such/folder/x.png: the folder"),
    ],
)
def test_bench_refuses_what_it_cannot_do_before_any_work(arguments, message, capsys, monkeypatch):
    monkeypatch.setattr(grukern.bench, "run", lambda *a, **k: pytest.fail("work was started"))
    assert main(["bench", "--sizes", "G6", *arguments]) == 2
    assert message in capsys.readouterr().err


def test_bench_plot_without_matplotlib_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else find_spec(name, *a),
    )
    monkeypatch.setattr(grukern.bench, "run", lambda *a, **k: pytest.fail("work was started"))
    assert main(["bench", "--sizes", "G6", "--plot", str(tmp_path / "x.png")]) == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err


def test_version_and_readable_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"grukern {grukern.__version__}"
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "G3 T=100 B=32 I=128 H=128" in help_text and "{'G1'" not in help_text


def _result(name, forward, train=None):
    timing = grukern.bench.Timing
    problem = grukern.bench.GRID["G3"]
    return grukern.bench.Result(problem, name, timing(forward), train and timing(train), 0.0)


def test_bench_warns_when_rounds_disagree_or_the_machine_is_busy():
    steady = _result("numba", (1.0, 1.01, 1.02), (3.0, 3.0, 3.1))
    noisy = _result("torch", (1.0, 1.1, 2.0))
    assert grukern.bench.warnings_about([steady], load_average=0.3, cores=2) == []
    (warning,) = grukern.bench.warnings_about([steady, noisy], load_average=0.3, cores=2)
    assert "torch forward on G3 (91%)" in warning and "numba" not in warning
    (warning,) = grukern.bench.warnings_about([steady], load_average=2.5, cores=2)
    assert "load average was 2.5 on 2 cores" in warning


def test_pytest_benchmark_only_at_the_root_runs_the_benchmarks():
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--benchmark-only", "--collect-only", "-q"],
        cwd=root, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "benchmarks/test_grid.py::" in collected and "tests/" not in collected


def test_bench_stores_json_and_a_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    json_path, png_path = tmp_path / "bench.json", tmp_path / "bench.png"
    arguments = ["bench", "--size", "3,2,4,5", "--backends", "numpy"]
    assert main([*arguments, "--json", str(json_path), "--plot", str(png_path)]) == 0
    records = grukern.results.load(str(json_path))
    assert {(r["kind"], r["runner"]) for r in records} == {
        ("forward", "numpy"),
        ("forward+backward", "numpy"),
    }
    assert records[0]["machine"]["versions"]["grukern"] == grukern.__version__
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_info_reports_versions_backends_threads_blas_cpu_and_gpu(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"grukern {grukern.__version__} (Python ")
    assert re.search(r"^versions: numpy \d", out, re.MULTILINE)
    for backend in ("numpy", "numba", "cuda"):
        assert re.search(rf"^backend {backend}: \S", out, re.MULTILINE)
    assert "backend numpy: available" in out
    threads = grukern.get_num_threads()
    assert re.search(rf"^threads: {threads} for grukern's kernels", out, re.MULTILINE)
    assert re.search(r"^threading layer: \w+ \(.+\)$", out, re.MULTILINE)
    for start in ("BLAS: ", "CPU: ", "GPU: "):
        assert re.search(rf"^{start}\S", out, re.MULTILINE)
