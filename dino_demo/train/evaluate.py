"""COCO box AP of a DINO model (pycocotools), through the one inference path
(`explore.inference.run_batch`) and the one results format (`io.results`).

Command line: `python -m dino_demo evaluate --checkpoint weights/dino-tiny.pth --seed 1000 --count 200`
scores a checkpoint on held-out synthetic scenes.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
from dataclasses import dataclass

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..explore.inference import run_batch
from ..explore.views import detection_view
from ..io.results import coco_results, detections_document, image_record
from ..model.config import DINOConfig
from .synthetic import SceneSpec, coco_annotations, generate_scene

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@dataclass(frozen=True)
class EvalSet:
    """A held-out synthetic set: scenes 0..count-1 of `seed`, `size` px."""

    seed: int = 1000
    count: int = 100
    size: int = 256
    max_objects: int = SceneSpec.max_objects

    def spec(self) -> SceneSpec:
        return SceneSpec(size=self.size, max_objects=self.max_objects)


def predict(model: torch.nn.Module, cfg: DINOConfig, images: list[np.ndarray], image_ids: list[int],
            batch_size: int = 8) -> list[dict]:
    """COCO results (all `num_select` detections per image, no threshold) for `images`."""
    entries = []
    for start in range(0, len(images), batch_size):
        results = run_batch(model, cfg, images[start:start + batch_size], internals=False)
        entries += [image_record(result, detection_view(result, 0.0), image_id=image_id)
                    for result, image_id in zip(results, image_ids[start:start + batch_size])]
    document = detections_document(entries, model_id="", variant=cfg.name, threshold=0.0, max_detections=None,
                                   max_input_side=None)
    return coco_results(document)


def coco_box_ap(ground_truth: dict, results: list[dict]) -> dict[str, float]:
    """AP, AP50, AP75, APs, APm, APl of `results` against a COCO ground-truth dict."""
    if not results:
        return {name: 0.0 for name in METRIC_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = ground_truth
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(METRIC_NAMES, evaluator.stats[:6])}


def evaluate(model: torch.nn.Module, cfg: DINOConfig, eval_set: EvalSet = EvalSet(),
             batch_size: int = 8) -> dict[str, float]:
    """COCO box metrics of `model` on `eval_set`; the model is left in eval mode."""
    model.eval()
    scenes = [generate_scene(eval_set.seed, i, eval_set.spec()) for i in range(eval_set.count)]
    image_ids = list(range(1, len(scenes) + 1))
    results = predict(model, cfg, [s.image for s in scenes], image_ids, batch_size)
    ground_truth = coco_annotations(scenes, [f"{i:06d}.png" for i in range(len(scenes))])
    return coco_box_ap(ground_truth, results)


def main(argv: list[str] | None = None) -> int:
    from ..io.checkpoint import load_model

    parser = argparse.ArgumentParser(prog="python -m dino_demo evaluate",
                                     description="COCO AP of a checkpoint on held-out synthetic scenes.")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--seed", type=int, default=EvalSet.seed)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", type=int, default=None, help="scene size (default: the model's min_size)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, cfg = load_model(args.checkpoint)
    metrics = evaluate(model, cfg, EvalSet(seed=args.seed, count=args.count, size=args.size or cfg.min_size))
    print(json.dumps({k: round(v, 4) for k, v in metrics.items()}))
    return 0
