"""End-to-end images per second of the app's inference path, per op backend and precision.

    python benchmarks/throughput.py --device cuda                       # dino-4scale-r50, 800 x 1333
    python benchmarks/throughput.py --device cuda --backends auto triton reference --precisions float32 float16
    python benchmarks/throughput.py --device cpu --model untrained:dino-tiny --size 256 256 --repeats 3

Each image goes through `dino_demo.runtime.dino.run` (resize, normalization, the model after
`optimize_for_inference`, post-processing, results on the CPU), as the app runs it: with the
internals it keeps for the views, and with `--detections-only` without them (as the command line
and evaluation run). The input is a synthetic photo-sized picture of the given size (the weights
do not change the work: the encoder always selects 900 tokens). On CUDA every timing ends with a
synchronization. The paper reports 23 FPS for the official DINO-4scale R50 on an A100.

Prints one JSON line per (backend, precision) and a table; `--json` writes them all.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="untrained:dino-4scale-r50",
                        help="a checkpoint, zoo:<id> or untrained:<variant> (default: %(default)s)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=(800, 1333),
                        help="image size; the model's own resize rule then applies (default: %(default)s)")
    parser.add_argument("--backends", nargs="+", choices=("auto", "triton", "reference"), default=["auto"])
    parser.add_argument("--precisions", nargs="+", choices=("float32", "float16", "bfloat16"), default=["float32"])
    parser.add_argument("--repeats", type=int, default=20, help="timed images per case (after --warmup)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--detections-only", action="store_true", help="run without keeping the internals")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be at least 1 and --warmup at least 0")

    import numpy as np
    import torch

    from dino_demo import ops
    from dino_demo.runtime.dino import run
    from dino_demo.explore.models import load

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device is visible: pass --device cpu", file=sys.stderr)
        return 2
    detector = load(args.model, device=device)
    model, cfg = detector.model, detector.config
    height, width = args.size
    rows, columns = np.mgrid[0:height, 0:width]
    image = np.stack([(rows * 255 // height), (columns * 255 // width), ((rows + columns) % 256)], axis=-1)
    image = image.astype(np.uint8)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    results = []
    for backend in args.backends:
        with ops.use_backend(backend):
            for precision in args.precisions:
                seconds = []
                for index in range(args.warmup + args.repeats):
                    synchronize()
                    start = time.perf_counter()
                    result = run(model, cfg, image, precision=precision, internals=not args.detections_only)
                    synchronize()
                    if index >= args.warmup:
                        seconds.append(time.perf_counter() - start)
                median = statistics.median(seconds)
                row = {
                    "model": args.model, "variant": cfg.name, "device": str(device),
                    "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "input": list(result.input_size), "backend": backend, "served_by": result.backend[0],
                    "precision": precision, "internals": not args.detections_only,
                    "median_s": round(median, 5), "images_per_s": round(1 / median, 2),
                    "min_s": round(min(seconds), 5), "repeats": args.repeats,
                }
                print(json.dumps(row), flush=True)
                results.append(row)

    print(f"\n{results[0]['device_name']}, {results[0]['variant']}, input {results[0]['input']}, "
          f"internals {'kept' if not args.detections_only else 'not kept'}")
    print(f"{'backend':10} {'served by':12} {'precision':10} {'median s':>9} {'images/s':>9}")
    for row in results:
        print(f"{row['backend']:10} {row['served_by']:12} {row['precision']:10} {row['median_s']:9.4f} "
              f"{row['images_per_s']:9.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
