"""docs/performance.md is generated from the results store: regenerating it changes nothing."""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _report_module():
    spec = importlib.util.spec_from_file_location("report", ROOT / "benchmarks" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_page_is_what_the_results_store_generates(tmp_path):
    report = _report_module()
    page = tmp_path / "docs" / "performance.md"
    page.parent.mkdir()
    report.main(["--page", str(page)])
    generated = page.read_text().replace(str(page), "docs/performance.md")
    committed = (ROOT / "docs" / "performance.md").read_text()
    assert generated == committed, (
        "docs/performance.md is stale: run python benchmarks/report.py --page docs/performance.md"
    )
    assert "| G3 |" in committed and "Machine" in committed
    if importlib.util.find_spec("matplotlib") is not None:  # the plot beside the page
        assert (page.parent / "performance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_gpu_blocks_of_readme_and_cuda_doc_are_what_the_results_store_generates():
    report = _report_module()
    paths = sorted(str(p) for p in ROOT.glob(report.GPU_PATTERN))
    blocks = report.gpu_blocks(paths)
    if not blocks:  # no GPU results committed: nothing generated to compare
        return
    for name, block in report.GPU_BLOCKS.items():
        text = (ROOT / name).read_text()
        assert report.replace_block(text, blocks[block], name) == text, (
            f"{name}'s GPU block is stale: run python benchmarks/report.py --page "
            "docs/performance.md"
        )


def test_a_file_without_the_gpu_markers_is_refused_by_name():
    report = _report_module()
    with pytest.raises(ValueError, match=r"README\.md has no generated GPU block"):
        report.replace_block("no markers here", "table", "README.md")
