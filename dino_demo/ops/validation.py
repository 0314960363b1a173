"""Input checks of `ms_deform_attn` on the Python side, raising `ValueError` with the offending shapes.

- `check_inputs` looks only at shapes, dtypes and devices, so it also runs on fake tensors;
- `check_levels` reads `spatial_shapes` and `level_start_index` (a device sync on GPU) and checks
  that the levels are non-empty, start where the previous one ends and fill S exactly;
- `check_level_shapes` checks the same shapes given as Python ints (symbolic ones when traced);
- `check_grad_output` checks the backward's incoming gradient.

Who checks what:

- `dino_demo.ops.ms_deform_attn` runs `check_inputs` before choosing an implementation, and
  `check_levels` (or `check_level_shapes`, given the shapes) before the reference (which would
  otherwise fail with a less useful error);
- the fake kernels (`registration`) run `check_inputs` (and `check_grad_output`), so that tracing
  and `torch.compile` reject bad shapes as eagerly as the kernels do;
- the Triton kernels (`triton_kernels`) run all three, as their index arithmetic trusts the level
  table;
- the C++ kernels make the same checks, with the same messages, in one function of
  `csrc/ms_deform_attn.h` (`check_ms_deform_attn`) called by every C++ entry point.

The C++ check is not redundant: `torch.ops.dino_demo.*` can be called directly, with no Python in
between, and a kernel must never read outside its inputs. The Python checks give the same errors
where no C++ runs (fake tensors, Triton, the reference) and before a first call starts a build.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

# Values of these dtypes may be sampled at float32 locations (mixed precision): a bfloat16 location
# (8-bit mantissa) can be a pixel off on a 128-wide map.
HALF_DTYPES = (torch.float16, torch.bfloat16)


def check_inputs(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> None:
    """Raise ValueError unless the five tensors have the official layouts, one dtype (float32 locations
    allowed with float16 / bfloat16 values and weights) and one device."""
    if value.dim() != 4:
        raise ValueError(f"ms_deform_attn: value must be [N, S, M, D], got shape {tuple(value.shape)}")
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
        raise ValueError(f"ms_deform_attn: spatial_shapes must be [L, 2], got shape {tuple(spatial_shapes.shape)}")
    levels = spatial_shapes.shape[0]
    if levels < 1:
        raise ValueError("ms_deform_attn: need at least one level")
    if level_start_index.dim() != 1 or level_start_index.shape[0] != levels:
        raise ValueError(
            f"ms_deform_attn: level_start_index must be [L] = [{levels}], got shape {tuple(level_start_index.shape)}"
        )
    if sampling_locations.dim() != 6 or sampling_locations.shape[5] != 2:
        raise ValueError(
            "ms_deform_attn: sampling_locations must be [N, Lq, M, L, P, 2], "
            f"got shape {tuple(sampling_locations.shape)}"
        )
    batch, _, heads, _ = value.shape
    if (
        sampling_locations.shape[0] != batch
        or sampling_locations.shape[2] != heads
        or sampling_locations.shape[3] != levels
    ):
        raise ValueError(
            f"ms_deform_attn: sampling_locations {tuple(sampling_locations.shape)} does not match N={batch}, "
            f"M={heads}, L={levels} from value {tuple(value.shape)} and spatial_shapes {tuple(spatial_shapes.shape)}"
        )
    if attention_weights.shape != sampling_locations.shape[:5]:
        raise ValueError(
            f"ms_deform_attn: attention_weights must be [N, Lq, M, L, P] = {tuple(sampling_locations.shape[:5])}, "
            f"got shape {tuple(attention_weights.shape)}"
        )
    if not value.dtype.is_floating_point:
        raise ValueError(f"ms_deform_attn: value must be a floating point tensor, got {value.dtype}")
    float_locations = value.dtype in HALF_DTYPES and sampling_locations.dtype == torch.float32
    if attention_weights.dtype != value.dtype or (sampling_locations.dtype != value.dtype and not float_locations):
        raise ValueError(
            "ms_deform_attn: value, sampling_locations and attention_weights must share one dtype (or, for float16 "
            f"and bfloat16 values, float32 sampling_locations), got {value.dtype}, {sampling_locations.dtype}, "
            f"{attention_weights.dtype}"
        )
    if spatial_shapes.dtype != torch.int64 or level_start_index.dtype != torch.int64:
        raise ValueError(
            "ms_deform_attn: spatial_shapes and level_start_index must be int64, got "
            f"{spatial_shapes.dtype} and {level_start_index.dtype}"
        )
    devices = {t.device for t in (spatial_shapes, level_start_index, sampling_locations, attention_weights)}
    if devices != {value.device}:
        raise ValueError(
            f"ms_deform_attn: all inputs must be on one device, value is on {value.device}, "
            f"the others on {sorted(str(d) for d in devices)}"
        )


def check_levels(spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                 num_values: int) -> list[tuple[int, int]]:
    """Raise ValueError unless the levels are non-empty, start where the previous one ends and fill S
    exactly; returns the levels' (H, W) pairs as read (one device-to-host copy)."""
    table = torch.cat((spatial_shapes.reshape(-1), level_start_index.reshape(-1))).tolist()
    levels = spatial_shapes.shape[0]
    shapes = list(zip(table[0:2 * levels:2], table[1:2 * levels:2]))
    expected_start = 0
    for level, ((height, width), start) in enumerate(zip(shapes, table[2 * levels:])):
        if height < 1 or width < 1:
            raise ValueError(f"ms_deform_attn: level {level} has empty spatial shape ({height}, {width})")
        if start != expected_start:
            raise ValueError(
                f"ms_deform_attn: level_start_index[{level}] is {start} but the spatial shapes before it "
                f"hold {expected_start} values"
            )
        expected_start += height * width
    if expected_start != num_values:
        raise ValueError(
            f"ms_deform_attn: spatial_shapes hold {expected_start} values in all but value has S = {num_values}"
        )
    return shapes


def check_grad_output(grad_output: torch.Tensor, value: torch.Tensor, sampling_locations: torch.Tensor) -> None:
    """Raise ValueError unless grad_output is [N, Lq, M * D] with value's dtype and device."""
    batch, _, heads, channels = value.shape
    expected = (batch, sampling_locations.shape[1], heads * channels)
    if tuple(grad_output.shape) != expected:
        raise ValueError(
            f"ms_deform_attn_backward: grad_output must be [N, Lq, M * D] = {list(expected)}, "
            f"got shape {tuple(grad_output.shape)}"
        )
    if grad_output.dtype != value.dtype or grad_output.device != value.device:
        raise ValueError(
            "ms_deform_attn_backward: grad_output must have the dtype and device of value, got "
            f"{grad_output.dtype} on {grad_output.device} and {value.dtype} on {value.device}"
        )


def check_level_shapes(level_shapes: Sequence[tuple[int, int]], levels: int, num_values: int) -> None:
    """Raise ValueError unless `level_shapes` holds `levels` non-empty (H, W) pairs that fill S exactly."""
    if len(level_shapes) != levels:
        raise ValueError(f"ms_deform_attn: {len(level_shapes)} level shapes for {levels} levels in spatial_shapes")
    for level, (height, width) in enumerate(level_shapes):
        if height < 1 or width < 1:
            raise ValueError(f"ms_deform_attn: level {level} has empty spatial shape ({height}, {width})")
    total = sum(height * width for height, width in level_shapes)
    if total != num_values:
        raise ValueError(f"ms_deform_attn: level shapes hold {total} values in all but value has S = {num_values}")
