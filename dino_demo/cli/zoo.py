"""`python -m dino_demo zoo`: the model zoo's entries and which are on this machine;
`--fetch ID` downloads one (or finds it) and prints its path."""
from __future__ import annotations

import argparse

from ..families import hub
from ..sources import zoo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dino_demo zoo", description=__doc__.split("\n")[0])
    parser.add_argument("--fetch", metavar="ZOO_ID", help="download this entry (or hf:ORG/NAME) unless it is here, "
                                                          "print its path")
    args = parser.parse_args(argv)
    if args.fetch:
        print(hub.download(args.fetch) if args.fetch.startswith(hub.HUB_PREFIX) else zoo.resolve(args.fetch))
        return 0
    rows = [(s.entry.id, f"{s.entry.box_ap:.1f}", s.entry.layout, f"~{s.entry.size_mb} MB",
             str(s.path) if s.cached else "-") for s in zoo.status()]
    header = ("id", "AP", "layout", "size", "local file")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(f"\n`--model ID` in detect, dump and convert; files downloaded by hand go to {zoo.folder()}\n")
    _table([(e.source_id, e.family, "-" if e.box_ap is None else f"{e.box_ap:.1f}", f"{e.params_m:g} M",
             f"~{e.size_mb} MB", e.licence, e.note) for e in hub.ENTRIES],
           ("transformers model", "family", "AP", "params", "size", "licence", "note"))
    print("\n`--model hf:ORG/NAME[@REV]` in detect (any Hub detector of these families; AP: COCO val2017 as "
          "published, zero-shot for Grounding DINO; - where not listed here)")
    return 0


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
