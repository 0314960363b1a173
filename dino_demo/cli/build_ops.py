"""Build the compiled ops ahead of time, into the cache the first op call would use.

    python -m dino_demo build-ops [--cuda] [--check]

Builds the CPU library, and the CUDA library when a GPU is visible (and nvcc is found).
`--cuda` compiles the CUDA sources even without a GPU (architectures from TORCH_CUDA_ARCH_LIST,
default 9.0), so CPU-only CI catches a broken .cu file.
`--check` also compares every compiled kernel that can run here with the reference on a small
random problem, forward and backward, in float64 and in the mixed bfloat16 form (`selfcheck`).
Exits 1 when a build that was asked for fails or a check does not match, else 0.
"""
from __future__ import annotations

import argparse

import torch

from ..ops import extension
from ..ops.selfcheck import compare_with_reference


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dino_demo build-ops", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cuda", action="store_true", help="compile the CUDA kernels even without a GPU")
    parser.add_argument("--check", action="store_true", help="compare the built kernels with the reference")
    args = parser.parse_args(argv)

    wanted = {"cpu": extension.load("cpu")}
    if args.cuda or torch.cuda.is_available():
        wanted["cuda"] = extension.load("cuda", require_gpu=not args.cuda)
    else:
        print("cuda: skipped (no GPU visible; --cuda compiles the CUDA sources anyway)")
    failed = False
    for kind, result in wanted.items():
        print(f"{kind}: {'built' if result.ok else 'FAILED'}, {result.reason}")
        failed |= not result.ok
    if args.check:
        for kind, result in wanted.items():
            if not result.ok or (kind == "cuda" and not torch.cuda.is_available()):
                continue
            for dtype in (torch.float64, torch.bfloat16):  # bfloat16: the mixed-precision form
                problem = compare_with_reference(
                    torch.ops.dino_demo.ms_deform_attn, torch.ops.dino_demo.ms_deform_attn_backward, kind, dtype
                )
                print(f"{kind}: {str(dtype)[6:]} check {'passed' if problem is None else 'FAILED, ' + problem}")
                failed |= problem is not None
    return 1 if failed else 0
