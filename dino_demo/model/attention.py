"""Multi-scale deformable attention as a module: predicts where to look, then calls the op."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops


class MSDeformAttn(nn.Module):
    """Each query attends to `points` sampled locations per head and level around its reference.

    Reference points are either (x, y) — offsets are then in cells of each level — or boxes
    (cx, cy, w, h) — offsets are then fractions of the box, scaled by 0.5 / points.
    """

    def __init__(self, dim: int, levels: int, heads: int, points: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.levels, self.heads, self.points = levels, heads, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        # An inference copy (runtime.speed) sets this: values are then masked only when some token
        # is padding (not for a single image), at the cost of a check no exported graph could hold.
        self.skip_unpadded_mask = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero offsets with a bias fanning each head out in its own direction, uniform weights."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.heads, dtype=torch.float32) * (2.0 * math.pi / self.heads)
        directions = torch.stack([angles.cos(), angles.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True)[0]
        steps = torch.arange(1, self.points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        grid = directions.view(self.heads, 1, 1, 2) * steps.expand(1, self.levels, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for linear in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def sampling(self, query: torch.Tensor, reference_points: torch.Tensor,
                 spatial_shapes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Where the queries look and how much each look counts, without reading any value.

        Args: as `forward` (query [B, Lq, D], reference_points [B, Lq, L, 2 or 4], spatial_shapes [L, 2]).
        Returns: sampling_locations [B, Lq, M, L, P, 2] (x, y) in [0, 1] of each level's padded
            map, attention_weights [B, Lq, M, L, P] (softmax over L * P per head); both float32
            under autocast too.
        Row-wise in the queries: any subset of queries gives the same rows as all of them.
        """
        b, num_queries, _ = query.shape
        m, l, p = self.heads, self.levels, self.points
        if torch.is_autocast_enabled(query.device.type):  # one cast for both products, not one each
            query = query.to(torch.get_autocast_dtype(query.device.type))
        # Offsets and logits in float32 also under autocast (where the products are half precision):
        # the locations are float32 anyway, and one widening copy costs less than arithmetic
        # between half and float32 tensors; the softmax runs in float32.
        offsets = _widened(self.sampling_offsets(query)).view(b, num_queries, m, l, p, 2)
        logits = _widened(self.attention_weights(query)).view(b, num_queries, m, l * p)
        weights = F.softmax(logits, -1).view(b, num_queries, m, l, p)
        if reference_points.shape[-1] == 2:
            # reference + offsets / (W, H) of each level in one pass, with both small operands laid
            # out over the points first: broadcasting then runs over contiguous [L * P * 2] rows
            # instead of pairs (several times faster at the encoder's 18k queries), same sums.
            normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)
            normalizer = normalizer[:, None, :].expand(l, p, 2).to(offsets.dtype)  # [L, P, 2], contiguous
            reference = reference_points[:, :, :, None, :].expand(b, num_queries, l, p, 2).contiguous()
            locations = torch.addcdiv(reference[:, :, None], offsets, normalizer)
        elif reference_points.shape[-1] == 4:
            locations = (reference_points[:, :, None, :, None, :2]
                         + offsets / p * reference_points[:, :, None, :, None, 2:] * 0.5)
        else:
            raise ValueError(f"reference_points must end in 2 or 4 coordinates, got {tuple(reference_points.shape)}")
        return locations, weights

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        padding_mask: torch.Tensor | None,
        level_shapes: Sequence[tuple[int, int]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            query: [B, Lq, D] queries (with position embedding added).
            reference_points: [B, Lq, L, 2] points or [B, Lq, L, 4] boxes, normalized to each
                level's padded map (already scaled by the valid ratios).
            value: [B, S, D] flattened multi-scale features; padding_mask: [B, S] True on padding.
            spatial_shapes: [L, 2] int64 (H, W) of each level; level_start_index: [L].
            level_shapes: optionally the same (H, W) pairs as Python ints (see `ops.ms_deform_attn`).

        Returns:
            output [B, Lq, D], sampling_locations [B, Lq, M, L, P, 2], attention_weights [B, Lq, M, L, P].
        """
        b = query.shape[0]
        value = self.value_proj(value)
        if padding_mask is not None and not (self.skip_unpadded_mask and not padding_mask.any()):
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(b, value.shape[1], self.heads, -1)
        locations, weights = self.sampling(query, reference_points, spatial_shapes)
        # Under autocast the value projection is half precision (float16 or bfloat16) and so are the
        # weights given to the op, which accumulates in float32; the locations stay float32, as a
        # bfloat16 location (8-bit mantissa) could be a pixel off on a 128-wide map.
        output = ops.ms_deform_attn(value, spatial_shapes, level_start_index, _widened(locations),
                                    weights.to(value.dtype), level_shapes)
        return self.output_proj(output), locations, weights


def _widened(t: torch.Tensor) -> torch.Tensor:
    """`t` in float32 when it is float16 or bfloat16, else as it is (float32, or float64 in tests)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
