"""Multi-scale deformable attention, the op DINO's encoder and decoder are built on.

`ms_deform_attn` takes the official argument layouts and runs one of four implementations:

- "cpu-kernel" / "cuda-kernel": the fused kernels in `csrc/`, compiled on the first call for a
  device type and cached on disk (see `extension`; `python -m dino_demo build-ops` builds ahead
  of time);
- "triton": the Triton kernels in `triton_kernels.py`, for GPUs where the CUDA kernel cannot be
  compiled (no nvcc, no C++ compiler), or on CPU tensors in Triton's interpreter (see
  `triton_backend`);
- "reference": the pure-PyTorch definition in `reference.py`, used when nothing else can serve
  the device, or when forced;
- "gather": the same in pure PyTorch with Gather-based bilinear sampling (`gather.py`), only
  when forced: what an ONNX export without GridSample is traced with.

The kernels are implementations of one `torch.library` op, `torch.ops.dino_demo.ms_deform_attn`,
whose schema, fake kernel and autograd are defined in Python (`registration`).

`backend(device)` says which one serves a device, and why. The choice follows `DINO_DEMO_OP`
or `use_backend(...)`: "auto" (compiled kernel, else Triton on CUDA, else the reference),
"triton" (Triton, else the reference) or "reference".
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from .. import env
from . import extension, registration, triton_backend
from .gather import ms_deform_attn_gather
from .reference import ms_deform_attn_reference
from .validation import check_inputs, check_level_shapes, check_levels

BACKEND_CHOICES = ("auto", "triton", "reference", "gather")
_chosen: str | None = None  # set by use_backend(); None follows $DINO_DEMO_OP


def ms_deform_attn(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                   sampling_locations: torch.Tensor, attention_weights: torch.Tensor,
                   level_shapes: Sequence[tuple[int, int]] | None = None) -> torch.Tensor:
    """Multi-scale deformable attention (bilinear, zero padding, `align_corners=False`).

    Args:
        value: [N, S, M, D] float tensor, the levels' values flattened row-major and concatenated.
        spatial_shapes: [L, 2] int64 (H, W) of each level, on value's device.
        level_start_index: [L] int64 offset of each level in S, on value's device.
        sampling_locations: [N, Lq, M, L, P, 2] (x, y); 0 and 1 are the outer edges of a level's map.
            In value's dtype, or float32 for float16 / bfloat16 values (mixed precision: what the
            model passes under autocast, as a 16-bit location can be a pixel off).
        attention_weights: [N, Lq, M, L, P], in value's dtype. Every implementation accumulates
            half-precision inputs in float32.
        level_shapes: optionally the same (H, W) pairs as `spatial_shapes`, as Python ints. The
            reference then never reads `spatial_shapes` (no device sync), and sizes traced by
            `torch.export` stay symbolic, so that an exported graph holds at every input size.

    Returns:
        [N, Lq, M * D] in value's dtype; differentiable with respect to value, sampling_locations
        and attention_weights (each gradient in its input's dtype). Inputs may be non-contiguous.

    Raises:
        ValueError: on shapes that do not fit together, mixed dtypes or devices.
    """
    check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    implementation, _ = backend(value.device)
    if implementation == "gather":
        return ms_deform_attn_gather(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    if implementation == "reference":
        if level_shapes is None:
            level_shapes = check_levels(spatial_shapes, level_start_index, value.shape[1])
        else:
            check_level_shapes(level_shapes, spatial_shapes.shape[0], value.shape[1])
        return ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                                        level_shapes)
    return torch.ops.dino_demo.ms_deform_attn(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )


def backend(device: torch.device | str = "cpu") -> tuple[str, str]:
    """(implementation, reason) serving tensors on `device`, and make it the one the op dispatches to.

    The implementation is "cuda-kernel", "cpu-kernel", "triton" or "reference". The reason says
    where the kernel was loaded from and, when an implementation was passed over, why ("not
    compiled: nvcc not found (set CUDA_HOME)", "build failed: <first error line>",
    "disabled by DINO_DEMO_OP=reference", ...).
    The first call for a device type builds and loads the kernels, which can take minutes when the
    cache is cold. Direct `torch.ops.dino_demo` calls run what the last call for that device type
    chose (see `registration.serve`).
    """
    device = torch.device(device)
    choice, source = _choice()
    if choice in ("reference", "gather"):
        return choice, f"chosen by {source}" if choice == "gather" else f"disabled by {source}"
    if choice == "triton":
        triton = triton_backend.load(device.type)
        if triton.ok:
            registration.serve(device.type, "triton")
            return "triton", f"chosen by {source}; {triton.reason}"
        return "reference", f"Triton chosen by {source} but unavailable: {triton.reason}"

    if device.type in extension.SOURCES:
        compiled = extension.load(device.type)
        if compiled.ok:
            registration.serve(device.type, "compiled")
            return f"{device.type}-kernel", compiled.reason
        passed_over = compiled.reason
    else:
        passed_over = f"no compiled kernel for device type {device.type!r}"
    if device.type != "cuda":
        return "reference", passed_over
    triton = triton_backend.load(device.type)
    if triton.ok:
        registration.serve(device.type, "triton")
        return "triton", f"{triton.reason}; CUDA kernel {passed_over}"
    return "reference", f"CUDA kernel {passed_over}; Triton: {triton.reason}"


def prepare_in_background(device: torch.device | str) -> None:
    """Start building the compiled kernel for `device` in a background thread, if it will be
    wanted; until it is ready, `backend(device)` answers at once with what serves meanwhile
    (Triton or the reference) and says that the kernel is still compiling. For servers, so that
    no request waits minutes for a first-start compile."""
    device = torch.device(device)
    choice, _ = _choice()
    if choice == "auto" and device.type in extension.SOURCES:
        extension.build_in_background(device.type)


def use_backend(name: str) -> contextlib.AbstractContextManager:
    """Choose "auto", "triton", "reference" or "gather" (see the module docstring) for every later call.

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
    name = env.choice("DINO_DEMO_OP", BACKEND_CHOICES, "auto")
    return name, f"DINO_DEMO_OP={name}"


__all__ = ["BACKEND_CHOICES", "backend", "ms_deform_attn", "ms_deform_attn_reference", "prepare_in_background",
           "use_backend"]
