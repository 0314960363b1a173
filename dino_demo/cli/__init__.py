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

from ..model.config import MIN_INPUT_SIDE, VARIANTS
from ..sources.source import HUB_PREFIX, SHIPPED_TEXT, Source

COMMANDS = {
    "detect": ("dino_demo.cli.detect", "detect objects in images, write annotated copies and detections.json"),
    "video": ("dino_demo.cli.video", "detect and track objects in every frame of a clip (detections.json, annotated clip)"),
    "denoise": ("dino_demo.cli.denoise", "DINO's contrastive denoising queries for an image's boxes, through the decoder"),
    "export": ("dino_demo.cli.export", "export DINO or a transformers detector to ONNX (Gather-based sampling or GridSample)"),
    "zoo": ("dino_demo.cli.zoo", "list the model zoo (published COCO weights) and what is on this machine"),
    "convert": ("dino_demo.cli.convert", "convert a detrex or MMDetection checkpoint to the official layout"),
    "analyze": ("dino_demo.cli.analyze", "misses and false alarms of a COCO-format set explained (analysis.json; torchrun)"),
    "evaluate": ("dino_demo.cli.evaluate", "COCO AP of a checkpoint on a COCO-format set or held-out synthetic scenes"),
    "train": ("dino_demo.cli.train", "train or fine-tune DINO with the official recipe (COCO-format data, torchrun)"),
    "synthetic": ("dino_demo.cli.synthetic", "write a synthetic shapes data set in COCO format"),
    "dump": ("dino_demo.cli.dump", "write a batch's outputs and internals to .npz (parity reference layout)"),
    "fixture-weights": ("dino_demo.cli.fixture_weights", "write a checkpoint holding the parity kit's recipe weights"),
    "build-ops": ("dino_demo.cli.build_ops", "compile the deformable-attention kernels ahead of time"),
}

# What to run when the ONNX packages (the `export` extra) are missing.
INSTALL_EXPORT = 'pip install ".[export]" (in the project folder; or: pip install onnx onnxscript onnxruntime)'


def add_model_arguments(parser: argparse.ArgumentParser) -> argparse._MutuallyExclusiveGroup:
    """--checkpoint and --model (read by `model_source`), one or the other; the group is returned
    so that a command can add another way to name its model."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint",
                        help="checkpoint path or http(s) URL (official, detrex or MMDetection layout), a "
                             "transformers model folder (save_pretrained), shipped, zoo:ID or untrained:VARIANT "
                             "(default: shipped, weights/dino-tiny.pth)")
    source.add_argument("--model", metavar="ZOO_ID",
                        help="a model zoo entry or hf:ORG/NAME[@REV] (`python -m dino_demo zoo` lists them), "
                             "downloaded once")
    return source


def add_detection_arguments(parser: argparse.ArgumentParser, per: str) -> None:
    """--variant, --prompt, --threshold, --max-detections and --max-size, as `detect` and `video`
    take them (`per`: what --max-detections counts in, "image" or "frame")."""
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="force a variant instead of detecting it")
    parser.add_argument("--prompt", default=None,
                        help='what to detect, for text-prompted models (Grounding DINO): "cat . remote control ."')
    parser.add_argument("--threshold", type=float, default=0.3, help="minimum score (default 0.3)")
    parser.add_argument("--max-detections", type=int, default=None,
                        help=f"keep at most this many detections per {per} (default: all above the threshold)")
    parser.add_argument("--max-size", type=int, default=None,
                        help="cap on the longer side of the model input (default: the variant's own resize)")


def model_source(args: argparse.Namespace) -> Source:
    """The model a command's --model ZOO_ID (or hf:ORG/NAME[@REV], a transformers detector on the
    Hub) or --checkpoint SOURCE names (any text `Source.parse` reads: a path, a transformers model
    folder, a URL, shipped, zoo:ID, untrained:VARIANT); the shipped model when neither is given."""
    if getattr(args, "model", None):
        return Source.parse(args.model) if args.model.lower().startswith(HUB_PREFIX) else Source.zoo(args.model)
    return Source.parse(args.checkpoint or SHIPPED_TEXT)


def check_run_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace,
                        at_least_one: tuple[str, ...] = ()) -> None:
    """`parser.error` unless --threshold is in [0, 1], each option named in `at_least_one` (as args names
    it: "batch_size") is unset or at least 1, --max-size is unset or at least MIN_INPUT_SIDE, and --device
    is cpu or cuda; checked in that order."""
    if not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold must be in [0, 1], got {args.threshold}")
    for name in at_least_one:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.max_size is not None and args.max_size < MIN_INPUT_SIDE:
        parser.error(f"--max-size must be at least {MIN_INPUT_SIDE}, got {args.max_size}")
    if args.device not in ("cpu", "cuda"):
        parser.error(f"--device must be cpu or cuda, got {args.device!r}")


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
