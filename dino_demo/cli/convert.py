"""`python -m dino_demo convert IN --out OUT.pth`: any supported checkpoint -> an official-layout file.

IN is a path, an http(s) URL or a zoo id (`--model ID`); detrex and MMDetection layouts are
recognised from their keys. OUT is written by the project's one checkpoint writer: the official
state_dict, the config (variant, flavour, heads, classes), plus `source` (layout, flavour, file,
what was done) and the class names and COCO category ids, all readable with `weights_only=True`.
The converted model is loaded with strict=True before anything is written.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..io.labels import category_ids, class_names
from ..model.config import FLAVOURS, VARIANTS
from ..sources.checkpoint import open_checkpoint, save_checkpoint
from ..sources.source import Source

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dino_demo convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", help="checkpoint path or http(s) URL (official, detrex or MMDetection)")
    parser.add_argument("--model", metavar="ZOO_ID", help="a model zoo entry instead of SOURCE")
    parser.add_argument("--out", type=Path, required=True, help="the official-layout checkpoint to write")
    parser.add_argument("--flavour", choices=sorted(FLAVOURS),
                        help="compute as this code base does (default: what the file implies)")
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="force a variant instead of recognising it")
    parser.add_argument("--half", action="store_true", help="store float16 weights (loaded back as float32)")
    args = parser.parse_args(argv)
    if (args.source is None) == (args.model is None):
        parser.error("give either SOURCE or --model ZOO_ID")
    source = Source.zoo(args.model) if args.model else Source.parse(args.source)
    loaded = open_checkpoint(source, args.variant, flavour=args.flavour)
    model, cfg, converted, path, entry = loaded.model, loaded.cfg, loaded.converted, loaded.path, loaded.entry
    save_checkpoint(model, args.out, half=args.half,
                    source={"file": path.name, "layout": converted.layout, "flavour": converted.flavour,
                            "notes": list(converted.notes), **({"zoo_id": entry.id} if entry else {})},
                    class_names=list(class_names(cfg)), category_ids=list(category_ids(cfg)))
    log.info("%s (%s layout, %s flavour) -> %s: %s", path.name, converted.layout, converted.flavour, args.out, cfg.name)
    return 0
