"""Command-line options shared by the benchmark scripts (run as `python benchmarks/<name>.py`, which puts
this folder on the import path)."""
from __future__ import annotations

import argparse


def timing_parser(doc: str, repeats: int) -> argparse.ArgumentParser:
    """A parser (described by the script's `doc`) with the options of a benchmark that times one model
    on one input size: --variant, --checkpoint, --size H W and --repeats (default `repeats`)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="dino-4scale-r50")
    parser.add_argument("--checkpoint")
    parser.add_argument("--size", nargs=2, type=int, default=[800, 1066], metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=repeats)
    return parser


def parse_counts(parser: argparse.ArgumentParser, argv: list[str] | None, *counts: str) -> argparse.Namespace:
    """`parser.parse_args(argv)`, then `parser.error` unless each option named in `counts` (as the
    namespace names it: "repeats") is at least 1."""
    args = parser.parse_args(argv)
    for name in counts:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args
