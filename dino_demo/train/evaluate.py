"""COCO box AP of a DINO model on a synthetic shape set (pycocotools), through the normal
inference path: resize + normalize (preprocess) -> model -> top-k post-processing.

Detections report model class indices; COCO results use `category_id = label + 1`
(see `dino_demo.synthetic`).

Command line: `python -m dino_demo evaluate --checkpoint weights/dino-tiny.pth --seed 1000 --count 200`.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..model.config import DINOConfig
from ..model.outputs import Detections
from ..model.postprocess import postprocess
from ..io.preprocess import batch_images, resize_image, to_tensor_normalized
from .synthetic import SceneSpec, category_id, coco_annotations, generate_scene

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


@torch.no_grad()
def detect(model: torch.nn.Module, cfg: DINOConfig, images: list[np.ndarray]) -> list[Detections]:
    """Detections (boxes in each input image's pixels) for a list of HxWx3 uint8 images."""
    device = next(model.parameters()).device
    tensors = [to_tensor_normalized(resize_image(Image.fromarray(image), cfg.min_size, cfg.max_size))
               for image in images]
    batch, masks = batch_images(tensors)
    output = model(batch.to(device), masks.to(device))
    sizes = torch.tensor([image.shape[:2] for image in images], dtype=torch.float32, device=device)
    return postprocess(output.pred_logits, output.pred_boxes, sizes, cfg.num_select)


def coco_results(detections: list[Detections], image_ids: list[int]) -> list[dict]:
    """COCO result records (xywh boxes, category_id = label + 1) for per-image detections."""
    results = []
    for image_id, found in zip(image_ids, detections):
        for score, label, box in zip(found.scores.tolist(), found.labels.tolist(), found.boxes.tolist()):
            x0, y0, x1, y1 = box
            results.append({"image_id": image_id, "category_id": category_id(label),
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score})
    return results


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
    detections = []
    for start in range(0, len(scenes), batch_size):
        detections += detect(model, cfg, [s.image for s in scenes[start:start + batch_size]])
    image_ids = list(range(1, len(scenes) + 1))
    ground_truth = coco_annotations(scenes, [f"{i:06d}.png" for i in range(len(scenes))])
    return coco_box_ap(ground_truth, coco_results(detections, image_ids))


def main(argv: list[str] | None = None) -> None:
    from ..io.checkpoint import load_model

    parser = argparse.ArgumentParser(description="COCO AP of a checkpoint on held-out synthetic scenes.")
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

