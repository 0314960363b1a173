"""Where a DINO's inference time goes, op by op: `torch.profiler` over one run of the fast copy
the app runs (`runtime.speed.optimize_for_inference`, the compiled CPU kernel), after warm-up runs.

    python benchmarks/profile_ops.py --variant dino-4scale-r50 --size 800 1066 --precision bfloat16

Weights: the parity kit's recipe (the work does not depend on them); input: the fixture photo
resized to exactly H x W. Prints each warm-up run's stage times, then the profiled run's table of
ops by self CPU time (wall time of the op on the calling thread, its worker threads included) and,
with --shapes, the heaviest input shapes of the top ops.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from dino_demo.model.config import get_config
    from dino_demo.model.detector import build_model
    from dino_demo.parity.recipe import recipe_state_dict
    from dino_demo.runtime import dino as inference
    from dino_demo.runtime.result import PRECISIONS
    from dino_demo.runtime.speed import optimize_for_inference

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="dino-4scale-r50")
    parser.add_argument("--size", nargs=2, type=int, default=(800, 1066), metavar=("H", "W"))
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="bfloat16")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rows", type=int, default=20, help="ops listed")
    parser.add_argument("--shapes", type=int, default=0, help="also list the N heaviest input shapes of the top 5 ops")
    args = parser.parse_args(argv)

    cfg = get_config(args.variant)
    model = build_model(cfg).eval()
    model.load_state_dict(recipe_state_dict(model.state_dict()))
    model = optimize_for_inference(model)
    height, width = args.size
    cfg = cfg.replace(min_size=min(args.size), max_size=max(args.size))
    photo = ROOT / "tests" / "fixtures" / "official_dino" / "input_a.png"
    image = np.asarray(Image.open(photo).convert("RGB").resize((width, height), Image.BILINEAR))
    for _ in range(args.warmup):
        result = inference.run(model, cfg, image, precision=args.precision)
        print({stage: round(seconds, 3) for stage, seconds in result.timings.items()})
    with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes > 0) as prof:
        result = inference.run(model, cfg, image, precision=args.precision)
    print({stage: round(seconds, 3) for stage, seconds in result.timings.items()}, "(profiled)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    if args.shapes:
        top = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:5]
        by_shape = prof.key_averages(group_by_input_shape=True)
        for op in top:
            rows = sorted((e for e in by_shape if e.key == op.key), key=lambda e: -e.self_cpu_time_total)
            print(op.key)
            for e in rows[:args.shapes]:
                print(f"  {e.self_cpu_time_total / 1e3:8.1f} ms  x{e.count:<4d} {str(e.input_shapes)[:140]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
