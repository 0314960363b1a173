"""Command line: `python -m dino_demo detect IMAGE... [--checkpoint CK] [--variant V]
[--threshold T] [--max-size S] [--device D] --out DIR`.

Writes DIR/<image name>.png with the detections drawn, and DIR/detections.json: a list with one
{"file_name", "width", "height", "detections": [{"label", "category_id", "score", "box_xyxy"}]}
per image, boxes in the image's own (upright) pixels. Images that cannot be read are reported and
skipped; the exit status is 1 if any were.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from ..io.checkpoint import DEFAULT_CHECKPOINT
from ..model.config import VARIANTS
from ..io.images import ImageError, load_image
from ..explore.inference import MIN_INPUT_SIDE, detection_records, detection_view, load, model_input_size, run
from ..explore.visualize import render_detections

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dino_demo detect", description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT),
                        help="checkpoint path or http(s) URL, or untrained:VARIANT (default: the shipped "
                             "weights/dino-tiny.pth)")
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="force a variant instead of detecting it")
    parser.add_argument("--threshold", type=float, default=0.3, help="minimum score (default 0.3)")
    parser.add_argument("--max-size", type=int, default=None,
                        help="cap on the longer side of the model input (default: the variant's own resize)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    if not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.max_size is not None and args.max_size < MIN_INPUT_SIDE:
        parser.error(f"--max-size must be at least {MIN_INPUT_SIDE}, got {args.max_size}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model, cfg = load(args.checkpoint, args.variant, args.device)
    model_id = Path(args.checkpoint).name if "://" not in args.checkpoint else args.checkpoint
    args.out.mkdir(parents=True, exist_ok=True)

    records, failed, used_names = [], 0, set()
    for path in tqdm(args.images, desc="detect", unit="image"):
        try:
            loaded = load_image(path)
            model_input_size(cfg, *loaded.array.shape[:2], args.max_size)
        except (ImageError, ValueError) as err:
            log.error("%s: skipped: %s", path, err)
            failed += 1
            continue
        for note in loaded.notes:
            log.info("%s: %s", path, note)
        result = run(model, cfg, loaded.array, max_size=args.max_size, model_id=model_id)
        view = detection_view(result, args.threshold)
        height, width = result.size
        records.append({
            "file_name": path.name, "width": width, "height": height,
            "detections": [{k: d[k] for k in ("label", "category_id", "score", "box_xyxy")}
                           for d in detection_records(view)],
        })
        captions = [f"{name} {score:.2f}" for name, score in zip(view.names, view.scores)]
        drawn = render_detections(result.image, view.boxes, captions, view.labels)
        Image.fromarray(drawn).save(args.out / _unique_name(path, used_names))

    (args.out / "detections.json").write_text(json.dumps(records, indent=1))
    log.info("wrote %d annotated images and detections.json to %s", len(records), args.out)
    return 1 if failed else 0


def _unique_name(path: Path, used: set[str]) -> str:
    """`<stem>.png`, or `<stem>-<n>.png` when an earlier input had the same stem."""
    name, n = f"{path.stem}.png", 1
    while name in used:
        name, n = f"{path.stem}-{n}.png", n + 1
    used.add(name)
    return name


__all__ = ["main", "parse_args"]
