"""Build the compiled ops ahead of time, into the cache the first op call would use.

    python -m dino_demo.ops.build [--cuda] [--check]

Builds the CPU library, and the CUDA library when a GPU is visible (and nvcc is found).
`--cuda` compiles the CUDA sources even without a GPU (architectures from TORCH_CUDA_ARCH_LIST,
default 9.0), so CPU-only CI catches a broken .cu file.
`--check` also compares every kernel that can run here with the reference on a small random
problem, forward and backward, in float64.
Exits 1 when a build that was asked for fails or a check does not match, else 0.
"""
from __future__ import annotations

import argparse
import logging
import sys

import torch

from . import extension
from .reference import ms_deform_attn_reference


def check_against_reference(device: str) -> str | None:
    """Compare the registered op with the reference on `device`; None if they match, else what differs."""
    generator = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[7, 9], [4, 5], [2, 3]])
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    options = {"dtype": torch.float64}
    value = torch.rand(2, int((shapes[:, 0] * shapes[:, 1]).sum()), 3, 5, generator=generator, **options)
    locations = torch.rand(2, 11, 3, 3, 4, 2, generator=generator, **options) * 1.2 - 0.1
    weights = torch.rand(2, 11, 3, 3, 4, generator=generator, **options)
    inputs = [t.to(device) for t in (value, shapes, starts, locations, weights)]
    outputs = []
    for op in (torch.ops.dino_demo.ms_deform_attn, ms_deform_attn_reference):
        leaves = [t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
        output = op(*leaves)
        output.backward(torch.linspace(-1, 1, output.numel(), dtype=output.dtype, device=device).view_as(output))
        outputs.append([output.detach()] + [leaves[i].grad for i in (0, 3, 4)])
    names = ("output", "grad value", "grad sampling_locations", "grad attention_weights")
    for name, kernel, reference in zip(names, *outputs):
        if not torch.allclose(kernel, reference, rtol=1e-7, atol=1e-9):
            return f"{name} differs from the reference by {(kernel - reference).abs().max().item():.3g}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dino_demo.ops.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cuda", action="store_true", help="compile the CUDA kernels even without a GPU")
    parser.add_argument("--check", action="store_true", help="compare the built kernels with the reference")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

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
            problem = check_against_reference(kind)
            print(f"{kind}: check {'passed' if problem is None else 'FAILED, ' + problem}")
            failed |= problem is not None
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
