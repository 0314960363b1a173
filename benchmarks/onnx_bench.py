"""ONNX Runtime (CPU) against this project's PyTorch path, end to end on the same images.

    python benchmarks/onnx_bench.py [--checkpoint CK | --variant V] [--images A.png ...]
                                    [--size H W] [--max-size N] [--repeats 3] [--threads N] [--json OUT]

The model (default: the shipped weights/dino-tiny.pth; --variant alone: that variant with the
parity kit's recipe weights) is exported with `dino_demo.export.onnx.export_onnx` (dynamic, or a
fixed --size canvas; no internals), timed, to a temporary file. Then every image (default:
examples/*) goes from HxWx3 uint8 to detections in its own pixels through three engines, each in
its own process, alternating after a warm-up, median over --repeats:

- "onnxruntime": `dino_demo.export.runtime.OnnxDetector.run` (CPU execution provider);
- "torch": `dino_demo.runtime.dino.run` on the model of `dino_demo.explore.models.load`, what `detect` and
  the app run (inference fast paths, compiled CPU kernel when it builds), without internals;
- "torch-reference": the same with the pure-PyTorch op (`F.grid_sample`, what the ONNX graph does).

Exits non-zero only when the engines disagree on the detections of trained weights (a checkpoint),
never because of speed.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ("onnxruntime", "torch", "torch-reference")


def _model(checkpoint: str | None, variant: str | None):
    """(plain model, config): the checkpoint's, or the variant's with the parity recipe weights."""
    from dino_demo.explore.models import build
    from dino_demo.parity.recipe import recipe_state_dict

    if checkpoint:
        return build(checkpoint, variant)
    model, cfg = build(f"untrained:{variant}")
    model.load_state_dict(recipe_state_dict(model.state_dict()), strict=True)
    return model, cfg


def _worker(conn, engine: str, args: argparse.Namespace, onnx_path: str):
    from dino_demo.io.images import load_image

    images = [load_image(path).array for path in args.images]
    if engine == "onnxruntime":
        from dino_demo.export.runtime import OnnxDetector

        detector = OnnxDetector(onnx_path, threads=args.threads)

        def detect(image):
            result = detector.run(image, max_size=args.max_size)
            return result.input_size, result.scores, result.labels, result.boxes, result.query_slot

        about = f"onnxruntime {__import__('onnxruntime').__version__}, CPUExecutionProvider"
    else:
        import torch

        from dino_demo import ops
        from dino_demo.runtime.dino import run
        from dino_demo.runtime.speed import optimize_for_inference

        if args.threads:
            torch.set_num_threads(args.threads)
        ops.use_backend("reference" if engine == "torch-reference" else "auto")
        model, cfg = _model(args.checkpoint, args.variant)
        model = optimize_for_inference(model)

        def detect(image):
            result = run(model, cfg, image, max_size=args.max_size, internals=False)
            det = result.detections
            return (result.input_size, det.scores.numpy(), det.labels.numpy(), det.boxes.numpy(),
                    det.query_slot.numpy())

        implementation, reason = ops.backend("cpu")
        about = f"torch {torch.__version__}, {torch.get_num_threads()} threads, op {implementation} ({reason})"
    conn.send(about)
    while conn.recv() == "run":
        seconds, outputs = [], []
        for image in images:
            start = time.perf_counter()
            output = detect(image)
            seconds.append(time.perf_counter() - start)
            outputs.append(output)
        conn.send((seconds, outputs))
    conn.send(_peak_rss_mib())


def _peak_rss_mib() -> float:
    """This process's peak resident memory. (ru_maxrss would include the parent's before exec.)"""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _disagreements(expected, actual, tolerance: float) -> list[str]:
    """Detections (class, query slot) above score 0.05 that one engine has and the other has not, or
    whose scores differ by more than `tolerance`; one line per image that disagrees."""
    problems = []
    for index, (e, a) in enumerate(zip(expected, actual)):
        found = [{(int(c), int(q)): float(s) for s, c, q in zip(run[1], run[2], run[4]) if s >= 0.05} for run in (e, a)]
        missing = [k for k in found[0].keys() ^ found[1].keys()
                   if abs(found[0].get(k, found[1].get(k)) - 0.05) > tolerance]
        worst = max((abs(found[0][k] - found[1][k]) for k in found[0].keys() & found[1].keys()), default=0.0)
        if e[0] != a[0] or missing or worst > tolerance:
            problems.append(f"image {index}: input sizes {e[0]} / {a[0]}, {len(missing)} detections in one only, "
                            f"scores differ by up to {worst:.2e}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="default: weights/dino-tiny.pth unless --variant is given")
    parser.add_argument("--variant", help="with --checkpoint: force it; alone: that variant, recipe weights")
    parser.add_argument("--images", nargs="+", type=Path, default=sorted(p for p in (ROOT / "examples").iterdir()
                                                                         if p.suffix in (".png", ".jpg")))
    parser.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="export for a fixed canvas")
    parser.add_argument("--max-size", type=int, help="cap on the longer side of the model input")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="threads of every engine (default: each one's own)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max detection score difference accepted")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if not args.checkpoint and not args.variant:
        args.checkpoint = str(ROOT / "weights" / "dino-tiny.pth")
    from dino_demo.export.onnx import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        model, cfg = _model(args.checkpoint, args.variant)
        start = time.perf_counter()
        report = export_onnx(model, onnx_path, canvas=tuple(args.size) if args.size else None,
                             source=Path(args.checkpoint).name if args.checkpoint else "parity recipe")
        export_seconds = time.perf_counter() - start
        del model
        stages = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in report.seconds.items())
        print(f"exported {cfg.name} in {export_seconds:.1f} s ({stages}), {report.bytes / 1e6:.1f} MB")

        context = mp.get_context("spawn")
        runners = {}
        for engine in ENGINES:
            parent, child = context.Pipe()
            proc = context.Process(target=_worker, args=(child, engine, args, str(onnx_path)), daemon=True)
            proc.start()
            runners[engine] = (proc, parent)
            print(f"{engine}: {parent.recv()}")
        samples = {engine: [] for engine in ENGINES}
        outputs = {}
        for round_ in range(args.repeats + 1):  # round 0 warms up
            order = ENGINES if round_ % 2 == 0 else tuple(reversed(ENGINES))
            for engine in order:
                runners[engine][1].send("run")
                seconds, outputs[engine] = runners[engine][1].recv()
                if round_:
                    samples[engine].append(seconds)
        peak = {}
        for engine, (proc, conn) in runners.items():
            conn.send("stop")
            peak[engine] = conn.recv()
            proc.join()

    medians = {engine: [statistics.median(run[i] for run in runs) for i in range(len(args.images))]
               for engine, runs in samples.items()}
    print(f"\n{cfg.name}, median of {args.repeats} (python {platform.python_version()}, {platform.machine()}, "
          f"{mp.cpu_count()} cores)")
    print(f"{'image':24s} {'input':>10s} " + " ".join(f"{e + ' s':>17s}" for e in ENGINES) + f" {'ort/torch':>10s}")
    for i, path in enumerate(args.images):
        h, w = outputs["torch"][i][0]
        print(f"{path.name:24s} {f'{w}x{h}':>10s} " + " ".join(f"{medians[e][i]:17.3f}" for e in ENGINES)
              + f" {medians['onnxruntime'][i] / medians['torch'][i]:10.2f}")
    totals = {engine: sum(values) for engine, values in medians.items()}
    print(f"{'all images':24s} {'':>10s} " + " ".join(f"{totals[e]:17.3f}" for e in ENGINES)
          + f" {totals['onnxruntime'] / totals['torch']:10.2f}")
    print(f"{'peak RSS MiB':24s} {'':>10s} " + " ".join(f"{peak[e]:17.0f}" for e in ENGINES))

    # Random weights score many tokens within float noise of each other, so that even the two
    # PyTorch ops rank them differently and their decoders start from other tokens: their
    # detections are not compared (the tests compare such models teacher-forced).
    compared = bool(args.checkpoint)
    problems = [f"{engine}: {p}" for engine in ("torch-reference", "onnxruntime")
                for p in _disagreements(outputs["torch"], outputs[engine], args.tolerance)] if compared else []
    for problem in problems:
        print("DETECTIONS DIFFER:", problem)
    if not compared:
        print("detections not compared: random weights (see the comment above)")
    if args.json:
        args.json.write_text(json.dumps({
            "variant": cfg.name, "checkpoint": args.checkpoint, "images": [p.name for p in args.images],
            "input_sizes": [list(o[0]) for o in outputs["torch"]], "size": args.size, "max_size": args.max_size,
            "repeats": args.repeats, "threads": args.threads, "export_seconds": export_seconds,
            "export_stages": report.seconds, "onnx_bytes": report.bytes, "median_seconds": medians,
            "total_seconds": totals, "ratio_onnxruntime_torch": totals["onnxruntime"] / totals["torch"],
            "ratio_onnxruntime_torch_reference": totals["onnxruntime"] / totals["torch-reference"],
            "peak_rss_mib": peak, "detections_compared": compared, "detections_agree": not problems,
            "time": time.strftime("%Y-%m-%d %H:%M:%S")},
            indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
