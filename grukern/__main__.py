"""Command line: `python -m grukern bench [--size T,B,I,H] [--dtype float32|float64]`."""

from __future__ import annotations

import argparse
import sys

from grukern import bench


def _problem(args) -> bench.Problem:
    T, B, I, H = args.size
    return bench.Problem(T, B, I, H, dtype=args.dtype, reset_after=not args.reset_before)


def _size(text: str) -> tuple[int, int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected four positive integers T,B,I,H, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grukern", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    bench_parser = commands.add_parser(
        "bench", help="time every available backend and installed peer on one problem"
    )
    default = bench.DEFAULT_PROBLEM
    bench_parser.add_argument(
        "--size",
        type=_size,
        default=(default.T, default.B, default.I, default.H),
        metavar="T,B,I,H",
        help=f"problem size (default {default.T},{default.B},{default.I},{default.H})",
    )
    bench_parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    bench_parser.add_argument(
        "--reset-before", action="store_true", help="the reset_after=False variant"
    )
    args = parser.parse_args(argv)
    problem = _problem(args)
    print(f"grukern bench on {problem} (JIT warm-up excluded)", file=sys.stderr)
    print(bench.format_table(problem, bench.run(problem)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
