"""Multi-scale deformable attention with Gather-based bilinear sampling: the op without GridSample.

The same function as `ops.reference.ms_deform_attn_reference` (bilinear, zero padding,
`align_corners=False`), written with index arithmetic, one `gather` of the four neighbours of
every sampling point on every level from the flat value tensor, and one batched matrix product
with the weights. Exported, it becomes Floor, Cast, Mul/Add, GatherElements and MatMul: no
GridSample node, which TensorRT (whose GridSample layer has been reported to miscompile) and
other runtimes without that op take as they are. The level table is read as tensors
(`spatial_shapes`, `level_start_index`), so traced sizes stay symbolic and nothing is read on the
host.

`ops.use_backend("gather")` makes `ops.ms_deform_attn` (and so DINO and the families through
`families.op`) run this formulation.
"""
from __future__ import annotations

import torch

# The four bilinear neighbours of a point as (dx, dy) offsets from its top-left one.
_CORNERS = ((0, 0), (1, 0), (0, 1), (1, 1))


def ms_deform_attn_gather(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                          sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """Multi-scale deformable attention by gathering.

    Args:
        value: [N, S, M, D] values of all levels, flattened row-major per level.
        spatial_shapes: [L, 2] int64 (H, W) of each level.
        level_start_index: [L] int64 offset of each level in S.
        sampling_locations: [N, Lq, M, L, P, 2] (x, y); 0 and 1 are the outer edges of a level's map.
        attention_weights: [N, Lq, M, L, P].

    Returns:
        [N, Lq, M * D] in value's dtype (computed in the locations' dtype when value is half).
    """
    out_dtype = value.dtype
    dtype = sampling_locations.dtype
    n, tokens, heads, head_dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    # [N, M, S, D]: one flat table per image and head
    table = value.to(dtype).permute(0, 2, 1, 3).reshape(n * heads, tokens, head_dim)
    # [N*M, Lq, L, P, 2] and [N*M, Lq, L, P]
    locations = sampling_locations.permute(0, 2, 1, 3, 4, 5).reshape(n * heads, queries, levels, points, 2)
    weights = attention_weights.to(dtype).permute(0, 2, 1, 3, 4).reshape(n * heads, queries, levels, points)

    heights = spatial_shapes[:, 0].view(1, 1, levels, 1)
    widths = spatial_shapes[:, 1].view(1, 1, levels, 1)
    starts = level_start_index.view(1, 1, levels, 1)
    # pixel coordinates with align_corners=False: 0 is the centre of the first cell, -0.5 its edge
    x = locations[..., 0] * widths.to(dtype) - 0.5
    y = locations[..., 1] * heights.to(dtype) - 0.5
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = x - x0, y - y0
    x0, y0 = x0.to(torch.long), y0.to(torch.long)

    index, weight = [], []
    for dx, dy in _CORNERS:
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi < widths) & (yi >= 0) & (yi < heights)
        share = (fx if dx else 1 - fx) * (fy if dy else 1 - fy)
        weight.append(torch.where(inside, share * weights, torch.zeros_like(share)))
        # row-major offset in the flat table; neighbours off the map are clamped onto it (weight 0)
        index.append(starts + yi.clamp(min=0).minimum(heights - 1) * widths + xi.clamp(min=0).minimum(widths - 1))
    index = torch.stack(index, -1)                                            # [N*M, Lq, L, P, 4]
    weight = torch.stack(weight, -1)                                  # [N*M, Lq, L, P, 4]
    samples = levels * points * len(_CORNERS)
    gathered = torch.gather(table, 1, index.reshape(n * heads, queries * samples, 1).expand(-1, -1, head_dim))
    # [N*M*Lq, 1, L*P*4] @ [N*M*Lq, L*P*4, D] -> [N*M, Lq, D]
    output = torch.matmul(weight.reshape(n * heads * queries, 1, samples),
                          gathered.reshape(n * heads * queries, samples, head_dim)).reshape(n, heads, queries, head_dim)
    return output.permute(0, 2, 1, 3).reshape(n, queries, heads * head_dim).to(out_dtype)
