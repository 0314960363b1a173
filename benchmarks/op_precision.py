"""The deformable-attention op in float32 against its bfloat16 forms, on DINO's shapes, in one process.

    python benchmarks/op_precision.py [--device cpu] [--repeats 9] [--json OUT]

Forms (forward, the compiled kernel chosen by `dino_demo.ops.backend`):
- float32: every input float32;
- mixed: value and attention weights bfloat16, sampling locations float32 (what the model
  passes under bfloat16 autocast);
- bfloat16: every input bfloat16 (what it would pass if the locations were not kept float32).
The inputs are op_bench.py's (DINO-like locations at an 800x1066 input). The forms run in turn,
round after round, and the median of each is reported with its largest difference from float32
(outputs of order 1). Same-process alternation keeps the ratios meaningful on a shared machine.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _op_bench():
    spec = importlib.util.spec_from_file_location("op_bench", HERE / "op_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--cases", nargs="+", default=["encoder-4scale", "decoder-4scale"])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    from dino_demo import ops
    from dino_demo.runtime.precision import support

    op_bench = _op_bench()
    implementation, reason = ops.backend(args.device)
    print(f"# op {implementation} ({reason}). {support(args.device).note('bfloat16')} "
          f"{torch.get_num_threads()} threads")
    rows = []
    for case in args.cases:
        value, shapes, starts, locations, weights = op_bench.make_inputs(
            case, op_bench.DEFAULT_SIZES[args.device], args.device, requires_grad=False)
        bf16 = torch.bfloat16
        forms = {
            "float32": (value, shapes, starts, locations, weights),
            "mixed": (value.to(bf16), shapes, starts, locations, weights.to(bf16)),
            "bfloat16": (value.to(bf16), shapes, starts, locations.to(bf16), weights.to(bf16)),
        }
        with torch.inference_mode():
            outputs = {name: ops.ms_deform_attn(*inputs).float() for name, inputs in forms.items()}  # warm-up
            times = {name: [] for name in forms}
            for _ in range(args.repeats):
                for name, inputs in forms.items():
                    start = time.perf_counter()
                    ops.ms_deform_attn(*inputs)
                    if args.device == "cuda":
                        torch.cuda.synchronize()
                    times[name].append(time.perf_counter() - start)
        base = statistics.median(times["float32"])
        for name in forms:
            ms = statistics.median(times[name]) * 1000
            diff = float((outputs[name] - outputs["float32"]).abs().max())
            rows.append({"case": case, "form": name, "ms": round(ms, 2), "ratio": round(ms / 1000 / base, 3),
                         "max_abs_diff": round(diff, 5)})
            print(f"{case:16s} {name:9s} {ms:9.2f} ms  x{ms / 1000 / base:5.3f}  max |diff| {diff:.2e}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": args.device, "implementation": implementation,
                                               "repeats": args.repeats, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
