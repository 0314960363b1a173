"""Multi-scale deformable attention, the op DINO's encoder and decoder are built on.

`ms_deform_attn` takes the official argument layouts and runs one of three implementations:

- "cpu-kernel" / "cuda-kernel": the fused kernels in `csrc/`, implementations of the
  `torch.library` op `torch.ops.dino_demo.ms_deform_attn` (schema, fake kernel and autograd
  defined in Python by `registration`), compiled on the first call for a device type and cached
  on disk (see `extension`; `python -m dino_demo.ops.build` builds ahead of time);
- "reference": the pure-PyTorch definition in `reference.py`, used when no kernel can be built for
  the device, or when forced with `DINO_DEMO_OP=reference` or `use_backend("reference")`.

`backend(device)` says which one serves a device, and why.
"""
from __future__ import annotations

import contextlib
import os

import torch

from . import extension, registration  # noqa: F401 - registration defines the ops
from .reference import ms_deform_attn_reference
from .validation import check_inputs, check_levels

BACKEND_CHOICES = ("auto", "reference")
_chosen: str | None = None  # set by use_backend(); None follows $DINO_DEMO_OP


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention (bilinear, zero padding, `align_corners=False`).

    Args:
        value: [N, S, M, D] float tensor, the levels' values flattened row-major and concatenated.
        spatial_shapes: [L, 2] int64 (H, W) of each level, on value's device.
        level_start_index: [L] int64 offset of each level in S, on value's device.
        sampling_locations: [N, Lq, M, L, P, 2] (x, y); 0 and 1 are the outer edges of a level's map.
        attention_weights: [N, Lq, M, L, P].

    Returns:
        [N, Lq, M * D] in value's dtype; differentiable with respect to value, sampling_locations
        and attention_weights. Inputs may be non-contiguous.

    Raises:
        ValueError: on shapes that do not fit together, mixed dtypes or devices.
    """
    check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    implementation, _ = backend(value.device)
    if implementation == "reference":
        check_levels(spatial_shapes, level_start_index, value.shape[1])
        return ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    return torch.ops.dino_demo.ms_deform_attn(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )


def backend(device: torch.device | str = "cpu") -> tuple[str, str]:
    """(implementation, reason) serving tensors on `device`.

    The implementation is "cuda-kernel", "cpu-kernel" or "reference"; the reason says where the
    kernel was loaded from, or why it is not used ("disabled by DINO_DEMO_OP=reference",
    "not compiled: no C++ compiler (...)", "build failed: <first error line>", ...).
    The first call for a device type builds and loads the kernels, which can take minutes when the
    cache is cold.
    """
    device = torch.device(device)
    choice, source = _choice()
    if choice == "reference":
        return "reference", f"disabled by {source}"
    if device.type not in extension.SOURCES:
        return "reference", f"no compiled kernel for device type {device.type!r}"
    result = extension.load(device.type)
    if result.ok:
        return f"{device.type}-kernel", result.reason
    return "reference", result.reason


def use_backend(name: str) -> contextlib.AbstractContextManager:
    """Choose "reference" or "auto" (kernels where available) for every later call.

    Overrides `DINO_DEMO_OP`. Used as a context manager, the previous choice comes back when the
    block ends::

        with use_backend("reference"):
            expected = ms_deform_attn(...)
    """
    global _chosen
    if name not in BACKEND_CHOICES:
        raise ValueError(f"backend must be one of {BACKEND_CHOICES}, got {name!r}")
    previous, _chosen = _chosen, name
    return _RestoreChoice(previous)


class _RestoreChoice(contextlib.AbstractContextManager):
    def __init__(self, previous: str | None):
        self._previous = previous

    def __exit__(self, *exc_info) -> None:
        global _chosen
        _chosen = self._previous


def _choice() -> tuple[str, str]:
    """The chosen backend and what chose it."""
    if _chosen is not None:
        return _chosen, f'use_backend("{_chosen}")'
    name = os.environ.get("DINO_DEMO_OP") or "auto"
    if name not in BACKEND_CHOICES:
        raise ValueError(f"DINO_DEMO_OP must be one of {BACKEND_CHOICES}, got {name!r}")
    return name, f"DINO_DEMO_OP={name}"


__all__ = ["BACKEND_CHOICES", "backend", "ms_deform_attn", "ms_deform_attn_reference", "use_backend"]
