"""Compare an implementation of the op with the reference on a small random problem.

Used by `python -m dino_demo build-ops --check` for the compiled kernels, and by `triton_backend`
before the Triton kernels are first used on a device type.
"""
from __future__ import annotations

from typing import Callable

import torch

from .reference import ms_deform_attn_reference

TOLERANCES = {  # (rtol, atol) against the reference computed in float64
    torch.float64: (1e-7, 1e-9),
    torch.float32: (1e-4, 1e-5),
    torch.bfloat16: (2e-2, 2e-2),  # mixed precision: float32 locations, bfloat16 values and weights
}


def compare_with_reference(
    forward: Callable[..., torch.Tensor],
    backward: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    device: torch.device | str,
    dtype: torch.dtype = torch.float64,
) -> str | None:
    """None if `forward` and `backward` match the reference on `device`, else what differs.

    Args:
        forward: takes the op's five inputs, returns [N, Lq, M * D].
        backward: takes grad_output and the five inputs, returns the gradients of value,
            sampling_locations and attention_weights.
        dtype: float64, float32, or bfloat16 for the mixed-precision form the model uses under
            autocast (bfloat16 values and weights, float32 locations); the reference always runs
            in float64, on the inputs as rounded to those dtypes.

    The problem has three levels of odd sizes, 5 channels per head, and locations from -0.1 to 1.1
    (some outside the maps).
    """
    generator = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[7, 9], [4, 5], [2, 3]])
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    value = torch.rand(2, int((shapes[:, 0] * shapes[:, 1]).sum()), 3, 5, generator=generator, dtype=torch.float64)
    locations = torch.rand(2, 11, 3, 3, 4, 2, generator=generator, dtype=torch.float64) * 1.2 - 0.1
    weights = torch.rand(2, 11, 3, 3, 4, generator=generator, dtype=torch.float64)
    location_dtype = torch.float32 if dtype == torch.bfloat16 else dtype
    inputs = [value.to(device=device, dtype=dtype), shapes.to(device), starts.to(device),
              locations.to(device=device, dtype=location_dtype), weights.to(device=device, dtype=dtype)]

    output = forward(*inputs)
    grad_output = torch.linspace(-1, 1, output.numel(), dtype=torch.float64).view(output.shape).to(dtype)
    actual = [output, *backward(grad_output.to(device), *inputs)]

    leaves = [t.detach().cpu().double().requires_grad_() if t.is_floating_point() else t.cpu() for t in inputs]
    grad_output = grad_output.double()
    expected_output = ms_deform_attn_reference(*leaves)
    expected_output.backward(grad_output)
    expected = [expected_output.detach()] + [leaves[i].grad for i in (0, 3, 4)]

    rtol, atol = TOLERANCES[dtype]
    names = ("output", "grad value", "grad sampling_locations", "grad attention_weights")
    for name, tensor, reference in zip(names, actual, expected):
        tensor = tensor.detach().to(device="cpu", dtype=torch.float64)
        if not torch.allclose(tensor, reference, rtol=rtol, atol=atol):
            return f"{name} differs from the reference by {(tensor - reference).abs().max().item():.3g}"
    return None
