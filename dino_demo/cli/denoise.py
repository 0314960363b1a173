"""`python -m dino_demo denoise IMAGE --boxes BOXES.json --seed S --out DIR`: DINO's contrastive
denoising queries for an image's ground-truth boxes, through the decoder; writes DIR/denoising.npz
(see `dino_demo.io.denoising`) and DIR/denoising.png (the first group's queries and where every
layer took them).

BOXES.json is `{"boxes": [{"bbox": [x, y, w, h], "category_id": k}, ...]}` in the image's pixels,
or a COCO annotation file (the image is found by its file name); see `dino_demo.io.boxes`. The
noise settings (dn_number, label noise ratio, box noise scale) are the checkpoint's. With the same
seed, the queries equal the official `prepare_for_cdn`'s bit for bit.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from PIL import Image

from ..io.boxes import MAX_DOCUMENT_BYTES, boxes_from_document
from ..io.images import MAX_SIDE, load_image
from ..model.config import MIN_INPUT_SIDE, VARIANTS
from . import model_source

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dino_demo denoise", description=__doc__.split("\n\n")[0])
    parser.add_argument("image", type=Path, metavar="IMAGE", help="the image whose boxes are denoised")
    parser.add_argument("--boxes", type=Path, required=True, metavar="BOXES.json",
                        help="ground-truth boxes: {\"boxes\": [{\"bbox\": [x, y, w, h], \"category_id\": k}]} in "
                             "pixels, or a COCO annotation file")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint",
                        help="checkpoint path or http(s) URL (official, detrex or MMDetection layout), shipped, "
                             "zoo:ID or untrained:VARIANT (default: shipped, weights/dino-tiny.pth)")
    source.add_argument("--model", metavar="ZOO_ID",
                        help="a model zoo entry (`python -m dino_demo zoo` lists them), downloaded once")
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="force a variant instead of detecting it")
    parser.add_argument("--seed", type=int, required=True, help="torch.manual_seed before the queries are drawn")
    parser.add_argument("--max-size", type=int, default=None, help="cap on the longer side of the model input")
    parser.add_argument("--device", default="cpu", help="PyTorch device (default cpu)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    if not 0 <= args.seed < 2 ** 63:
        parser.error(f"--seed must lie in 0..2**63-1, got {args.seed}")
    if args.max_size is not None and args.max_size < MIN_INPUT_SIDE:
        parser.error(f"--max-size must be at least {MIN_INPUT_SIDE}, got {args.max_size}")
    return args


def main(argv: list[str] | None = None) -> int:
    from ..explore.denoising import run_denoising
    from ..explore.denoising_figures import render_denoising_group
    from ..explore.models import load
    from ..io.denoising import write_denoising
    from ..io.labels import category_ids, class_names

    args = parse_args(argv)
    image = load_image(args.image, max_side=MAX_SIDE)
    for note in image.notes:
        log.info("%s: %s", args.image, note)
    if args.boxes.stat().st_size > MAX_DOCUMENT_BYTES:
        raise ValueError(f"{args.boxes} is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(args.boxes.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{args.boxes} is not JSON: {error}") from None
    source = model_source(args)
    detector = load(source, args.variant, args.device)
    if not detector.offers.denoising:
        raise ValueError(f"denoising runs DINO's own code; {source.name} is a transformers detector")
    model, cfg = detector.model, detector.config
    truth = boxes_from_document(document, image.file_size, category_ids(cfg), args.image.name)
    run = run_denoising(model, cfg, image.array, truth, args.seed, max_size=args.max_size,
                        class_names=class_names(cfg), model_id=source.name)
    args.out.mkdir(parents=True, exist_ok=True)
    write_denoising(run, args.out / "denoising.npz", source=str(args.image))
    Image.fromarray(render_denoising_group(image.array, run, 0)).save(args.out / "denoising.png")
    log.info("%d boxes, %d groups, %d denoising queries; wrote denoising.npz and denoising.png to %s",
             len(truth), run.num_groups, run.pad_size, args.out)
    return 0
