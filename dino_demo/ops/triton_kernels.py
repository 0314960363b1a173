"""Triton kernels of multi-scale deformable attention, and the functions that launch them.

Same arithmetic as `csrc/ms_deform_attn.h` (bilinear, zero padding, `align_corners=False`: a
location x in [0, 1] is the pixel coordinate x * W - 0.5), with float32 accumulation for float16,
bfloat16 and float32 inputs and float64 for float64.

Work split: a program owns a tile of BLOCK_ROWS output rows (row = (n * Lq + q) * M + m) by
BLOCK_CHANNELS channels and loops over levels and points.
Forward: the grid also splits the channels, every program writes its own tile.
Backward: a program loops over all channel blocks of its rows, so it holds the complete dot
products of the incoming gradient with the four corner values and writes the location and
attention-weight gradients of its rows itself; grad_value is scattered with atomic adds into a
float32 (float64) buffer, as rows of different programs can sample the same pixel.

Importing this module imports triton. The kernels are compiled for the GPU, or run on CPU tensors
by Triton's interpreter when TRITON_INTERPRET=1 was set before triton was imported.
"""
from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from .validation import check_grad_output, check_inputs, check_levels

MAX_BLOCK_CHANNELS = 128
TILE_ELEMENTS = 2048  # BLOCK_ROWS * BLOCK_CHANNELS, up to MAX_BLOCK_ROWS rows
MAX_BLOCK_ROWS = 128


@triton.jit
def _level(shapes_ptr, starts_ptr, level):
    """(height, width, start offset in the values) of one level."""
    return tl.load(shapes_ptr + 2 * level), tl.load(shapes_ptr + 2 * level + 1), tl.load(starts_ptr + level)


@triton.jit
def _sample(locations_ptr, weights_ptr, row, row_mask, level, point, levels, points, height, width,
            ACC: tl.constexpr):
    """Where each row's sampling point `point` of `level` falls, and its attention weight.

    Returns sample (the point's index in the locations and weights), x0, y0 (top-left corner),
    fx, fy (fractional position), inside (some corner can be in the map; NaN locations are not),
    the masks of the top-left, top-right, bottom-left and bottom-right corners, and the weight
    (zero where not inside).
    """
    sample = (row * levels + level) * points + point
    x = tl.load(locations_ptr + 2 * sample, mask=row_mask, other=0.0).to(ACC) * width - 0.5
    y = tl.load(locations_ptr + 2 * sample + 1, mask=row_mask, other=0.0).to(ACC) * height - 0.5
    inside = row_mask & (x >= -1.0) & (y >= -1.0) & (x < width) & (y < height)
    x = tl.where(inside, x, 0.0)
    y = tl.where(inside, y, 0.0)
    x_floor = tl.floor(x)
    y_floor = tl.floor(y)
    x0 = x_floor.to(tl.int64)
    y0 = y_floor.to(tl.int64)
    left = x0 >= 0
    right = x0 + 1 < width
    top = inside & (y0 >= 0)
    bottom = inside & (y0 + 1 < height)
    attention = tl.load(weights_ptr + sample, mask=inside, other=0.0).to(ACC)
    return (sample, x0, y0, x - x_floor, y - y_floor, inside, top & left, top & right, bottom & left,
            bottom & right, attention)


@triton.jit
def _corner_backward(value_ptr, grad_value_ptr, offset, mask, grad, scaled, corner_weight, ACC: tl.constexpr):
    """One bilinear corner of the backward, for a [BLOCK_ROWS, BLOCK_CHANNELS] tile of its values at
    `offset` (`mask`: in the map and a channel): adds corner_weight * scaled (the attention-weighted
    incoming gradient) to grad_value, and returns the dot product of `grad` with the corner's values
    per row."""
    dot = tl.sum(grad * tl.load(value_ptr + offset, mask=mask, other=0.0).to(ACC), axis=1)
    tl.atomic_add(grad_value_ptr + offset, corner_weight[:, None] * scaled, mask=mask, sem="relaxed")
    return dot


