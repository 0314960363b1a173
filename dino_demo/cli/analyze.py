"""`python -m dino_demo analyze --images DIR --annotations COCO.json --out DIR`: run the model on a
COCO-format set and write DIR/analysis.json (COCO AP, matched counts at the threshold, every miss
with its nearest query and verdict, every false alarm with its kind, per category, per size and
per image, worst first; the format is in `dino_demo.explore.analysis`).

Under `torchrun --nproc-per-node N python -m dino_demo analyze ...` (or `torchrun -m dino_demo
analyze`) the images are split across the N processes (Gloo on CPUs, NCCL with --device cuda, one
GPU per process) and the main process writes the same file one process writes.

In public mode (`SPACE_ID` / `DINO_DEMO_PUBLIC`) the set is bounded by what its annotation file
lists, as on the page (`dino_demo.io.set_limits`).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..model.config import VARIANTS
from . import check_run_arguments, model_source

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dino_demo analyze", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True, help="the set's image folder")
    parser.add_argument("--annotations", type=Path, required=True, help="its COCO annotation file")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="checkpoint path or http(s) URL, or untrained:VARIANT "
                                             "(default: the shipped weights/dino-tiny.pth)")
    source.add_argument("--model", metavar="ZOO_ID", help="a model zoo entry, downloaded once")
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="force a variant instead of detecting it")
    parser.add_argument("--threshold", type=float, default=0.3, help="score threshold of the counts (default 0.3)")
    parser.add_argument("--max-size", type=int, default=None, help="cap on the longer side of the model input")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="images of one size run together (default 1, as the official evaluation)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda (under torchrun: one GPU per process)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    check_run_arguments(parser, args, at_least_one=("batch_size",))
    return args


def main(argv: list[str] | None = None) -> int:
    from ..explore.analysis import analyze
    from ..explore.models import load
    from ..io.set_limits import SetLimits, check_listed, read_json
    from ..sources.download import Policy
    from ..train import distributed
    from ..train.data import CocoDetectionSet

    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no GPU is visible")
    if Policy.from_env().public:  # a public server's bounds: what the set lists, as on the page
        check_listed(read_json(args.annotations, args.annotations.name), args.annotations.name, SetLimits())
    dataset = CocoDetectionSet(args.images, args.annotations)
    source = model_source(args)
    start = time.perf_counter()
    with distributed.process_group(args.device) as process:
        with distributed.main_first():  # a download happens once
            detector = load(source, args.variant, process.device)
        names = [dataset.coco.imgs[i]["file_name"] for i in dataset.ids]
        bar = tqdm(total=len(distributed.shard(len(dataset))), desc="analyze", unit="image", mininterval=5,
                   disable=not process.is_main)
        document = analyze(detector, dataset, threshold=args.threshold, file_names=names.__getitem__,
                           model_id=source.name, max_size=args.max_size, batch_size=args.batch_size,
                           settings={"annotations": str(args.annotations), "images": str(args.images)},
                           on_image=lambda done, total: bar.update(done - bar.n))
        bar.close()
        if process.is_main:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "analysis.json").write_text(json.dumps(document, indent=1))
            s = document["summary"]
            log.info("%d images in %.1f s on %d process(es): AP %.3f AP50 %.3f, %d true positives, %d false "
                     "positives, %d false negatives at %.2f; wrote %s", s["images"], time.perf_counter() - start,
                     process.world_size, s["AP"], s["AP50"], s["true_positives"], s["false_positives"],
                     s["false_negatives"], args.threshold, args.out / "analysis.json")
    return 0
