"""Command line: `python -m grukern bench [--sizes G1,G3 | --size T,B,I,H] [--backends ...]
[--json PATH] [--plot PATH.png]`, and `python -m grukern info`."""

from __future__ import annotations

import argparse
import dataclasses
import sys

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m grukern", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser(
        "bench",
        help="check, then time, every backend and installed peer (torch, onnxruntime)",
        description="Each runner is checked against the float64 reference, then timed after a "
        "warm-up call (JIT excluded); the table gives medians and ratios to grukern numba.",
    )
    where = sub.add_mutually_exclusive_group()
    where.add_argument(
        "--sizes",
        type=_grid_names,
        default=list(bench.DEFAULT_SIZES),
        metavar="G1,G2,...",
        help=f"sizes of the grid {dict((k, str(v)) for k, v in bench.GRID.items())} "
        f"(default {','.join(bench.DEFAULT_SIZES)})",
    )
    where.add_argument("--size", type=_size, metavar="T,B,I,H", help="one problem of this size")
    sub.add_argument(
        "--backends",
        type=_names,
        metavar="numba,torch,...",
        help="grukern backends and peers (torch, onnxruntime) to run; default: all available",
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
    try:
        measured = bench.run(problems, args.backends)
    except ValueError as error:
        print(f"python -m grukern bench: {error}", file=sys.stderr)
        return 2
    print(bench.format_table(measured))
    if args.json:
        results.write(args.json, [record for r in measured for record in r.records()])
    if args.plot:
        try:
            bench.plot(measured, args.plot)
        except RuntimeError as error:
            print(f"python -m grukern bench: {error}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
