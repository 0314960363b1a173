"""How long the app takes to re-draw from a stored result (no model run), per control.

    python benchmarks/redraw.py [--variant dino-4scale-r50] [--size 800 1066] [--repeats 5]

Runs the model once, stores the result as a Detect does, then times the page's own handlers
(the handlers of `dino_demo.ui`'s tabs, through the one `redraw` guard of `ui.results.Results`) that the threshold, query, layer,
head, level, proposal, heatmap and encoder controls trigger, and prints the median and worst time
of each, and the bytes the stored result holds. "encoder click" picks a new token each time (the
encoder re-runs from its stored input); "encoder layer" re-draws a token already picked. Without --checkpoint the official
variants use the parity kit's recipe weights; dino-tiny uses the shipped weights.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from arguments import timing_parser

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = timing_parser(__doc__, repeats=5)
    args = parser.parse_args(argv)

    import numpy as np
    from PIL import Image

    from dino_demo.runtime import dino as inference
    from dino_demo.runtime.speed import optimize_for_inference
    from dino_demo.sources.checkpoint import load_model
    from dino_demo.model.config import get_config
    from dino_demo.model.detector import build_model
    from dino_demo.parity.recipe import recipe_state_dict
    from dino_demo.explore.encoder import token_at
    from dino_demo.sources.checkpoint import DEFAULT_CHECKPOINT
    from dino_demo.explore.stored import StoredResult
    from dino_demo.ui import detections_tab, encoder_tab, query_tab, selection
    from dino_demo.ui.events import PageEvent
    from dino_demo.ui.services import Services
    from dino_demo.ui.choices import ModelChoice
    from dino_demo.ui.inputs import PageControls
    from dino_demo.ui.settings import AppSettings

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

    services = Services.make(AppSettings(device="cpu", model_concurrency=1))
    # The app's model cache holds this model, as after a Detect.
    source = ModelChoice("benchmark", None, "benchmark", cfg)
    services.models.cache.add(source.source, None, inference.DINODetector(model, cfg, "benchmark"))
    stored = StoredResult.of(result, "input_a.png", model=source, encoder_layers=cfg.enc_layers)
    print(f"stored result: {stored.nbytes / 2**20:.1f} MiB")
    session = services.sessions.session(None, None)
    session.result_key = services.results.store.put(stored, session.id)
    m, l, _ = result.attention_shape
    k = result.num_layers
    slots = [int(s) for s in result.detections.query_slot[: args.repeats + 1]]
    slot = slots[0]
    enc = len(model.transformer.encoder.layers)
    picks = [token_at(result, i % l, (0.05 + 0.9 * i / (args.repeats + 1)) * width, 0.5 * height)
             for i in range(args.repeats + 2)]  # the warm-up's token, then a new one per timed click

    def page(method, token=None, **controls):
        """The page's handler `method` for these controls (the others at their defaults)."""
        owner = next((part for part in (selection, detections_tab, query_tab) if hasattr(part, method)),
                     encoder_tab.EncoderTab(services.models))
        return services.results.redraw(getattr(owner, method), PageEvent(session, PageControls.parse(controls), token))

    cases = {
        "threshold / max detections": lambda i: page(
            "change_detection_options", threshold=0.1 + 0.02 * i, max_detections=100, slot=slot),
        "query (all views of a query)": lambda i: page(
            "choose_query", query=slots[i % len(slots)], threshold=0.3, max_detections=100, layer=k),
        "layer": lambda i: page("inspect", slot=slot, layer=1 + i % k),
        "head": lambda i: page("inspect", slot=slot, layer=k, head=str(1 + i % m)),
        "level": lambda i: page("inspect", slot=slot, layer=k, level=str(1 + i % l)),
        "offsets + zoom": lambda i: page("inspect", slot=slot, layer=1 + i % k,
                                         point_extras=["offset vectors", "zoom in"]),
        "proposals (top 900)": lambda i: page("change_proposals", top_n=900, threshold=0.3, max_detections=100),
        "heatmaps (selected query)": lambda i: page("change_heatmaps", slot=slot, threshold=0.3, max_detections=100,
                                                    heat_layer=1 + i % k),
        "heatmaps (all detections)": lambda i: page("change_heatmaps", slot=slot, threshold=0.0, max_detections=100,
                                                    heat_source="detections above the threshold", heat_layer=k),
        "encoder click (new token)": lambda i: page(
            "select_token", token_level=str(picks[i + 1].level + 1), token_row=picks[i + 1].cell[0],
            token_col=picks[i + 1].cell[1], enc_layer=enc),
        "encoder layer (same token)": lambda i: page("inspect_encoder", token=picks[0], enc_layer=1 + i % enc),
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
