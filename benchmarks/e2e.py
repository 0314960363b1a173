"""End-to-end DINO time (preprocess -> detections): our inference path against a baseline.

    python benchmarks/e2e.py --variant dino-4scale-r50 --size 800 1066 --repeats 3 [--precision bfloat16] [--json OUT]

The baseline is this project's model on the pure-PyTorch op path with default PyTorch settings,
which does the same operations as the official code on the CPU. The candidate is what the app
runs: the model after `dino_demo.runtime.speed.optimize_for_inference`, through `dino_demo.runtime.dino.run`,
with the chosen op backend. Each runs in its own
process (so that peak RSS is each one's own); runs alternate between them after a warm-up, and
the medians are reported. Without --checkpoint the weights are the parity kit's recipe.

With `--precision bfloat16` (or float16) the candidate runs under autocast while the baseline
stays float32 (a float32 candidate runs alongside, `median_seconds.candidate_float32`, so that one
run gives all three times); the two are then expected to differ a little, and their agreement is reported
instead of checked: top-900 selection overlap, detections matched (each of the baseline's
detections scoring >= 0.3, or its top 20 when fewer, has a candidate detection of the same label
at IoU > 0.9), largest score and box differences of the matched ones.

Exits non-zero only when a float32 candidate disagrees with the baseline on the outputs, never
because of speed.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

from arguments import parse_counts, timing_parser

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("preprocess", "backbone", "encoder", "decoder", "postprocess", "total")


def _worker(conn, variant: str, checkpoint: str | None, size: tuple[int, int], backend: str, fast: bool,
            threads: int | None, precision: str = "float32"):
    import numpy as np
    import torch

    from dino_demo import ops
    from dino_demo.runtime import dino as inference
    from dino_demo.runtime.speed import optimize_for_inference
    from dino_demo.sources.checkpoint import load_model
    from dino_demo.model.config import get_config
    from dino_demo.model.detector import build_model
    from dino_demo.parity.recipe import recipe_state_dict

    if threads:
        torch.set_num_threads(threads)
    ops.use_backend("reference" if backend == "reference" else "auto")
    if checkpoint:
        model, cfg = load_model(checkpoint, variant=variant)
    else:
        cfg = get_config(variant)
        model = build_model(cfg).eval()
        model.load_state_dict(recipe_state_dict(model.state_dict()))
    if fast:
        model = optimize_for_inference(model)
    # Feed the model exactly `size`: the image is that size and the resize rule keeps it.
    height, width = size
    cfg = cfg.replace(min_size=min(size), max_size=max(size))
    image = np.asarray(_test_image(width, height))
    conn.send(("ready", ops.backend("cpu")))
    while True:
        command = conn.recv()
        if command == "stop":
            break
        result = inference.run(model, cfg, image, precision=precision)
        det = result.detections
        conn.send((dict(result.timings), det.scores.numpy(), det.labels.numpy(), det.boxes.numpy(),
                   result.output.selection.max_logit.numpy(), result.output.selection.topk_indices.numpy()))
    conn.send(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _test_image(width: int, height: int):
    from PIL import Image

    photo = ROOT / "tests" / "fixtures" / "official_dino" / "input_a.png"
    return Image.open(photo).convert("RGB").resize((width, height), Image.BILINEAR)


def _start(name, args, backend, fast, precision="float32"):
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(
        target=_worker,
        args=(child, args.variant, args.checkpoint, tuple(args.size), backend, fast, args.threads, precision),
        daemon=True)
    proc.start()
    _, info = parent.recv()
    print(f"{name}: op backend {info[0]} ({info[1]}), fast path {'on' if fast else 'off'}, {precision}")
    return proc, parent


def _agreement(base, cand, threshold: float = 0.3) -> dict:
    """How closely a reduced-precision candidate follows the float32 baseline (see the module docstring)."""
    import numpy as np
    import torch

    from dino_demo.model.box_ops import box_iou

    overlap = len(set(base[5].ravel().tolist()) & set(cand[5].ravel().tolist())) / base[5].size
    chosen = base[1] >= threshold
    if chosen.sum() < 20:
        chosen = np.arange(len(base[1])) < 20
    iou, _ = box_iou(torch.as_tensor(base[3][chosen]), torch.as_tensor(cand[3]))
    candidates = (iou.numpy() > 0.9) & (base[2][chosen][:, None] == cand[2][None, :])
    # Each baseline detection's match: the same-label candidate at IoU > 0.9 closest in score.
    score_gap = np.where(candidates, np.abs(base[1][chosen][:, None] - cand[1][None, :]), np.inf)
    best = score_gap.argmin(1)
    matched = candidates.any(1)
    box_diff = np.abs(base[3][chosen][matched] - cand[3][best[matched]]).max() if matched.any() else float("nan")
    return {
        "topk_overlap": round(overlap, 4), "detections": int(chosen.sum()), "detections_matched": int(matched.sum()),
        "matched_fraction": round(float(matched.mean()), 4),
        "max_score_diff": round(float(score_gap.min(1)[matched].max()) if matched.any() else float("nan"), 5),
        "max_box_diff_px": round(float(box_diff), 3),
        "encoder_score_max_diff": round(float(np.abs(base[4] - cand[4]).max()), 5),
        "criterion": f"same label, IoU > 0.9; baseline detections scoring >= {threshold} (at least its top 20)",
    }


def _compare(base, cand, tol: float) -> list[str]:
    """Problems found comparing two runs' outputs (empty when they agree)."""
    import numpy as np

    problems = []
    if np.abs(base[4] - cand[4]).max() > tol:
        problems.append(f"encoder scores differ by {np.abs(base[4] - cand[4]).max():.2e}")
    if np.abs(np.sort(base[1]) - np.sort(cand[1])).max() > tol:
        problems.append(f"detection scores differ by {np.abs(np.sort(base[1]) - np.sort(cand[1])).max():.2e}")
    top = base[1] > base[1].max() - 0.5  # the clearly ranked detections: same labels and boxes
    for score, label, box in zip(base[1][top][:20], base[2][top][:20], base[3][top][:20]):
        close = (cand[2] == label) & (np.abs(cand[1] - score) <= tol) & (np.abs(cand[3] - box).max(-1) <= 1.0)
        if not close.any():
            problems.append(f"detection (label {label}, score {score:.4f}) missing from the candidate")
            break
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = timing_parser(__doc__, repeats=3)
    parser.add_argument("--backend", choices=["cpu-kernel", "reference"], default="cpu-kernel",
                        help="op for the candidate (the baseline always uses the reference)")
    parser.add_argument("--no-fast-path", action="store_true",
                        help="candidate without optimize_for_inference (the op backend alone)")
    parser.add_argument("--threads", type=int, help="torch threads in both processes (default: torch's)")
    parser.add_argument("--tolerance", type=float, default=2e-3, help="max score difference accepted")
    parser.add_argument("--precision", choices=["float32", "bfloat16", "float16"], default="float32",
                        help="the candidate's precision (the baseline is float32): reduced precisions report "
                             "their agreement with the baseline instead of checking it")
    parser.add_argument("--json", help="write the results here")
    args = parse_counts(parser, argv, "repeats")

    runners = {"baseline": _start("baseline", args, "reference", fast=False),
               "candidate": _start("candidate", args, args.backend, fast=not args.no_fast_path,
                                   precision=args.precision)}
    if args.precision != "float32":  # the float32 candidate too, so that one run has all three times
        runners["candidate_float32"] = _start("candidate_float32", args, args.backend, fast=not args.no_fast_path)
    samples = {name: [] for name in runners}
    outputs = {}
    for round_ in range(args.repeats + 1):  # round 0 warms up
        order = list(runners) if round_ % 2 == 0 else list(reversed(runners))
        for name in order:
            runners[name][1].send("run")
            reply = runners[name][1].recv()
            outputs[name] = reply
            if round_:
                samples[name].append(reply[0])
    peak = {}
    for name, (proc, conn) in runners.items():
        conn.send("stop")
        peak[name] = conn.recv()
        proc.join()

    medians = {name: {s: statistics.median(t[s] for t in runs) for s in STAGES} for name, runs in samples.items()}
    print(f"\n{args.variant} at {args.size[0]}x{args.size[1]}, median of {args.repeats} "
          f"(python {platform.python_version()}, {platform.machine()})")
    print(f"{'stage':12s} {'baseline s':>11s} {'candidate s':>12s} {'ratio':>7s}"
          + (f" {'float32 candidate s':>20s} {'ratio':>7s}" if "candidate_float32" in medians else ""))
    for stage in STAGES:
        b, c = medians["baseline"][stage], medians["candidate"][stage]
        line = f"{stage:12s} {b:11.3f} {c:12.3f} {c / b if b else float('nan'):7.3f}"
        if "candidate_float32" in medians:
            f = medians["candidate_float32"][stage]
            line += f" {f:20.3f} {f / b if b else float('nan'):7.3f}"
        print(line)
    print(f"{'peak RSS MiB':12s} {peak['baseline']:11.0f} {peak['candidate']:12.0f} "
          f"{peak['candidate'] / peak['baseline']:7.3f}")

    agreement = _agreement(outputs["baseline"], outputs["candidate"])
    print(f"agreement with the float32 baseline: {json.dumps(agreement)}")
    problems = []
    if args.precision == "float32":  # the same computation: the outputs must agree
        problems = _compare(outputs["baseline"], outputs["candidate"], args.tolerance)
    for problem in problems:
        print("OUTPUT MISMATCH:", problem)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "variant": args.variant, "size": args.size, "repeats": args.repeats, "backend": args.backend,
            "precision": args.precision, "median_seconds": medians, "peak_rss_mib": peak,
            "ratio_total": medians["candidate"]["total"] / medians["baseline"]["total"],
            "outputs_agree": not problems, "agreement": agreement, "cpu": _cpu(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2))
    return 1 if problems else 0


def _cpu() -> dict:
    from dino_demo.runtime.precision import support

    found = support("cpu")
    return {"capability": found.capability, "native_bfloat16": found.native_bfloat16,
            "bfloat16_features": list(found.bfloat16_features), "threads": _threads()}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    sys.exit(main())
