"""DINO's encoder attention, for any token, recomputed on demand.

Every encoder token is a query of the encoder's self-attention. Keeping every layer's sampling
locations and weights of every token would cost [layers, S, M, L, P, 3] floats (about 160 MB for
the 4-scale R50 at 800x1066), so a stored result keeps only the encoder's input tokens
(`DINOOutput.encoder_input`, [1, S, D]); `token_attention` re-runs the encoder from them with the
same model and reads the chosen tokens' offsets and weights from the input of each layer
(`MSDeformAttn.sampling`, row-wise, so these equal what the full pass computed). Only the first
E - 3 layers run over every token; the last two only where the chosen tokens read.
"""
from __future__ import annotations

import torch

from ..model.transformer import Encoder, FlatFeatures
from .result import PRECISIONS, EncoderToken, InferenceResult, TokenAttention, check_precision


def encoder_features(model: torch.nn.Module, result: InferenceResult) -> FlatFeatures:
    """The encoder's input as the model's forward built it, from the stored input tokens: the
    position embedding is recomputed from the padding mask (same module, same values)."""
    out = result.internals
    if out.encoder_input is None:
        raise ValueError("this result keeps no encoder input: run it with internals=True")
    device = next(model.parameters()).device
    tokens = out.encoder_input.to(device)
    batch, _, dim = tokens.shape
    srcs, masks, positions = [], [], []
    for (h, w), start in zip(out.spatial_shapes.tolist(), out.level_start_index.tolist()):
        srcs.append(tokens[:, start:start + h * w].transpose(1, 2).reshape(batch, dim, h, w))
        mask = out.padding_mask[:, start:start + h * w].view(batch, h, w).to(device)
        masks.append(mask)
        positions.append(model.backbone[1](mask).to(tokens.dtype))
    return model.transformer.flatten(srcs, masks, positions)


def token_attention(model: torch.nn.Module, result: InferenceResult, tokens: list[EncoderToken], *,
                    precision: str = "float32") -> list[TokenAttention]:
    """The self-attention of `tokens` in every encoder layer of `model` (the model that made
    `result`), recomputed by one pass through the encoder (see `_layer_inputs_at`), in the
    `precision` the result was computed in (see `runtime.dino.run_batch`)."""
    if not tokens:
        return []
    check_precision(precision)
    encoder: Encoder = model.transformer.encoder
    device = next(model.parameters()).device
    half = PRECISIONS[precision]
    with torch.inference_mode(), torch.autocast(device.type, dtype=half, enabled=half is not None):
        features = encoder_features(model, result)
        index = torch.tensor([t.index for t in tokens], device=features.tokens.device)
        reference = encoder.reference_points(features)                                  # [1, S, L, 2]
        locations, weights = [], []
        for layer, x in zip(encoder.layers, _layer_inputs_at(encoder, features, reference, index)):
            layer_locations, layer_weights = layer.self_attn.sampling(
                x + features.pos[:, index], reference[:, index], features.spatial_shapes)
            locations.append(layer_locations[0].float().cpu())
            weights.append(layer_weights[0].float().cpu())
    locations_t, weights_t = torch.stack(locations, 1), torch.stack(weights, 1)  # [n, E, ...]
    return [TokenAttention(token=t, reference_points=reference[0, index[i]].cpu(), sampling_locations=locations_t[i],
                           attention_weights=weights_t[i]) for i, t in enumerate(tokens)]


def _layer_inputs_at(encoder: Encoder, features: FlatFeatures, reference: torch.Tensor, index: torch.Tensor
                     ) -> list[torch.Tensor]:
    """The input [1, n, D] of every encoder layer at tokens `index`, as the full pass computes it.

    The first E - 3 layers run over every token. The last two run only where they must: layer
    E - 1's output is needed at the tokens alone, which read layer E - 2's output only at the
    cells their sampling points fall on (four per point); so layer E - 2 runs for those cells and
    the tokens, layer E - 1 for the tokens, each reading all the values it needs. For the
    released models this is 3 full layers instead of 5.
    """
    layers = list(encoder.layers)
    full = max(len(layers) - 3, 0)
    x = features.tokens
    inputs = [x[:, index]]
    for layer in layers[:full]:
        x = layer(x, reference, features)
        inputs.append(x[:, index])
    remaining = len(layers) - full
    if remaining == 2:
        inputs.append(layers[full](x, reference, features, rows=index))
    elif remaining == 3:
        near, last = layers[full], layers[full + 1]
        looks, _ = last.self_attn.sampling(near(x, reference, features, rows=index) + features.pos[:, index],
                                           reference[:, index], features.spatial_shapes)
        rows = torch.unique(torch.cat([index, _cells_read(looks, features)]))
        partial = torch.zeros_like(x)  # only the rows the tokens read are ever used
        partial[:, rows] = near(x, reference, features, rows=rows)
        inputs.append(partial[:, index])
        inputs.append(last(partial, reference, features, rows=index))
    return inputs


def _cells_read(locations: torch.Tensor, features: FlatFeatures) -> torch.Tensor:
    """Token indices of every cell that bilinear sampling at `locations` ([..., L, P, 2], (x, y)
    in [0, 1] of each level's padded map) reads: the four around each point, inside the map."""
    cells = []
    for level, ((h, w), start) in enumerate(zip(features.spatial_shapes.tolist(),
                                                features.level_start_index.tolist())):
        xy = locations[..., level, :, :].reshape(-1, 2).float()
        x0 = torch.floor(xy[:, 0] * w - 0.5).long()
        y0 = torch.floor(xy[:, 1] * h - 0.5).long()
        for dx in (0, 1):
            for dy in (0, 1):
                col, row = x0 + dx, y0 + dy
                keep = (col >= 0) & (col < w) & (row >= 0) & (row < h)
                cells.append(start + row[keep] * w + col[keep])
    return torch.cat(cells)
