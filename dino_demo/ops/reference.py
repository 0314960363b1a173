"""Pure-PyTorch multi-scale deformable attention: the definition the kernels are tested against.

For every query, head, level and point, bilinearly sample the value map of that head and level at
the given location (zero padding outside the map, `align_corners=False` pixel convention) and
sum the samples weighted by the attention weights.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def ms_deform_attn_reference(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                             sampling_locations: torch.Tensor, attention_weights: torch.Tensor,
                             level_shapes: Sequence[tuple[int, int]] | None = None) -> torch.Tensor:
    """Multi-scale deformable attention with `F.grid_sample`.

    Args:
        value: [N, S, M, D] values of all levels, flattened row-major per level.
        spatial_shapes: [L, 2] int64 (H, W) of each level; sum of H*W equals S.
        level_start_index: [L] int64 offset of each level in S (unused here, kept for the op's signature).
        sampling_locations: [N, Lq, M, L, P, 2] (x, y) in [0, 1] of each level's padded map; in
            value's dtype, or float32 for float16 / bfloat16 values (then sampled in float32).
        attention_weights: [N, Lq, M, L, P], usually summing to 1 over (L, P).
        level_shapes: `spatial_shapes` as Python (H, W) pairs, when the caller has them (then
            `spatial_shapes` is not read).

    Returns:
        [N, Lq, M * D] in value's dtype
    """
    if sampling_locations.dtype != value.dtype:  # half values at float32 locations: sample in float32
        output = ms_deform_attn_reference(value.to(sampling_locations.dtype), spatial_shapes, level_start_index,
                                          sampling_locations, attention_weights.to(sampling_locations.dtype),
                                          level_shapes)
        return output.to(value.dtype)
    n, _, heads, head_dim = value.shape
    _, num_queries, _, levels, points, _ = sampling_locations.shape
    if level_shapes is None:
        level_shapes = spatial_shapes.tolist()
    grids = 2 * sampling_locations - 1  # grid_sample's [-1, 1] convention
    sampled, start = [], 0
    for level, (h, w) in enumerate(level_shapes):
        # [N, H*W, M, D] -> [N*M, D, H, W] (a slice, not a split: exported, it stays a plain Slice)
        value_map = value[:, start:start + h * w].flatten(2).transpose(1, 2).reshape(n * heads, head_dim, h, w)
        start += h * w
        # [N, Lq, M, P, 2] -> [N*M, Lq, P, 2]
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(value_map, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    # [N*M, D, Lq, L*P] weighted by [N*M, 1, Lq, L*P]
    weights = attention_weights.transpose(1, 2).reshape(n * heads, 1, num_queries, levels * points)
    output = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)
    return output.view(n, heads * head_dim, num_queries).transpose(1, 2).contiguous()
