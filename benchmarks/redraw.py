"""How long the app takes to re-draw from a stored result (no model run), per control.

    python benchmarks/redraw.py [--variant dino-4scale-r50] [--size 800 1066] [--repeats 5]

Runs the model once, then times the app's own callbacks that the threshold, query, layer,
head, level and proposal controls trigger, and prints the median and worst time of each.
Without --checkpoint the official variants use the parity kit's recipe weights.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="dino-4scale-r50")
    parser.add_argument("--checkpoint")
    parser.add_argument("--size", nargs=2, type=int, default=[800, 1066], metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import numpy as np
    from PIL import Image

    import app
    from dino_demo import inference
    from dino_demo.io.checkpoint import load_model
    from dino_demo.model.config import get_config
    from dino_demo.model.detector import build_model
    from dino_demo.parity.recipe import recipe_state_dict
    from dino_demo.explore.speed import optimize_for_inference

    if args.checkpoint:
        model, cfg = load_model(args.checkpoint, variant=args.variant)
    else:
        cfg = get_config(args.variant)
        model = build_model(cfg).eval()
        if args.variant != "dino-tiny":
            model.load_state_dict(recipe_state_dict(model.state_dict()))
    model = optimize_for_inference(model)
    height, width = args.size
    cfg = cfg.replace(min_size=min(height, width), max_size=max(height, width))
    photo = ROOT / "tests" / "fixtures" / "official_dino" / "input_a.png"
    image = np.asarray(Image.open(photo).convert("RGB").resize((width, height), Image.BILINEAR))
    start = time.perf_counter()
    result = inference.run(model, cfg, image)
    print(f"model run: {time.perf_counter() - start:.2f} s at {width}x{height} ({args.variant})")

    m, l, _ = result.attention_shape
    slot = int(result.detections.query_index[0])
    cases = {
        "threshold / max detections": lambda i: app.redraw_detections(result, 0.1 + 0.02 * i, 100, slot, None),
        "query (inspect, all heads/levels)": lambda i: app.inspect(int(result.detections.query_index[i]), result.num_layers, "all", "all", "level", result),
        "layer": lambda i: app.inspect(slot, 1 + i % result.num_layers, "all", "all", "level", result),
        "head": lambda i: app.inspect(slot, result.num_layers, str(1 + i % m), "all", "level", result),
        "level": lambda i: app.inspect(slot, result.num_layers, "all", str(1 + i % l), "level", result),
        "proposals (top 900)": lambda i: app.draw_proposals(result, 900, "score", 0.3, 100),
        "refinement": lambda i: app.refine(int(result.detections.query_index[i]), result),
    }
    print(f"{'control':36s} {'median s':>9s} {'max s':>7s}")
    worst = 0.0
    for name, call in cases.items():
        call(0)  # the first call may build the drawing canvas
        times = []
        for i in range(args.repeats):
            start = time.perf_counter()
            call(i)
            times.append(time.perf_counter() - start)
        worst = max(worst, max(times))
        print(f"{name:36s} {statistics.median(times):9.3f} {max(times):7.3f}")
    print(f"slowest re-draw: {worst:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
