"""Command line: `python -m grukern bench [--sizes G1,G3 | --size T,B,I,H] [--backends ...]
[--json PATH] [--plot PATH.png]`, and `python -m grukern info`."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import pathlib
import sys

import grukern
from grukern import bench, info, results


def _size(text: str) -> tuple[int, int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected four positive integers T,B,I,H, got {text!r}")
    return values


def _grid_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    unknown = [name for name in names if name not in bench.GRID]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown sizes {unknown}; the grid has {list(bench.GRID)}"
        )
    return names


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _repeats(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _grid_help() -> str:
    return "; ".join(f"{name} T={p.T} B={p.B} I={p.I} H={p.H}" for name, p in bench.GRID.items())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m grukern", description="grukern's command line: bench and info."
    )
    parser.add_argument("--version", action="version", version=f"grukern {grukern.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser(
        "bench",
        help="check, then time, every backend and installed peer (torch, onnxruntime, openvino)",
        description="Each runner is checked against the float64 reference, then timed after a "
        "warm-up call (JIT excluded): --repeat rounds per cell, each the median of a timed loop. "
        "The table gives their min / median / max and ratios of medians to grukern numba; "
        "a warning follows when rounds disagree or the machine was busy.",
    )
    where = sub.add_mutually_exclusive_group()
    where.add_argument(
        "--sizes",
        type=_grid_names,
        default=list(bench.DEFAULT_SIZES),
        metavar="G1,G2,...",
        help=f"sizes of the grid ({_grid_help()}); default {','.join(bench.DEFAULT_SIZES)}",
    )
    where.add_argument("--size", type=_size, metavar="T,B,I,H", help="one problem of this size")
    sub.add_argument(
        "--backends",
        type=_names,
        metavar="numba,torch,...",
        help=f"runners, from {', '.join(bench.RUNNERS)}; default: every one available here",
    )
    sub.add_argument(
        "--repeat",
        type=_repeats,
        default=5,
        metavar="N",
        help="timed rounds per cell (default 5); the table gives their min, median and max",
    )
    sub.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    sub.add_argument("--reset-before", action="store_true", help="the reset_after=False variant")
    sub.add_argument("--json", metavar="PATH", help="also store the results (grukern.results)")
    sub.add_argument("--plot", metavar="PATH.png", help="also save a bar chart (needs matplotlib)")
    commands.add_parser(
        "info",
        help="versions, backends, threads and threading layer, BLAS, CPU features, GPUs",
        description=info.__doc__.splitlines()[0],
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "info":
        print("\n".join(info.lines()))
        return 0
    if args.size:
        problems = [bench.Problem(*args.size)]
    else:
        problems = [bench.GRID[name] for name in args.sizes]
    problems = [
        dataclasses.replace(p, dtype=args.dtype, reset_after=not args.reset_before)
        for p in problems
    ]
    try:  # every argument problem is reported before any work is done
        _check_output("--json", args.json)
        _check_output("--plot", args.plot)
        if args.plot and importlib.util.find_spec("matplotlib") is None:
            raise ValueError(
                "--plot needs matplotlib: pip install matplotlib (or grukern[notebooks])"
            )
        bench.check_runners(problems, args.backends)
    except ValueError as error:
        print(f"python -m grukern bench: {error}", file=sys.stderr)
        return 2
    load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    measured = bench.run(problems, args.backends, repeats=args.repeat)
    print(bench.format_table(measured))
    for warning in bench.warnings_about(measured, load_average, os.cpu_count() or 1):
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        results.write(args.json, [record for r in measured for record in r.records()])
    if args.plot:
        bench.plot(measured, args.plot)
    return 0


def _check_output(option: str, path: str | None) -> None:
    """An output file's folder must exist and be writable."""
    if path is None:
        return
    folder = pathlib.Path(path).resolve().parent
    if not folder.is_dir():
        raise ValueError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{option} {path}: the folder {folder} is not writable")


if __name__ == "__main__":
    sys.exit(main())
