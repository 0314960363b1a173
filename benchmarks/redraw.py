"""How long the app takes to re-draw from a stored result (no model run), per control.

    python benchmarks/redraw.py [--variant dino-4scale-r50] [--size 800 1066] [--repeats 5]

Runs the model once, stores the result as a Detect does, then times the page's own callbacks
(`dino_demo.ui.callbacks.Explorer`) that the threshold, query, layer, head, level, proposal,
heatmap and encoder controls trigger, and prints the median and worst time of each, and the bytes
the stored result holds. "encoder click" picks a new token each time (the encoder re-runs from its
stored input); "encoder layer" re-draws a token already picked. Without --checkpoint the official
variants use the parity kit's recipe weights; dino-tiny uses the shipped weights.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="dino-4scale-r50")
    parser.add_argument("--checkpoint")
    parser.add_argument("--size", nargs=2, type=int, default=[800, 1066], metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import numpy as np
    from PIL import Image

    from dino_demo.explore import inference
    from dino_demo.explore.speed import optimize_for_inference
    from dino_demo.sources.checkpoint import load_model
    from dino_demo.model.config import get_config
    from dino_demo.model.detector import build_model
    from dino_demo.parity.recipe import recipe_state_dict
    from dino_demo.explore.encoder import token_at
    from dino_demo.sources.checkpoint import DEFAULT_CHECKPOINT
    from dino_demo.ui.callbacks import Explorer
    from dino_demo.ui.choices import ModelChoice
    from dino_demo.ui.settings import AppSettings
    from dino_demo.ui.store import StoredResult

    if args.checkpoint or args.variant == "dino-tiny":
        model, cfg = load_model(args.checkpoint or str(DEFAULT_CHECKPOINT), variant=args.variant)
    else:
        cfg = get_config(args.variant)
        model = build_model(cfg).eval()
        model.load_state_dict(recipe_state_dict(model.state_dict()))
    model = optimize_for_inference(model)
    height, width = args.size
    cfg = cfg.replace(min_size=min(height, width), max_size=max(height, width))
    photo = ROOT / "tests" / "fixtures" / "official_dino" / "input_a.png"
    image = np.asarray(Image.open(photo).convert("RGB").resize((width, height), Image.BILINEAR))
    start = time.perf_counter()
    result = inference.run(model, cfg, image)
    print(f"model run: {time.perf_counter() - start:.2f} s at {width}x{height} ({args.variant})")

    explorer = Explorer(AppSettings(device="cpu", model_concurrency=1))
    # The explorer's model cache holds this model, as after a Detect.
    source = ModelChoice("benchmark", None, "benchmark", cfg)
    explorer.models.add(source.source, None, model, cfg)
    stored = StoredResult.of(result, "input_a.png", model=source, encoder_layers=cfg.enc_layers)
    print(f"stored result: {stored.nbytes / 2**20:.1f} MiB")
    session = explorer.session(None, None)
    session.result_key = explorer.store.put(stored, session.id)
    m, l, _ = result.attention_shape
    k = result.num_layers
    slots = [int(s) for s in result.detections.query_slot[: args.repeats + 1]]
    slot = slots[0]
    enc = len(model.transformer.encoder.layers)
    picks = [token_at(result, i % l, (0.05 + 0.9 * i / (args.repeats + 1)) * width, 0.5 * height)
             for i in range(args.repeats + 2)]  # the warm-up's token, then a new one per timed click
    cases = {
        "threshold / max detections": lambda i: explorer.change_detection_options(
            session, 0.1 + 0.02 * i, 100, slot, 100, "score"),
        "query (all views of a query)": lambda i: explorer.select_query(
            session, slots[i % len(slots)], 0.3, 100, k, "all", "all", "level"),
        "layer": lambda i: explorer.inspect(session, slot, 1 + i % k, "all", "all", "level"),
        "head": lambda i: explorer.inspect(session, slot, k, str(1 + i % m), "all", "level"),
        "level": lambda i: explorer.inspect(session, slot, k, "all", str(1 + i % l), "level"),
        "offsets + zoom": lambda i: explorer.inspect(session, slot, 1 + i % k, "all", "all", "level",
                                                     ["offset vectors", "zoom in"]),
        "proposals (top 900)": lambda i: explorer.change_proposals(session, 900, "score", 0.3, 100),
        "heatmaps (selected query)": lambda i: explorer.change_heatmaps(
            session, slot, 0.3, 100, "selected query", 1 + i % k, "all"),
        "heatmaps (all detections)": lambda i: explorer.change_heatmaps(
            session, slot, 0.0, 100, "detections above the threshold", k, "all"),
        "encoder click (new token)": lambda i: explorer.select_token(
            session, str(picks[i + 1].level + 1), *picks[i + 1].cell, enc, "all", "all", "level"),
        "encoder layer (same token)": lambda i: explorer.inspect_encoder(
            session, picks[0], 1 + i % enc, "all", "all", "level", []),
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
