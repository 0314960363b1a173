"""torch.compile (inductor, CPU) against eager on the app's inference path: the first compiled call
(compile included) and the median of later calls, on synthetic scenes.

    TORCH_LOGS=graph_breaks python benchmarks/compile_probe.py [--model weights/dino-tiny.pth] [--images 4]

The model is loaded as the app loads it (`explore.models.load`, a `runtime.Detector`). Inductor needs `freezing` for
the pre-packed oneDNN linear layers of `runtime.speed` (without it: "weight must be a graph
constant"). Eager runs before and after the compiled ones, so that load on a shared machine shows
up as the spread between the two. Prints one JSON line of seconds.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "weights" / "dino-tiny.pth"))
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=256, help="side of the synthetic scenes")
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error("--images must be >= 1")

    import torch
    import torch._inductor.config as inductor_config

    from dino_demo.runtime.dino import run
    from dino_demo.explore.models import load
    from dino_demo.train.synthetic import SceneSpec, generate_scene

    detector = load(args.model)

    model, cfg = detector.model, detector.config
    images = [generate_scene(4242, i, SceneSpec(size=args.size)).image for i in range(args.images)]

    def median_seconds(m) -> float:
        times = []
        for image in images:
            start = time.perf_counter()
            run(m, cfg, image)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    run(model, cfg, images[0])  # warm-up
    eager_before = median_seconds(model)
    inductor_config.freezing = True
    compiled = torch.compile(model, dynamic=False)
    cpu_before, start = _cpu_seconds(), time.perf_counter()
    run(compiled, cfg, images[0])
    first_wall, first_cpu = time.perf_counter() - start, _cpu_seconds() - cpu_before
    compiled_median = median_seconds(compiled)
    eager_after = median_seconds(model)
    print(json.dumps({"model": args.model, "first_compiled_call_s": round(first_wall, 3),
                      "first_compiled_call_cpu_s": round(first_cpu, 3), "compiled_s": round(compiled_median, 4),
                      "eager_before_s": round(eager_before, 4), "eager_after_s": round(eager_after, 4)}))
    return 0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    sys.exit(main())
