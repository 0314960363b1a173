"""`python -m dino_demo export --checkpoint CK --out model.onnx`: write the whole detector as an
ONNX file that ONNX Runtime and OpenVINO run, checked with onnx.checker.

CK is DINO (shipped, a checkpoint, zoo:ID, untrained:VARIANT) or a transformers detector (a
save_pretrained folder or hf:ORG/NAME: Deformable DETR, Grounding DINO, RT-DETR v1/v2, D-FINE,
LW-DETR, RF-DETR). `--sampling grid-sample` (the default: the faster in ONNX Runtime and OpenVINO)
writes the deformable attention with GridSample; `--sampling gather` with Gather-based bilinear
sampling and no GridSample node (TensorRT, runtimes without it).

`--size H W` makes a fully static graph for a padded H x W input (batch of one; every image is
resized by the official rule to fit into it, so that 800 1333 keeps landscape images at their
official size, and padded); `--dynamic` (the default) keeps batch, height and width free.
`--internals` adds the encoder's selection, the decoder's reference boxes and its sampling
locations and attention weights to the outputs. Run the file with
`python -m dino_demo detect --onnx model.onnx IMAGE... --out DIR`.

A transformers detector is exported for one padded input size (its processor's, or `--size H W`),
or with `--dynamic` for any input size (one image; Deformable DETR and Grounding DINO, whose
processors keep the aspect ratio); with `--internals` also its deformable encoder's sampling
locations and weights (Deformable DETR, Grounding DINO). Grounding DINO keeps the prompt's tokens
as inputs, and its tokenizer in the file's metadata.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
from pathlib import Path

from ..explore.models import build
from ..export.metadata import DEFAULT_OPSET, DEFAULT_SAMPLING, MIN_OPSET, SAMPLINGS
from ..model.config import MIN_INPUT_SIDE, VARIANTS
from . import INSTALL_EXPORT, model_source

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dino_demo export", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", metavar="ZOO_ID",
                        help="a model zoo entry (`python -m dino_demo zoo` lists them), downloaded once")
    source.add_argument("--checkpoint", help="checkpoint path or http(s) URL (official, detrex or MMDetection "
                                             "layout), shipped, zoo:ID, untrained:VARIANT, a transformers model "
                                             "folder (save_pretrained) or hf:ORG/NAME (default: shipped, "
                                             "weights/dino-tiny.pth)")
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="force a variant instead of detecting it")
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="fixed padded input size")
    shape.add_argument("--dynamic", action="store_true",
                       help="any batch and input size (the default for DINO); for Deformable DETR and Grounding "
                            "DINO any input size, one image")
    parser.add_argument("--internals", action="store_true",
                        help="also output the top-k token indices, per-layer references and boxes, and the "
                             "decoder's sampling locations and attention weights")
    parser.add_argument("--sampling", choices=sorted(SAMPLINGS), default=DEFAULT_SAMPLING,
                        help=f"how the deformable attention samples: grid-sample (ONNX GridSample, the faster "
                             f"in ONNX Runtime and OpenVINO) or gather (Gather-based bilinear, no GridSample node: "
                             f"for TensorRT and other runtimes without it); default {DEFAULT_SAMPLING}")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset, {MIN_OPSET} or later (default {DEFAULT_OPSET})")
    args = parser.parse_args(argv)
    if args.size is not None and min(args.size) < MIN_INPUT_SIDE:
        parser.error(f"--size sides must be at least {MIN_INPUT_SIDE}, got {args.size}")
    if args.opset < MIN_OPSET:
        parser.error(f"--opset must be at least {MIN_OPSET} (what torch's exporter writes), got {args.opset}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(f"export needs {' and '.join(missing)}, not installed here: {INSTALL_EXPORT}")
    from ..export.onnx import export_onnx

    for noisy in ("onnx_ir", "onnxscript"):  # a line per graph pass, and notes on ops it leaves unfolded
        logging.getLogger(noisy).setLevel(logging.ERROR)
    source = model_source(args)
    name = source.name
    if source.is_transformers:
        return _export_family(args, source)
    model, cfg = build(source, args.variant)
    log.info("exporting %s (%s) to %s", name, cfg.name, args.out)
    report = export_onnx(model, args.out, canvas=tuple(args.size) if args.size else None, internals=args.internals,
                         opset=args.opset, source=name, sampling=args.sampling)
    timing = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in report.seconds.items())
    shape = (f"fixed 1x3x{args.size[0]}x{args.size[1]}" if args.size else
             f"dynamic, sides >= {report.info.min_side}")
    log.info("wrote %s: %.1f MB, %s input, %s sampling; %s; onnx.checker passed", report.path, report.bytes / 1e6,
             shape, args.sampling, timing)
    return 0


def _export_family(args: argparse.Namespace, source) -> int:
    """A transformers detector (`export.families`), for one padded size."""
    from ..export.families import export_family
    from ..families.load import load

    if args.variant:
        raise ValueError("--variant applies to DINO checkpoints, not to transformers models")
    handle = load(source, fast=False)  # transformers' own modules: the fast path's oneDNN ops have no ONNX form
    log.info("exporting %s (%s) to %s", source.name, handle.settings.family, args.out)
    report = export_family(handle, args.out, sampling=args.sampling, canvas=tuple(args.size) if args.size else None,
                           internals=args.internals, opset=args.opset, source=source.name, dynamic=args.dynamic)
    timing = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in report.seconds.items())
    height, width = report.info.canvas
    shape = (f"dynamic 1x3xHxW (sides >= {report.info.min_side})" if report.info.dynamic else
             f"fixed 1x3x{height}x{width}")
    log.info("wrote %s: %.1f MB, %s input, %s sampling; %s; onnx.checker passed", report.path,
             report.bytes / 1e6, shape, args.sampling, timing)
    return 0
