"""End-to-end images per second of transformers' detectors on the CPU (Deformable DETR, Grounding
DINO, RT-DETR, D-FINE), stock (transformers' own modules, and `grid_sample` attention where the
model has deformable attention) against the project's path: what the app runs, the fused CPU
kernel through the `kernels` layer mapping (`dino_demo.families.op`) and the inference fast paths
of `dino_demo.families.fast`.

    python benchmarks/families.py --repeats 5 --json benchmarks/results/families.json
    python benchmarks/families.py --models rt-detr d-fine --precision bfloat16

The models are the published architectures (Deformable DETR R50 two-stage with box refinement;
Grounding DINO Swin-T with BERT-base; RT-DETR R50; D-FINE-L, HGNetV2-B4) with seeded random
weights: the work does not depend on the weights. Each image (800x1333: the DETRs resize it to
800 px on the short side, RT-DETR and D-FINE to 640x640) goes through
`dino_demo.families.inference.run` (behind `families.detector.FamilyDetector`) as the app and
`detect` run it (processor, model with the internals captured, post-processing), both paths in
`--precision`. The two paths are two loads of the same folder (`load(..., our_op=False,
fast=False)` and `load(...)`), alternating image by image, so that both see the same load on a
shared machine; the figures are medians of wall time (images/s) and of the process's CPU time
(less sensitive to other jobs on a loaded machine).
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers as T


MODELS = ("deformable-detr", "grounding-dino", "rt-detr", "d-fine")


def _resnet50() -> dict:
    return dict(backbone_config=T.ResNetConfig(out_features=["stage2", "stage3", "stage4"]), use_timm_backbone=False,
                backbone=None, use_pretrained_backbone=False)


def save_model(name: str, folder: Path) -> Path:
    """Write the published architecture `name` with seeded random weights into `folder`."""
    torch.manual_seed(0)
    size = {"shortest_edge": 800, "longest_edge": 1333}
    if name in ("rt-detr", "d-fine"):  # RT-DETR R50 (ResNet-50-vd) / D-FINE-L (HGNetV2-B4), 640x640
        config = T.RTDetrConfig() if name == "rt-detr" else T.DFineConfig()
        model_class = T.RTDetrForObjectDetection if name == "rt-detr" else T.DFineForObjectDetection
        model = model_class(config)
        processor = T.RTDetrImageProcessor(size={"height": 640, "width": 640})
    elif name == "deformable-detr":
        model = T.DeformableDetrForObjectDetection(T.DeformableDetrConfig(two_stage=True, with_box_refine=True,
                                                                          **_resnet50()))
        processor = T.DeformableDetrImageProcessor(size=size)
    else:
        swin = T.SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                            out_features=["stage2", "stage3", "stage4"])
        model = T.GroundingDinoForObjectDetection(T.GroundingDinoConfig(backbone_config=swin, use_timm_backbone=False,
                                                                        backbone=None, use_pretrained_backbone=False))
        vocab = folder / "vocab.txt"
        folder.mkdir(parents=True, exist_ok=True)
        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", "cat", "remote", "control", "couch"]
        vocab.write_text("\n".join(words + [f"w{i}" for i in range(30522 - len(words))]) + "\n")
        processor = T.GroundingDinoProcessor(image_processor=T.GroundingDinoImageProcessor(size=size),
                                             tokenizer=T.BertTokenizer(str(vocab)))
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def measure(name: str, folder: Path, repeats: int, warmup: int, precision: str = "float32") -> dict:
    from dino_demo.families.inference import run
    from dino_demo.families.load import load

    handles = {"transformers": load(folder, our_op=False, fast=False), "our op": load(folder)}
    image = np.random.default_rng(0).integers(0, 255, (800, 1333, 3), dtype=np.uint8)
    prompt = "cat . remote control . couch ." if handles["our op"].family.text_prompt else None
    seconds = {"transformers": [], "our op": []}
    cpu_seconds = {"transformers": [], "our op": []}
    backends = {}
    for step in range(warmup + repeats):
        for path in ("transformers", "our op") if step % 2 == 0 else ("our op", "transformers"):
            start, cpu_start = time.perf_counter(), time.process_time()
            result = run(handles[path], image, prompt=prompt, precision=precision)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            backends[path] = result.backend[0]
            if step >= warmup:
                seconds[path].append(elapsed)
                cpu_seconds[path].append(cpu)
            note = "" if step >= warmup else " (warm-up)"
            print(f"{name} {path}: {elapsed:.2f} s wall, {cpu:.2f} s CPU{note}", file=sys.stderr, flush=True)
    wall = {path: statistics.median(values) for path, values in seconds.items()}
    cpu = {path: statistics.median(values) for path, values in cpu_seconds.items()}
    return {"model": name, "size": [800, 1333], "input": list(result.input_size), "threads": torch.get_num_threads(),
            "precision": precision,
            "repeats": repeats, "backends": backends, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "images_per_s": {path: 1 / m for path, m in wall.items()},
            "speedup": wall["transformers"] / wall["our op"], "cpu_speedup": cpu["transformers"] / cpu["our op"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                        help="both paths under this precision (bfloat16: autocast, as `detect --precision`)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    logging.getLogger("kernels").setLevel(logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            row = measure(name, save_model(name, Path(tmp) / name), args.repeats, args.warmup, args.precision)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"{'model':18s} {'transformers img/s':>18s} {'our op img/s':>13s} {'speed-up':>9s} {'CPU-time speed-up':>18s}")
    for row in rows:
        ips = row["images_per_s"]
        print(f"{row['model']:18s} {ips['transformers']:18.3f} {ips['our op']:13.3f} {row['speedup']:8.2f}x "
              f"{row['cpu_speedup']:17.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
