"""`python -m dino_demo evaluate`: COCO box AP of a model (pycocotools) on a COCO-format folder or
held-out synthetic scenes, as `dino_demo.train.evaluate` computes it.

    python -m dino_demo evaluate --checkpoint weights/dino-tiny.pth --seed 1000 --count 200
    python -m dino_demo evaluate --checkpoint runs/mine/best.pth --images val/ --annotations val.json
"""
from __future__ import annotations

import argparse
import json

import torch

from ..sources.loader import build
from ..sources.source import Source
from ..train.data import CocoDetectionSet, SyntheticScenes
from ..train.evaluate import evaluate
from ..train.synthetic import SceneSpec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dino_demo evaluate",
                                     description="COCO AP of a checkpoint on a COCO-format folder or held-out synthetic scenes.")
    parser.add_argument("--checkpoint", required=True, help="any model source: a path, a URL, shipped, zoo:ID, ...")
    parser.add_argument("--images", default=None, help="image folder of a COCO-format set (with --annotations)")
    parser.add_argument("--annotations", default=None, help="its COCO annotation file")
    parser.add_argument("--seed", type=int, default=1000, help="synthetic scenes: the set's seed")
    parser.add_argument("--count", type=int, default=200, help="synthetic scenes: how many")
    parser.add_argument("--size", type=int, default=None, help="synthetic scenes: size (default: the model's min_size)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: its own choice)")
    args = parser.parse_args(argv)
    if (args.images is None) != (args.annotations is None):
        parser.error("--images and --annotations go together")
    if args.threads:
        torch.set_num_threads(args.threads)
    model, cfg = build(Source.parse(args.checkpoint))
    if args.images:
        dataset = CocoDetectionSet(args.images, args.annotations)
    else:
        dataset = SyntheticScenes(args.seed, args.count, SceneSpec(size=args.size or cfg.min_size))
    metrics = evaluate(model, cfg, dataset)
    print(json.dumps({k: round(v, 4) for k, v in metrics.items()}))
    return 0
