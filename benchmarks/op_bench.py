"""Benchmark of `dino_demo.ops.ms_deform_attn`: compiled kernels against the pure-PyTorch reference.

    python benchmarks/op_bench.py [--repeats 5] [--backward] [--cases encoder-4scale ...] [--devices cpu cuda]

Shapes are DINO's at an 800x1066 input, 8 heads of 32 channels, 4 points: 4-scale levels at
strides 8-64, 5-scale adding the stride-4 level. "encoder" queries every value position,
"decoder" 900 queries.

Every (case, device, backend) runs in a fresh subprocess so that its peak memory is its own.
CPU peak: growth of the process's peak RSS over the RSS before one call (the peak is reset through
/proc/self/clear_refs; without it, the growth of ru_maxrss), with glibc told to unmap every large
block on free so that RSS tracks live tensors, output included. GPU peak: torch.cuda.max_memory_allocated
above what was allocated before the call. Times are medians of `--repeats` calls after one warm-up,
in another subprocess with the default allocator settings.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dino_demo import ops

LEVELS_4SCALE = [[100, 134], [50, 67], [25, 34], [13, 17]]
LEVELS_5SCALE = [[200, 267]] + LEVELS_4SCALE
DECODER_QUERIES = 900
HEADS, CHANNELS, POINTS = 8, 32, 4
CASES = {
    "encoder-4scale": (LEVELS_4SCALE, None),
    "decoder-4scale": (LEVELS_4SCALE, DECODER_QUERIES),
    "encoder-5scale": (LEVELS_5SCALE, None),
    "decoder-5scale": (LEVELS_5SCALE, DECODER_QUERIES),
}


def make_inputs(case: str, device: str, requires_grad: bool):
    """Inputs in the official layouts with DINO-like sampling locations.

    Encoder: each query is a value position and samples around its own normalized center, about
    two pixels away, on every level. Decoder: each query samples inside a random box. Locality
    matters: it decides how often a sample hits the cache, for the kernels and the reference alike.
    """
    levels, decoder_queries = CASES[case]
    shapes = torch.tensor(levels, dtype=torch.int64)
    areas = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    num_values = int(areas.sum())
    generator = torch.Generator().manual_seed(0)
    sizes = shapes.flip(1).float()  # (W, H) per level, matching (x, y)
    if decoder_queries is None:
        centers = []
        for height, width in levels:
            ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
            centers.append(torch.stack([xs.flatten() / width, ys.flatten() / height], dim=-1))
        reference_points = torch.cat(centers)[:, None, None, None, :]  # [Lq, 1, 1, 1, 2]
        spread = 2.0 / sizes[None, None, :, None, :]  # two pixels of each level
    else:
        boxes = torch.rand(decoder_queries, 4, generator=generator)
        reference_points = boxes[:, None, None, None, :2]
        spread = 0.05 + 0.2 * boxes[:, None, None, None, 2:]  # a quarter of boxes 0.2-1.0 wide
    queries = reference_points.shape[0]
    offsets = torch.randn(queries, HEADS, len(levels), POINTS, 2, generator=generator)
    locations = (reference_points + offsets * spread)[None]
    value = torch.randn(1, num_values, HEADS, CHANNELS, generator=generator)
    weights = torch.rand(1, queries, HEADS, len(levels) * POINTS, generator=generator)
    weights = weights.softmax(-1).view(1, queries, HEADS, len(levels), POINTS)
    inputs = [t.to(device) for t in (value, shapes, starts, locations, weights)]
    for i in (0, 3, 4):
        inputs[i].requires_grad_(requires_grad)
    return tuple(inputs)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes(reset: bool) -> int:
    if reset:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_worker(case: str, device: str, backend: str, repeats: int, backward: bool) -> dict:
    """Peak memory of one call (repeats == 0) or median time of `repeats` calls, in this process."""
    ops.use_backend(backend)
    implementation, reason = ops.backend(device)
    inputs = make_inputs(case, device, requires_grad=backward)

    def call():
        output = ops.ms_deform_attn(*inputs)
        if backward:
            output.backward(torch.ones_like(output))
            for tensor in (inputs[0], inputs[3], inputs[4]):
                tensor.grad = None
        if device == "cuda":
            torch.cuda.synchronize()

    result = {"implementation": implementation, "reason": reason}
    with torch.set_grad_enabled(backward):
        call()  # warm-up: loads the kernels, starts thread pools, fills caches
        gc.collect()
        if repeats > 0:
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            result["ms"] = 1e3 * statistics.median(times)
        elif device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            call()
            result["peak_mb"] = (torch.cuda.max_memory_allocated() - before) / 2**20
        else:
            reset = _reset_peak_rss()
            before = _rss_bytes() if reset else _peak_rss_bytes(False)
            call()
            result["peak_mb"] = (_peak_rss_bytes(reset) - before) / 2**20
    return result


def run_case(case: str, device: str, backend: str, repeats: int, backward: bool) -> dict:
    """Median time and peak memory of one case, each measured in a fresh subprocess."""
    result = {}
    for measured_repeats in (repeats, 0):
        command = [sys.executable, __file__, "--worker", case, device, backend, str(measured_repeats)]
        if backward:
            command.append("--backward")
        environment = dict(os.environ)
        if measured_repeats == 0:
            # A fixed mmap threshold makes glibc return every large block to the OS when it is
            # freed, so that RSS follows the live tensors instead of the allocator's retained heap.
            # (Not while timing: fresh mappings cost page faults on every call.)
            environment["MALLOC_MMAP_THRESHOLD_"] = str(1 << 17)
        finished = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
        if finished.returncode != 0:
            raise RuntimeError(f"{case} {device} {backend} failed:\n{finished.stderr}")
        result.update(json.loads(finished.stdout.strip().splitlines()[-1]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backward", action="store_true", help="time forward + backward instead of forward")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--devices", nargs="+", choices=["cpu", "cuda"], default=None)
    parser.add_argument("--worker", nargs=4, metavar=("CASE", "DEVICE", "BACKEND", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        case, device, backend, repeats = args.worker
        print(json.dumps(run_worker(case, device, backend, int(repeats), args.backward)))
        return

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    if torch.cuda.is_available():
        print(f"# GPU: {torch.cuda.get_device_name()}")
    for device in devices:
        print(f"# {device} kernel: {ops.backend(device)}")
    mode = "forward + backward" if args.backward else "forward"
    print(f"# {mode}, float32, median of {args.repeats}")
    header = (
        f"{'case':<16} {'device':<6} {'reference ms':>13} {'kernel ms':>10} {'speedup':>8} "
        f"{'reference MB':>13} {'kernel MB':>10} {'memory':>8}"
    )
    print(header)
    print("-" * len(header))
    for device in devices:
        for case in args.cases:
            reference = run_case(case, device, "reference", args.repeats, args.backward)
            kernel = run_case(case, device, "auto", args.repeats, args.backward)
            if kernel["implementation"] == "reference":
                print(f"{case:<16} {device:<6} kernel unavailable: {kernel['reason']}")
                continue
            memory_ratio = kernel["peak_mb"] / reference["peak_mb"] if reference["peak_mb"] > 0 else float("nan")
            print(
                f"{case:<16} {device:<6} {reference['ms']:>13.1f} {kernel['ms']:>10.1f} "
                f"{reference['ms'] / kernel['ms']:>7.1f}x {reference['peak_mb']:>13.1f} {kernel['peak_mb']:>10.1f} "
                f"{memory_ratio:>8.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
