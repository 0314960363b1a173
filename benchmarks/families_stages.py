"""Where the families' CPU time goes, stage by stage: transformers' own path against the project's
(our op and `dino_demo.families.fast`), on the published architectures of `benchmarks/families.py`.

    python benchmarks/families_stages.py --models grounding-dino deformable-detr --json OUT [--ops]

One image (800x1333) per path after a warm-up, the model called as `families.inference.run` calls
it. Each stage's CPU seconds (the process's, all threads: `time.process_time`) are read by forward
hooks on the stage's modules: the backbone, the text encoder, per encoder layer its parts
(Grounding DINO: image-text fusion, text enhancer, deformable self-attention, the rest of the
deformable layer = feed-forward and norms; Deformable DETR: deformable self-attention, feed-forward),
the decoder; "other" is the rest of the forward (input projections, position embeddings, the
two-stage selection, heads). With `--ops`, one more forward per path under `torch.profiler` lists
the operators with the most self CPU time.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import MODELS, save_model  # noqa: E402

def _stage_of(name: str) -> str | None:
    parts = name.split(".")
    if parts[:1] != ["model"]:
        return None
    rest = ".".join(parts[1:])
    if rest in ("backbone", "text_backbone", "decoder"):
        return {"backbone": "backbone", "text_backbone": "text encoder", "decoder": "decoder"}[rest]
    if not rest.startswith("encoder.layers."):
        return None
    tail = ".".join(parts[4:])
    return {"fusion_layer": "encoder fusion", "text_enhancer_layer": "encoder text enhancer",
            "deformable_layer.self_attn": "encoder deformable attention", "self_attn": "encoder deformable attention",
            "deformable_layer": "encoder deformable layer", "mlp": "encoder feed-forward"}.get(tail)


def stage_seconds(handle, inputs) -> dict[str, float]:
    """CPU seconds per stage of one forward of `handle.model` on `inputs`."""
    totals: dict[str, float] = defaultdict(float)
    started: dict[int, float] = {}
    hooks = []
    for name, module in handle.model.named_modules():
        stage = _stage_of(name)
        if stage is None:
            continue

        def pre(module, args, key=id(module)):
            started[key] = time.process_time()

        def post(module, args, output, key=id(module), stage=stage):
            totals[stage] += time.process_time() - started.pop(key)

        hooks += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        start = time.process_time()
        with torch.inference_mode():
            handle.model(**inputs)
        totals["total"] = time.process_time() - start
    finally:
        for hook in hooks:
            hook.remove()
    if "encoder deformable layer" in totals:  # the deformable layer holds its attention: keep the rest
        totals["encoder deformable layer"] -= totals.get("encoder deformable attention", 0.0)
    totals["other"] = totals["total"] - sum(v for k, v in totals.items() if k != "total")
    return dict(totals)


def measure(name: str, folder: Path, ops: bool) -> dict:
    from dino_demo.families.load import load

    handles = {"transformers": load(folder, our_op=False, fast=False), "our op": load(folder)}
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (800, 1333, 3), dtype=np.uint8))
    text = {"text": "cat . remote control . couch ."} if handles["our op"].family.text_prompt else {}
    row = {"model": name, "threads": torch.get_num_threads(), "stages": {}, "top_ops": {}}
    for path, handle in handles.items():
        inputs = dict(handle.processor(images=image, return_tensors="pt", **text))
        with torch.inference_mode():
            handle.model(**inputs)  # warm-up
        row["stages"][path] = stage_seconds(handle, inputs)
        print(name, path, json.dumps({k: round(v, 2) for k, v in row["stages"][path].items()}), file=sys.stderr,
              flush=True)
        if ops:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof, \
                    torch.inference_mode():
                handle.model(**inputs)
            events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
            row["top_ops"][path] = [(e.key, round(e.self_cpu_time_total / 1e6, 3), e.count) for e in events]
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), file=sys.stderr, flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--ops", action="store_true", help="also profile operators (one more forward per path)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    logging.getLogger("kernels").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(name, save_model(name, Path(tmp) / name), args.ops) for name in args.models]
    for row in rows:
        stages = row["stages"]
        print(f"\n{row['model']}: CPU seconds per stage")
        print(f"  {'stage':30s} {'transformers':>12s} {'our op':>8s} {'ratio':>6s}")
        for stage in stages["transformers"]:
            theirs, ours = stages["transformers"][stage], stages["our op"].get(stage, 0.0)
            ratio = f"{theirs / ours:5.2f}x" if ours > 0.005 else ""
            print(f"  {stage:30s} {theirs:12.2f} {ours:8.2f} {ratio:>6s}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
