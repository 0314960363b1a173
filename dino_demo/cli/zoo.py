"""`python -m dino_demo zoo`: the model zoo's entries and which are on this machine;
`--fetch ID` downloads one (or finds it) and prints its path."""
from __future__ import annotations

import argparse

from ..sources import zoo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dino_demo zoo", description=__doc__.split("\n")[0])
    parser.add_argument("--fetch", metavar="ZOO_ID", help="download this entry unless it is here, print its path")
    args = parser.parse_args(argv)
    if args.fetch:
        print(zoo.resolve(args.fetch))
        return 0
    rows = [(s.entry.id, f"{s.entry.box_ap:.1f}", s.entry.layout, f"~{s.entry.size_mb} MB",
             str(s.path) if s.cached else "-") for s in zoo.status()]
    header = ("id", "AP", "layout", "size", "local file")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(f"\n`--model ID` in detect, dump and convert; files downloaded by hand go to {zoo.folder()}")
    return 0
