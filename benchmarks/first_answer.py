"""Time to the first answer: a fresh process, from its start to the first Detect's detections.

    python benchmarks/first_answer.py [--model weights/dino-tiny.pth] [--image examples/...] [--runs 3]

Each run is a new Python process doing what the app does for its first Detect: import the
library (torch included), get the op's backend for the CPU (loading the compiled kernel from
its cache: build it once beforehand with `python -m dino_demo build-ops`), load the model
(`explore.models.ModelCache`, inference fast paths), read the image and run it through
`Detector.run` with internals, as the page does. Reported per stage, median over the
runs, and the second Detect of the same process for comparison (the first call's allocations
and lazy initialisations). Each stage also has its CPU seconds (all threads; "total_cpu" is the
process's user + system time to the first answer): on a shared machine, the figures that do not
depend on the others' load. The Gradio page itself is not included.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = ROOT / "tests" / "fixtures" / "official_dino" / "input_a.png"
STAGES = ("python_start", "imports", "op_backend", "model_load", "image_read", "first_detect", "total",
          "second_detect")

_CHILD = r"""
import json, sys, time
marks = [(time.perf_counter(), time.process_time())]
from dino_demo import ops
from dino_demo.explore.models import ModelCache
from dino_demo.io.images import load_image
marks.append((time.perf_counter(), time.process_time()))
backend = ops.backend("cpu")
marks.append((time.perf_counter(), time.process_time()))
detector = ModelCache(device="cpu").get(sys.argv[1])
marks.append((time.perf_counter(), time.process_time()))
image = load_image(sys.argv[2]).array
marks.append((time.perf_counter(), time.process_time()))
result = detector.run(image, precision=sys.argv[3])
marks.append((time.perf_counter(), time.process_time()))
detector.run(image, precision=sys.argv[3])
marks.append((time.perf_counter(), time.process_time()))
stages = ("imports", "op_backend", "model_load", "image_read", "first_detect", "second_detect")
report = {stage: marks[i + 1][0] - marks[i][0] for i, stage in enumerate(stages)}
report.update({stage + "_cpu": marks[i + 1][1] - marks[i][1] for i, stage in enumerate(stages)})
report.update(t0=time.time() - (marks[-1][0] - marks[0][0]), backend=list(backend), input_size=list(result.input_size))
print(json.dumps(report))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "weights" / "dino-tiny.pth"),
                        help="a model source as the app takes it (checkpoint, zoo:ID, untrained:VARIANT)")
    parser.add_argument("--image", default=str(DEFAULT_IMAGE))
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--runs", type=int, default=3, help="fresh processes (default 3)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")

    runs = []
    for _ in range(args.runs):
        launched, used = time.time(), _children_cpu_seconds()
        done = subprocess.run([sys.executable, "-c", _CHILD, args.model, args.image, args.precision],
                              capture_output=True, text=True, cwd=ROOT)
        if done.returncode:
            print(done.stderr, file=sys.stderr)
            return 1
        child = json.loads(done.stdout.strip().splitlines()[-1])
        child["python_start"] = max(0.0, child.pop("t0") - launched)
        child["total"] = sum(child[s] for s in STAGES[:6])
        # CPU seconds (all threads) to the first answer, the interpreter's start included
        child["total_cpu"] = _children_cpu_seconds() - used - child["second_detect_cpu"]
        runs.append(child)
        print(json.dumps({s: round(child[s], 3) for s in (*STAGES, "total_cpu")}))
    timed = [*STAGES, *(f"{s}_cpu" for s in STAGES[1:6]), "total_cpu", "second_detect_cpu"]
    medians = {s: statistics.median(r[s] for r in runs) for s in timed}
    print(f"\nfirst answer with {args.model} in {args.precision}, op {runs[0]['backend'][0]} "
          f"({runs[0]['backend'][1]}), input {runs[0]['input_size']}, median of {args.runs} fresh processes:")
    print(f"  {'stage':14s} {'wall s':>8s} {'CPU s':>8s}")
    for stage in STAGES:
        cpu = medians.get(f"{stage}_cpu")
        print(f"  {stage:14s} {medians[stage]:8.3f} {'' if cpu is None else f'{cpu:8.3f}'}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": args.model, "image": args.image, "precision": args.precision, "runs": args.runs,
            "backend": runs[0]["backend"], "input_size": runs[0]["input_size"],
            "median_seconds": medians, "all_runs": runs, "time": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2))
    return 0


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # of the children that have ended
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    sys.exit(main())
