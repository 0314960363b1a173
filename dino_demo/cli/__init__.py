"""The command line: `python -m dino_demo COMMAND ...`, or `dino-demo COMMAND ...` once installed.

Each command is a module with `main(argv) -> int`, imported only when it runs (so `--help` and
light commands stay fast). Errors a user can cause (`ValueError`: a bad image, checkpoint or
option) print one line and exit with status 1.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

COMMANDS = {
    "detect": ("dino_demo.cli.detect", "detect objects in images, write annotated copies and detections.json"),
    "export": ("dino_demo.cli.export", "export the detector to ONNX (deformable attention as GridSample)"),
    "zoo": ("dino_demo.cli.zoo", "list the model zoo (published COCO weights) and what is on this machine"),
    "convert": ("dino_demo.cli.convert", "convert a detrex or MMDetection checkpoint to the official layout"),
    "evaluate": ("dino_demo.train.evaluate", "COCO AP of a checkpoint on a COCO-format set or held-out synthetic scenes"),
    "train": ("dino_demo.train.loop", "train or fine-tune DINO with the official recipe (COCO-format data, torchrun)"),
    "synthetic": ("dino_demo.train.synthetic", "write a synthetic shapes data set in COCO format"),
    "dump": ("dino_demo.parity.dump", "write a batch's outputs and internals to .npz (parity reference layout)"),
    "fixture-weights": ("dino_demo.parity.recipe", "write a checkpoint holding the parity kit's recipe weights"),
    "build-ops": ("dino_demo.ops.build", "compile the deformable-attention kernels ahead of time"),
}


def model_source(args: argparse.Namespace) -> tuple[str, str]:
    """(the source the model loaders read, the model's name) for a command's --model ZOO_ID or
    --checkpoint (the shipped model when neither is given)."""
    from ..sources import zoo
    from ..sources.checkpoint import DEFAULT_CHECKPOINT

    if args.model and args.model.startswith("hf:"):  # a transformers detector on the Hub (dino_demo.families)
        return args.model, args.model
    if args.model:
        entry = zoo.get(args.model)
        return entry.source_id, entry.id
    source = args.checkpoint or str(DEFAULT_CHECKPOINT)
    return source, source if "://" in source else Path(source).name


def usage() -> str:
    lines = "\n".join(f"  {name:16s} {help_}" for name, (_, help_) in COMMANDS.items())
    return (f"usage: python -m dino_demo COMMAND [options]   (or: dino-demo COMMAND [options])\n\n"
            f"commands:\n{lines}\n\n`COMMAND --help` describes each.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(usage(), file=sys.stderr)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown command {argv[0]!r}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(COMMANDS[argv[0]][0])
    try:
        return int(module.main(argv[1:]) or 0)
    except ValueError as error:  # CheckpointError, ImageError, bad options: the user's to fix
        print(f"error: {error}", file=sys.stderr)
        return 1