@triton.jit
def _forward_kernel(
    value_ptr, shapes_ptr, starts_ptr, locations_ptr, weights_ptr, output_ptr,
    rows, num_values, queries, heads, channels, levels, points,
    BLOCK_ROWS: tl.constexpr, BLOCK_CHANNELS: tl.constexpr, ACC: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    channel = tl.program_id(1) * BLOCK_CHANNELS + tl.arange(0, BLOCK_CHANNELS)
    row_mask = row < rows
    channel_mask = (channel < channels)[None, :]
    pixel_stride = heads * channels
    # value[n, s, m, c] is at (n * S + s) * M * D + m * D + c
    value_row = (row // (queries * heads) * num_values * heads + row % heads) * channels
    acc = tl.zeros([BLOCK_ROWS, BLOCK_CHANNELS], ACC)
    for level in range(levels):
        height, width, start = _level(shapes_ptr, starts_ptr, level)
        for point in range(points):
            sample, x0, y0, fx, fy, inside, top_left, top_right, bottom_left, bottom_right, attention = _sample(
                locations_ptr, weights_ptr, row, row_mask, level, point, levels, points, height, width, ACC)
            corner = value_ptr + (value_row + (start + y0 * width + x0) * pixel_stride)[:, None] + channel[None, :]
            below = width * pixel_stride
            v00 = tl.load(corner, mask=top_left[:, None] & channel_mask, other=0.0).to(ACC)
            v01 = tl.load(corner + pixel_stride, mask=top_right[:, None] & channel_mask, other=0.0).to(ACC)
            v10 = tl.load(corner + below, mask=bottom_left[:, None] & channel_mask, other=0.0).to(ACC)
            v11 = tl.load(corner + below + pixel_stride, mask=bottom_right[:, None] & channel_mask, other=0.0).to(ACC)
            gx = 1.0 - fx
            gy = 1.0 - fy
            sampled = (gy * gx)[:, None] * v00 + (gy * fx)[:, None] * v01
            sampled += (fy * gx)[:, None] * v10 + (fy * fx)[:, None] * v11
            acc += attention[:, None] * sampled
    output = output_ptr + (row * channels)[:, None] + channel[None, :]
    tl.store(output, acc.to(output_ptr.dtype.element_ty), mask=row_mask[:, None] & channel_mask)


@triton.jit
def _backward_kernel(
    grad_output_ptr, value_ptr, shapes_ptr, starts_ptr, locations_ptr, weights_ptr,
    grad_value_ptr, grad_locations_ptr, grad_weights_ptr,
    rows, num_values, queries, heads, channels, levels, points,
    BLOCK_ROWS: tl.constexpr, BLOCK_CHANNELS: tl.constexpr, ACC: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    row_mask = row < rows
    pixel_stride = heads * channels
    value_row = (row // (queries * heads) * num_values * heads + row % heads) * channels
    for level in range(levels):
        height, width, start = _level(shapes_ptr, starts_ptr, level)
        for point in range(points):
            sample, x0, y0, fx, fy, inside, top_left, top_right, bottom_left, bottom_right, attention = _sample(
                locations_ptr, weights_ptr, row, row_mask, level, point, levels, points, height, width, ACC)
            gx = 1.0 - fx
            gy = 1.0 - fy
            top_left_offset = value_row + (start + y0 * width + x0) * pixel_stride
            below = width * pixel_stride
            # dot products of the incoming gradient with the four corner values, over all channels
            d00 = tl.zeros([BLOCK_ROWS], ACC)
            d01 = tl.zeros([BLOCK_ROWS], ACC)
            d10 = tl.zeros([BLOCK_ROWS], ACC)
            d11 = tl.zeros([BLOCK_ROWS], ACC)
            for channel_start in range(0, channels, BLOCK_CHANNELS):
                channel = channel_start + tl.arange(0, BLOCK_CHANNELS)
                channel_mask = (channel < channels)[None, :]
                grad = tl.load(
                    grad_output_ptr + (row * channels)[:, None] + channel[None, :],
                    mask=inside[:, None] & channel_mask,
                    other=0.0,
                ).to(ACC)
                scaled = attention[:, None] * grad
                offset = top_left_offset[:, None] + channel[None, :]
                d00 += _corner_backward(value_ptr, grad_value_ptr, offset, top_left[:, None] & channel_mask,
                                        grad, scaled, gy * gx, ACC)
                offset += pixel_stride
                d01 += _corner_backward(value_ptr, grad_value_ptr, offset, top_right[:, None] & channel_mask,
                                        grad, scaled, gy * fx, ACC)
                offset += below - pixel_stride
                d10 += _corner_backward(value_ptr, grad_value_ptr, offset, bottom_left[:, None] & channel_mask,
                                        grad, scaled, fy * gx, ACC)
                offset += pixel_stride
                d11 += _corner_backward(value_ptr, grad_value_ptr, offset, bottom_right[:, None] & channel_mask,
                                        grad, scaled, fy * fx, ACC)
            grad_x = (gy * (d01 - d00) + fy * (d11 - d10)) * width * attention
            grad_y = (gx * (d10 - d00) + fx * (d11 - d01)) * height * attention
            grad_weight = gy * (gx * d00 + fx * d01) + fy * (gx * d10 + fx * d11)
            element_type = grad_locations_ptr.dtype.element_ty
            tl.store(grad_locations_ptr + 2 * sample, tl.where(inside, grad_x, 0.0).to(element_type), mask=row_mask)
            tl.store(grad_locations_ptr + 2 * sample + 1, tl.where(inside, grad_y, 0.0).to(element_type), mask=row_mask)
            tl.store(grad_weights_ptr + sample, tl.where(inside, grad_weight, 0.0).to(element_type), mask=row_mask)


def interpreted() -> bool:
    """Whether the kernels run in Triton's interpreter: TRITON_INTERPRET=1 was set when triton (whose
    library functions, such as tl.sum, are Triton functions too) and this module were imported."""
    return isinstance(_forward_kernel, InterpretedFunction) and isinstance(tl.sum, InterpretedFunction)


def ms_deform_attn_triton(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                          sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """Forward of `torch.ops.dino_demo.ms_deform_attn` with the Triton kernel.

    Args:
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights: the
            layouts of `dino_demo.ops.ms_deform_attn`, on one GPU (or on the CPU in the interpreter).

    Returns:
        [N, Lq, M * D] in value's dtype.

    Raises:
        ValueError: on inputs that do not fit together (see `validation`).
    """
    check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    check_levels(spatial_shapes, level_start_index, value.shape[1])
    batch, num_values, heads, channels = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    output = value.new_empty((batch, queries, heads * channels))
    rows = batch * queries * heads
    if output.numel() == 0:
        return output
    block_rows, block_channels = _block_sizes(channels)
    grid = (triton.cdiv(rows, block_rows), triton.cdiv(channels, block_channels))
    with _device_of(value):
        _forward_kernel[grid](
            value.contiguous(), spatial_shapes.contiguous(), level_start_index.contiguous(),
            sampling_locations.contiguous(), attention_weights.contiguous(), output,
            rows, num_values, queries, heads, channels, levels, points,
            BLOCK_ROWS=block_rows, BLOCK_CHANNELS=block_channels, ACC=_accumulator(value.dtype)[1],
        )
    return output


def ms_deform_attn_backward_triton(
    grad_output: torch.Tensor,
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward of `torch.ops.dino_demo.ms_deform_attn` with the Triton kernel.

    Args:
        grad_output: [N, Lq, M * D], the gradient of the forward's output.

    Returns:
        Gradients of value [N, S, M, D], sampling_locations [N, Lq, M, L, P, 2] and
        attention_weights [N, Lq, M, L, P], in value's dtype.

    Raises:
        ValueError: on inputs that do not fit together (see `validation`).
    """
    check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    check_grad_output(grad_output, value, sampling_locations)
    check_levels(spatial_shapes, level_start_index, value.shape[1])
    batch, num_values, heads, channels = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    grad_value = torch.zeros(value.shape, dtype=_accumulator(value.dtype)[0], device=value.device)
    grad_locations = torch.empty_like(sampling_locations, memory_format=torch.contiguous_format)
    grad_weights = torch.empty_like(attention_weights, memory_format=torch.contiguous_format)
    rows = batch * queries * heads
    if grad_weights.numel() > 0:
        block_rows, block_channels = _block_sizes(channels)
        with _device_of(value):
            _backward_kernel[(triton.cdiv(rows, block_rows),)](
                grad_output.contiguous(), value.contiguous(), spatial_shapes.contiguous(),
                level_start_index.contiguous(), sampling_locations.contiguous(), attention_weights.contiguous(),
                grad_value, grad_locations, grad_weights,
                rows, num_values, queries, heads, channels, levels, points,
                BLOCK_ROWS=block_rows, BLOCK_CHANNELS=block_channels, ACC=_accumulator(value.dtype)[1],
            )
    return grad_value.to(value.dtype), grad_locations, grad_weights


def _block_sizes(channels: int) -> tuple[int, int]:
    """(BLOCK_ROWS, BLOCK_CHANNELS): all channels of up to MAX_BLOCK_CHANNELS in one block, about
    TILE_ELEMENTS elements per tile."""
    block_channels = min(max(triton.next_power_of_2(channels), 4), MAX_BLOCK_CHANNELS)
    return min(TILE_ELEMENTS // block_channels, MAX_BLOCK_ROWS), block_channels


def _accumulator(dtype: torch.dtype) -> tuple[torch.dtype, tl.dtype]:
    """The accumulation type for inputs of `dtype`, for torch and for Triton: float64 for float64, else float32."""
    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32, tl.float32)


def _device_of(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    """Launch on the tensor's GPU (Triton launches on the current device); nothing to do on the CPU."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()
