"""`python -m grukern bench` on a tiny problem: the table lists every backend with small errors."""

import re

import pytest

import grukern
from grukern.__main__ import main


def test_bench_prints_a_row_per_backend_with_small_errors(capsys):
    assert main(["bench", "--size", "3,2,4,5", "--dtype", "float64"]) == 0
    table = capsys.readouterr().out
    assert "T=3 B=2 I=4 H=5 float64" in table
    assert "BLAS:" in table
    for backend in grukern.backends():
        row = re.search(rf"^{backend} .*$", table, re.MULTILINE)
        assert row, f"no row for {backend} in\n{table}"
        assert float(row.group(0).split()[-1]) < 1e-12


@pytest.mark.parametrize("size", ["3,2,4", "3,2,0,5", "a,b,c,d"])
def test_bench_rejects_a_bad_size(size, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--size", size])
    assert exit_info.value.code == 2
    assert "expected four positive integers T,B,I,H" in capsys.readouterr().err
