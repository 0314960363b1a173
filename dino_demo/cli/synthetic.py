"""`python -m dino_demo synthetic --seed S --count N --size 320 --out DIR`: write a synthetic shapes
data set (`DIR/000000.png ...` and `DIR/annotations.json`, COCO format; see `dino_demo.train.synthetic`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..train.synthetic import CLASS_NAMES, SceneSpec, write_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dino_demo synthetic", description="Generate a synthetic shape detection data set (COCO format).")
    parser.add_argument("--seed", type=int, required=True,
                        help="the data set's seed: scene i of seed S is the same on every machine (the shipped model "
                             "trained on seed 0 and was evaluated on seed 1000)")
    parser.add_argument("--count", type=int, required=True, help="how many scenes to write")
    parser.add_argument("--size", type=int, default=SceneSpec.size,
                        help=f"side of the square scenes in pixels, at least 32 (default {SceneSpec.size})")
    parser.add_argument("--max-objects", type=int, default=SceneSpec.max_objects,
                        help=f"shapes attempted per scene; occlusion may remove some (default {SceneSpec.max_objects})")
    parser.add_argument("--category-ids", type=int, nargs=len(CLASS_NAMES), default=None, metavar="ID",
                        help=f"COCO ids of {', '.join(CLASS_NAMES)} (default 1..{len(CLASS_NAMES)})")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder: 000000.png, 000001.png, ... and annotations.json (COCO format)")
    args = parser.parse_args(argv)
    ids = tuple(args.category_ids) if args.category_ids else None
    coco = write_dataset(args.out, args.seed, args.count, SceneSpec(size=args.size, max_objects=args.max_objects), ids)
    print(f"wrote {len(coco['images'])} images, {len(coco['annotations'])} objects to {args.out}")
    return 0
