"""Sine position encodings: of feature-map cells (encoder) and of anchor boxes (decoder queries)."""
from __future__ import annotations

import math

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """Normalized 2-D sine encoding of a padded feature map, as DINO's `PositionEmbeddingSineHW`.

    Coordinates are cumulative counts of valid (unpadded) cells plus `offset`, divided by the valid
    extent, times 2*pi; each axis gets `num_pos_feats` features with the given temperature. Output
    channels are (y features, x features). DINO uses temperature 20 and offset 0; detrex (as
    Deformable DETR) 10000 and -0.5.
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 20.0, offset: float = 0.0):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.offset = offset

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """mask [B, H, W] bool (True on padding) -> [B, 2 * num_pos_feats, H, W] float32."""
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        eps, scale = 1e-6, 2 * math.pi
        y_embed = (y_embed + self.offset) / (y_embed[:, -1:, :] + eps) * scale
        x_embed = (x_embed + self.offset) / (x_embed[:, :, -1:] + eps) * scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        pos_x = _interleave_sin_cos(x_embed[:, :, :, None] / dim_t)
        pos_y = _interleave_sin_cos(y_embed[:, :, :, None] / dim_t)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def anchor_sine_embedding(boxes: torch.Tensor, num_feats: int = 128) -> torch.Tensor:
    """Sine embedding of normalized anchors [..., 4] (cx, cy, w, h) -> [..., 4 * num_feats],
    ordered (y, x, w, h) with temperature 10000, as DINO's `gen_sineembed_for_position`."""
    scale = 2 * math.pi
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=boxes.device)
    dim_t = 10000 ** (2 * (dim_t // 2) / num_feats)
    x, y, w, h = (_interleave_sin_cos(boxes[..., i, None] * scale / dim_t) for i in range(4))
    return torch.cat((y, x, w, h), dim=-1)


def _interleave_sin_cos(angles: torch.Tensor) -> torch.Tensor:
    """[..., F] -> [..., F]: sin of even features and cos of odd ones, stacked pairwise."""
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)
