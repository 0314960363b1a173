"""Fidelity of half-precision runs (autocast) against float32, on the same model and images.

    python benchmarks/precision.py --precision float16 --device cuda [--variant dino-4scale-r50] [--count 20]
    python benchmarks/precision.py --precision bfloat16 --device cpu --checkpoint weights/dino-tiny.pth
    python benchmarks/precision.py --precision bfloat16 --device cpu --variant dino-4scale-r50 --count 4 --max-size 512

For each image (synthetic shape scenes, seed 4242) the model, loaded as the app loads it
(`explore.models.load`: inference fast paths), runs through `runtime.dino.run` in float32
and in the chosen precision; reported are the largest difference of the encoder output, how many
of the encoder's top-k selected tokens agree (as sets), how many float32 detections (score >=
threshold) have a half-precision detection of the same class with IoU > 0.9, the largest score
difference of the top 10, and the median seconds per image of each precision.
Without --checkpoint the official variants use the parity kit's recipe weights (random-like:
their top-k overlap is meaningful, their detections are not).
"""
from __future__ import annotations

import argparse
import json
import sys

from arguments import parse_counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", choices=("float16", "bfloat16"), required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--variant", default="dino-tiny")
    parser.add_argument("--checkpoint")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--size", type=int, default=256, help="side of the synthetic scenes")
    parser.add_argument("--threshold", type=float, default=0.3)
    parser.add_argument("--max-size", type=int, default=None,
                        help="cap on the model input's longer side (default: the variant's resize, 800 px short side "
                             "for the official variants)")
    parser.add_argument("--json", help="also write the report here")
    args = parse_counts(parser, argv, "count")

    import statistics
    import time
    from pathlib import Path

    import torch

    from dino_demo.runtime.dino import run
    from dino_demo.runtime.precision import support
    from dino_demo.runtime.speed import optimize_for_inference
    from dino_demo.explore.draw.data import detection_view
    from dino_demo.sources.checkpoint import load_model
    from dino_demo.model.box_ops import box_iou
    from dino_demo.model.config import get_config
    from dino_demo.model.detector import build_model
    from dino_demo.parity.recipe import recipe_state_dict
    from dino_demo.train.synthetic import SceneSpec, generate_scene

    if args.checkpoint:
        model, cfg = load_model(args.checkpoint, device=args.device)
    else:
        cfg = get_config(args.variant)
        model = build_model(cfg).eval()
        model.load_state_dict(recipe_state_dict(model.state_dict()))
        model = model.to(args.device)
    model = optimize_for_inference(model)
    memory_diff, score_diff, overlap, matched, total = 0.0, 0.0, [], 0, 0
    seconds = {"float32": [], args.precision: []}
    for index in range(args.count):
        image = generate_scene(4242, index, SceneSpec(size=args.size)).image
        start = time.perf_counter()
        full = run(model, cfg, image, max_size=args.max_size)
        seconds["float32"].append(time.perf_counter() - start)
        start = time.perf_counter()
        half = run(model, cfg, image, precision=args.precision, max_size=args.max_size)
        seconds[args.precision].append(time.perf_counter() - start)
        score_diff = max(score_diff, float((full.detections.scores[:10] - half.detections.scores[:10]).abs().max()))
        memory_diff = max(memory_diff, float((full.output.memory - half.output.memory).abs().max()))
        a, b = (set(r.output.selection.topk_indices[0].tolist()) for r in (full, half))
        overlap.append(len(a & b) / len(a))
        reference, candidate = detection_view(full, args.threshold), detection_view(half, args.threshold)
        total += len(reference)
        if len(reference) and len(candidate):
            iou, _ = box_iou(torch.as_tensor(reference.boxes), torch.as_tensor(candidate.boxes))
            same_class = torch.as_tensor(reference.labels[:, None] == candidate.labels[None, :])
            matched += int(((iou > 0.9) & same_class).any(1).sum())
    report = {
        "model": args.checkpoint or f"{args.variant} (recipe weights)", "device": args.device,
        "input_size": list(full.input_size),
        "precision": args.precision, "images": args.count,
        "encoder_output_max_abs_diff": round(memory_diff, 5),
        "topk_set_overlap_min": round(min(overlap), 4), "topk_set_overlap_mean": round(sum(overlap) / len(overlap), 4),
        "detections_float32": total, "detections_matched": matched,
        "matched_fraction": round(matched / total, 4) if total else None,
        "top10_score_max_abs_diff": round(score_diff, 5),
        "median_seconds": {name: round(statistics.median(times), 3) for name, times in seconds.items()},
        "device_support": support(args.device).note(args.precision),
    }
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
