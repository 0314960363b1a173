"""Benchmark of `dino_demo.ops.ms_deform_attn`: compiled kernels and Triton against the pure-PyTorch reference.

    python benchmarks/op_bench.py [--repeats 5] [--backward] [--cases encoder-4scale ...] [--devices cpu cuda]
                                  [--backends reference auto triton] [--size H W]

Shapes are DINO's (R50 backbone) at an H x W input, 8 heads of 32 channels, 4 points: 4-scale
levels at strides 8-64, 5-scale adding the stride-4 level. "encoder" queries every value
position, "decoder" 900 queries. The input is 800x1066 on the CPU (the figures in RESULTS.md)
and 800x1333 on a GPU (COCO evaluation's largest size) unless --size says otherwise.

Backends are `dino_demo.ops.use_backend` choices: "reference", "auto" (the compiled kernel of
the device; Triton on a GPU without one) and "triton". Defaults: reference and auto on the CPU,
all three on a GPU (CUDA kernel vs Triton vs reference). A choice that cannot be served, or that
resolves to an implementation already measured, is skipped with the reason. Without a GPU the
cuda cases are skipped; the Triton code path still runs on the CPU in Triton's interpreter:

    TRITON_INTERPRET=1 python benchmarks/op_bench.py --size 64 96 --cases encoder-4scale --backends reference triton --repeats 1

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

import torch

from dino_demo import ops

DECODER_QUERIES = 900
HEADS, CHANNELS, POINTS = 8, 32, 4
CASES = {  # name: (scales, decoder queries or None for the encoder)
    "encoder-4scale": (4, None),
    "decoder-4scale": (4, DECODER_QUERIES),
    "encoder-5scale": (5, None),
    "decoder-5scale": (5, DECODER_QUERIES),
}
DEFAULT_SIZES = {"cpu": (800, 1066), "cuda": (800, 1333)}
DEFAULT_BACKENDS = {"cpu": ("reference", "auto"), "cuda": ("reference", "auto", "triton")}


def level_shapes(height: int, width: int, scales: int) -> list[list[int]]:
    """(H, W) of the levels DINO attends to at an input of height x width.

    Every stride-2 layer of ResNet-50 (and the extra stride-64 convolution) maps n to ceil(n / 2);
    the levels are strides 8-64 for 4 scales, 4-64 for 5. 800x1066 gives
    [[100, 134], [50, 67], [25, 34], [13, 17]], with [200, 267] in front for 5 scales.
    """
    shapes = []
    for halvings in range(1, 7):
        height, width = -(-height // 2), -(-width // 2)
        if halvings > 6 - scales:
            shapes.append([height, width])
    return shapes


def make_inputs(case: str, size: tuple[int, int], device: str, requires_grad: bool):
    """Inputs in the official layouts with DINO-like sampling locations, for an input of `size`.

    Encoder: each query is a value position and samples around its own normalized center, about
    two pixels away, on every level. Decoder: each query samples inside a random box. Locality
    matters: it decides how often a sample hits the cache, for the kernels and the reference alike.
    """
    scales, decoder_queries = CASES[case]
    levels = level_shapes(*size, scales)
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


def run_worker(case: str, size: tuple[int, int], device: str, backend: str, repeats: int, backward: bool) -> dict:
    """Peak memory of one call (repeats == 0) or median time of `repeats` calls, in this process."""
    ops.use_backend(backend)
    implementation, reason = ops.backend(device)
    inputs = make_inputs(case, size, device, requires_grad=backward)

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


def run_case(case: str, size: tuple[int, int], device: str, backend: str, repeats: int, backward: bool) -> dict:
    """Median time and peak memory of one case, each measured in a fresh subprocess."""
    result = {}
    for measured_repeats in (repeats, 0):
        command = [sys.executable, __file__, "--worker", case, device, backend, str(measured_repeats), *map(str, size)]
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


def implementations(device: str, backends: list[str]) -> dict[str, str]:
    """{backend choice: implementation} to measure on `device`, printing what each choice gives.

    The reference comes first. Skips a choice that falls back to the reference or repeats an
    implementation already listed.
    """
    chosen = {}
    for backend in sorted(backends, key=lambda name: name != "reference"):  # the reference first: the baseline
        with ops.use_backend(backend):
            implementation, reason = ops.backend(device)
        taken = implementation in chosen.values() or (implementation == "reference" and backend != "reference")
        print(f"# {device} {backend}: {implementation} ({reason}){', skipped' if taken else ''}")
        if not taken:
            chosen[backend] = implementation
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backward", action="store_true", help="time forward + backward instead of forward")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--devices", nargs="+", choices=["cpu", "cuda"], default=None)
    parser.add_argument("--backends", nargs="+", choices=ops.BACKEND_CHOICES, default=None,
                        help="use_backend choices to compare (default: reference auto, and triton on a GPU)")
    parser.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), default=None,
                        help="input size (default: 800 1066 on the CPU, 800 1333 on a GPU)")
    parser.add_argument("--worker", nargs=6, metavar=("CASE", "DEVICE", "BACKEND", "REPEATS", "H", "W"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        case, device, backend, repeats, height, width = args.worker
        result = run_worker(case, (int(height), int(width)), device, backend, int(repeats), args.backward)
        print(json.dumps(result))
        return

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    if torch.cuda.is_available():
        print(f"# GPU: {torch.cuda.get_device_name()}")
    mode = "forward + backward" if args.backward else "forward"
    print(f"# {mode}, float32, median of {args.repeats}; speed and memory relative to the reference")
    header = (
        f"{'case':<16} {'device':<6} {'input':<9} {'implementation':<15} {'ms':>9} {'speedup':>8} {'MB':>9} {'memory':>7}"
    )
    for device in devices:
        if device == "cuda" and not torch.cuda.is_available():
            print("# cuda: skipped (no GPU visible)")
            continue
        size = tuple(args.size) if args.size else DEFAULT_SIZES[device]
        chosen = implementations(device, args.backends or list(DEFAULT_BACKENDS[device]))
        print(header)
        print("-" * len(header))
        for case in args.cases:
            baseline = None
            for backend, implementation in chosen.items():
                result = run_case(case, size, device, backend, args.repeats, args.backward)
                baseline = baseline or (result if implementation == "reference" else None)
                speedup = f"{baseline['ms'] / result['ms']:>7.1f}x" if baseline else f"{'':>8}"
                relative = baseline and baseline["peak_mb"] > 0
                memory = f"{result['peak_mb'] / baseline['peak_mb']:>7.3f}" if relative else ""
                print(
                    f"{case:<16} {device:<6} {'x'.join(map(str, size)):<9} {implementation:<15} {result['ms']:>9.1f} "
                    f"{speedup} {result['peak_mb']:>9.1f} {memory:>7}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
