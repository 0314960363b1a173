"""`python -m dino_demo detect IMAGE... --out DIR`: detect objects, write annotated copies and
detections.json.

Images larger than 4096 px are run downscaled to that; their boxes are scaled back to the pixels of
the image as given. Writes DIR/<image name>.png with the detections drawn (`<name>-1.png`, ... when two inputs share a
name) and DIR/detections.json in the format of `dino_demo.io.results` (model, settings, and per
image its path as given, size and detections), plus DIR/coco_results.json, the same detections as
the bare list `pycocotools` loads. With --save-internals, also DIR/<name>.internals.npz per image
(the model's internals, see `dino_demo.io.internals`; its name is the image entry's "internals").
With --trace, also DIR/<name>.trace.json per image: every stage of the forward pass with its shape
and first values, named as in the official code (see `dino_demo.explore.trace`; entry "trace").
Images that cannot be read are reported and skipped; the exit status is then 1. When a model that
knows only the eight synthetic shapes (the shipped one) runs on an image that is not one of its
synthetic scenes (a photo), a warning says so once, and that image's entry carries it in "notes".

With `--onnx model.onnx` (a file from `python -m dino_demo export`) the model runs in ONNX Runtime
or OpenVINO (`--runtime`, on the CPU, float32 unless `--precision bfloat16` with OpenVINO); for
DINO's files this command never imports torch. `--save-internals` then writes the file's internal
outputs (an `--internals` export) as the .npz.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .. import env
from ..runtime.detections import DetectionView
from ..explore.draw.figures import render_detections
from ..explore.domain import CLI_REMEDY, synthetic_model_note
from ..io.images import MAX_SIDE, ImageError, load_image
from ..io.results import coco_results, detections_document, image_record
from ..model.config import MIN_INPUT_SIDE
from . import add_detection_arguments, add_model_arguments, model_source

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dino_demo detect", description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE",
                        help=f"image files (PNG, JPEG, WebP, ...); larger than {MAX_SIDE} px on a side are run downscaled")
    source = add_model_arguments(parser)
    source.add_argument("--onnx", type=Path, help="an ONNX file written by `python -m dino_demo export`, run with "
                                                  "ONNX Runtime or OpenVINO (CPU) instead of PyTorch")
    parser.add_argument("--runtime", choices=("onnxruntime", "openvino"), default=None,
                        help="what runs an --onnx file (default onnxruntime)")
    add_detection_arguments(parser, per="image")
    parser.add_argument("--device", default=None, help="PyTorch device (default cpu)")
    parser.add_argument("--allow-large-model", action="store_true",
                        help="transformers folders: allow configs and inputs beyond the usual bounds (still bounded; "
                             "see docs/deployment.md; ignored in public mode)")
    parser.add_argument("--precision", default=None, choices=("float32", "bfloat16", "float16"),
                        help="float32 (default), or bfloat16 / float16 under autocast: faster on GPUs and on "
                             "CPUs with native bfloat16 (AVX-512 BF16, AMX), much slower on other CPUs; the log "
                             "says which this one is")
    parser.add_argument("--save-internals", action="store_true",
                        help="also write <name>.internals.npz per image: detections, encoder selection, boxes and "
                             "references per decoder layer, sampling points and weights of every query")
    parser.add_argument("--trace", action="store_true",
                        help="also write <name>.trace.json per image: the forward pass stage by stage (shapes, first "
                             "values), named as in the official code")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    if not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.max_detections is not None and args.max_detections < 1:
        parser.error(f"--max-detections must be at least 1, got {args.max_detections}")
    if args.max_size is not None and args.max_size < MIN_INPUT_SIDE:
        parser.error(f"--max-size must be at least {MIN_INPUT_SIDE}, got {args.max_size}")
    if args.onnx is not None and (args.variant or args.device or args.trace):
        parser.error("--variant, --device and --trace apply to PyTorch models, not to --onnx")
    if args.onnx is None and args.runtime is not None:
        parser.error("--runtime applies to --onnx files")
    if args.onnx is not None and args.precision == "float16":
        parser.error("--onnx files run in float32, or bfloat16 with --runtime openvino")
    if args.onnx is not None and args.precision == "bfloat16" and args.runtime != "openvino":
        parser.error("--precision bfloat16 with --onnx needs --runtime openvino (ONNX Runtime runs float32)")
    return args


@dataclass(frozen=True)
class Detector:
    """The model behind the command: `check(image)` raises ValueError when the model cannot take an
    image of that size; `detect(image, internals_path, source, trace_path)` returns (result, its
    detections above the threshold), writing the internals file and the trace when given their paths."""

    model_id: str
    variant: str
    check: Callable[[np.ndarray], object]
    detect: Callable[[np.ndarray, Path | None, str, Path | None], tuple[object, DetectionView]]


def torch_detector(args: argparse.Namespace) -> Detector:
    """The PyTorch path (`runtime.Detector.run`)."""
    from ..explore.models import load
    from ..runtime.precision import support
    from ..explore.trace import trace_document, traced_run
    from ..runtime.detections import detection_view
    from ..io.internals import write_internals
    from ..io.preprocess import model_input_size

    source = model_source(args)
    model_id = source.name
    loaded = load(source, args.variant, args.device or "cpu").named(model_id)
    cfg = loaded.config
    own_code = loaded.offers.denoising  # DINO's own forward pass (traced, and its input bounds checked)
    log.info("precision: %s", support(args.device or "cpu").note(args.precision or "float32"))

    if args.trace and not own_code:
        raise ValueError(f"--trace follows DINO's own forward pass; {model_id} is a transformers detector")

    def detect(array: np.ndarray, internals_path: Path | None = None, source: str = "", trace_path: Path | None = None):
        options = {"max_size": args.max_size, "precision": args.precision or "float32"}
        if trace_path is not None:
            result, stages = traced_run(loaded.model, cfg, array, model_id=model_id, **options)
            trace_path.write_text(json.dumps(trace_document(result, stages, source=source), indent=1))
        else:
            result = loaded.run(array, internals=internals_path is not None, prompt=args.prompt, **options)
        if internals_path is not None:
            write_internals(result, internals_path, source=source)
        return result, detection_view(result, args.threshold, args.max_detections)

    if not own_code:
        return Detector(model_id, cfg.name, lambda array: None, detect)
    return Detector(model_id, cfg.name, lambda array: model_input_size(cfg, *array.shape[:2], args.max_size), detect)


def onnx_detector(args: argparse.Namespace) -> Detector:
    """The ONNX Runtime / OpenVINO path (`export.runtime`, no torch for DINO's files;
    `export.family_runtime` for a transformers detector's)."""
    from ..export.engines import open_session
    from ..export.family_metadata import FAMILY_FORMAT
    from ..export.metadata import FORMAT_KEY
    from ..export.runtime import OnnxDetector, detection_view

    session = open_session(args.onnx, args.runtime or "onnxruntime", args.precision or "float32")
    log.info("running %s in %s, %s", args.onnx.name, session.runtime, session.precision)
    if session.properties.get(FORMAT_KEY) == FAMILY_FORMAT:
        from ..export.family_runtime import FamilyOnnxDetector

        detector = FamilyOnnxDetector(args.onnx, session=session)
        variant, check = detector.variant, (lambda array: None)
        run = lambda array: detector.run(array, prompt=args.prompt, max_size=args.max_size)  # noqa: E731
    else:
        if args.prompt is not None:
            raise ValueError("--prompt applies to text-prompted models; this file is a DINO export with fixed classes")
        detector = OnnxDetector(args.onnx, session=session)
        variant = detector.info.config.name
        check = lambda array: detector.input_size(*array.shape[:2], args.max_size)  # noqa: E731
        run = lambda array: detector.run(array, max_size=args.max_size)  # noqa: E731
    if args.save_internals and not detector.info.internals:
        raise ValueError(f"{args.onnx.name} has no internal outputs: export it with --internals")

    def detect(array: np.ndarray, internals_path: Path | None = None, source: str = "", trace_path: Path | None = None):
        result = run(array)
        if internals_path is not None:
            np.savez_compressed(internals_path, **result.internals)
        return result, detection_view(result, args.threshold, args.max_detections)

    return Detector(detector.model_id, variant, check, detect)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.allow_large_model:  # read where the folder is checked (families.bounds.ModelLimits.from_env)
        os.environ[env.ALLOW_LARGE_MODEL] = "1"
    detector = onnx_detector(args) if args.onnx else torch_detector(args)
    args.out.mkdir(parents=True, exist_ok=True)

    entries, failed, used_names, warned = [], 0, set(), False
    for image_id, path in enumerate(tqdm(args.images, desc="detect", unit="image"), start=1):
        try:
            loaded = load_image(path, max_side=MAX_SIDE)
            detector.check(loaded.array)
        except (ImageError, ValueError) as err:
            log.error("%s: skipped: %s", path, err)
            failed += 1
            continue
        for note in loaded.notes:
            log.info("%s: %s", path, note)
        annotated = _unique_name(path, used_names)
        internals = Path(annotated).stem + ".internals.npz" if args.save_internals else None
        trace = Path(annotated).stem + ".trace.json" if args.trace else None
        result, view = detector.detect(loaded.array, args.out / internals if internals else None, str(path),
                                       args.out / trace if trace else None)
        note = synthetic_model_note(result, CLI_REMEDY)
        if note and not warned:  # once: the same is true of every other photo
            log.warning("%s: %s", path, note)
            warned = True
        entry = {**image_record(result, view, image_id=image_id, file_name=path.name, source=str(path),
                                given_size=loaded.file_size, notes=(note,) if note else ()),
                 "annotated": annotated}
        if internals:
            entry["internals"] = internals
        if trace:
            entry["trace"] = trace
        entries.append(entry)
        drawn = render_detections(result.image, view.boxes, view.captions, view.labels)
        Image.fromarray(drawn).save(args.out / annotated)

    document = detections_document(entries, model_id=detector.model_id, variant=detector.variant,
                                   threshold=args.threshold, max_detections=args.max_detections,
                                   max_input_side=args.max_size)
    (args.out / "detections.json").write_text(json.dumps(document, indent=1))
    (args.out / "coco_results.json").write_text(json.dumps(coco_results(document)))
    log.info("wrote %d annotated images, detections.json and coco_results.json to %s", len(entries), args.out)
    return 1 if failed else 0


def _unique_name(path: Path, used: set[str]) -> str:
    """`<stem>.png`, or `<stem>-<n>.png` when an earlier input had the same stem."""
    name, n = f"{path.stem}.png", 1
    while name in used:
        name, n = f"{path.stem}-{n}.png", n + 1
    used.add(name)
    return name
