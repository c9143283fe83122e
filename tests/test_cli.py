"""`python -m grukern bench`: the table lists every runner, each checked against the reference."""

import re

import pytest

import grukern
import grukern.results
from grukern.__main__ import main


def test_bench_prints_a_checked_row_per_backend(capsys):
    assert main(["bench", "--size", "3,2,4,5", "--dtype", "float64"]) == 0
    out = capsys.readouterr()
    assert "T=3 B=2 I=4 H=5 float64" in out.out
    assert "BLAS:" in out.out
    for backend in grukern.backends():
        row = re.search(rf"^  {backend} .*$", out.out, re.MULTILINE)
        assert row, f"no row for {backend} in\n{out.out}"
        max_error = float(row.group(0).split()[4])
        assert max_error < 1e-12
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


def test_bench_names_an_unavailable_runner(capsys):
    assert main(["bench", "--sizes", "G6", "--backends", "numpy,jax"]) == 2
    assert "unknown or unavailable here: ['jax']" in capsys.readouterr().err


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


def test_bench_plot_without_matplotlib_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # import fails
    arguments = ["bench", "--size", "3,2,4,5", "--backends", "numpy"]
    assert main([*arguments, "--plot", str(tmp_path / "x.png")]) == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err


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
