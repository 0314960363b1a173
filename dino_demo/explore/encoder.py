"""The encoder's own deformable attention, for any token, recomputed on demand.

Every encoder token is a query of the encoder's self-attention. Keeping every layer's sampling
locations and weights of every token would cost [layers, S, M, L, P, 3] floats (about 160 MB for
the 4-scale R50 at 800x1066), so a stored result keeps only the encoder's input tokens
(`DINOOutput.encoder_input`, [1, S, D]); `token_attention` re-runs the encoder from them with the
same model and reads the chosen tokens' offsets and weights from the input of each layer
(`MSDeformAttn.sampling`, row-wise, so these equal what the full pass computed). Only the first
E - 3 layers run over every token; the last two only where the chosen tokens read.
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..model.transformer import Encoder, FlatFeatures
from .inference import PRECISIONS, InferenceResult


@dataclass(frozen=True)
class EncoderToken:
    """One encoder token: `index` into the flattened multi-scale memory, its feature `level` and
    (row, col) `cell` in that level's grid."""

    index: int
    level: int
    cell: tuple[int, int]


@dataclass(frozen=True)
class TokenAttention:
    """One encoder token's self-attention in every encoder layer.

    reference_points: [L, 2] (x, y) of the token's cell centre in [0, 1] of each level's padded map.
    sampling_locations: [E, M, L, P, 2] (x, y) in [0, 1] of each level's padded map, per encoder
        layer E; attention_weights: [E, M, L, P] (softmax over L * P per head).
    """

    token: EncoderToken
    reference_points: torch.Tensor
    sampling_locations: torch.Tensor
    attention_weights: torch.Tensor


def level_grid(result: InferenceResult, level: int) -> tuple[int, int, int, int]:
    """(rows, cols) of level `level`'s padded grid and (rows, cols) of it that hold the image."""
    out = result.internals
    levels = int(out.spatial_shapes.shape[0])
    if isinstance(level, bool) or int(level) != level or not 0 <= level < levels:
        raise ValueError(f"level must be an integer in 0..{levels - 1}, got {level}")
    h, w = (int(v) for v in out.spatial_shapes[level])
    start = int(out.level_start_index[level])
    mask = out.padding_mask[0, start:start + h * w].view(h, w)
    return h, w, int((~mask[:, 0]).sum()), int((~mask[0, :]).sum())


def token_at(result: InferenceResult, level: int, x: float, y: float) -> EncoderToken:
    """The token of feature level `level` whose cell holds image pixel (x, y) (the nearest cell
    of the image's part of the grid when (x, y) lies outside the image)."""
    rows, cols, valid_rows, valid_cols = level_grid(result, level)
    (pad_h, pad_w), (in_h, in_w), (img_h, img_w) = result.padded_size, result.input_size, result.size
    col = int(float(x) * in_w / img_w / pad_w * cols)
    row = int(float(y) * in_h / img_h / pad_h * rows)
    return token(result, level, min(max(row, 0), valid_rows - 1), min(max(col, 0), valid_cols - 1))


def token(result: InferenceResult, level: int, row: int, col: int) -> EncoderToken:
    """The token at (row, col) of level `level`; ValueError outside the image's part of the grid."""
    _, w, valid_rows, valid_cols = level_grid(result, level)
    for name, value, count in (("row", row, valid_rows), ("column", col, valid_cols)):
        if isinstance(value, bool) or int(value) != value or not 0 <= value < count:
            raise ValueError(f"token {name} must be an integer in 0..{count - 1} on level {level + 1}, got {value}")
    start = int(result.internals.level_start_index[level])
    return EncoderToken(index=start + int(row) * w + int(col), level=int(level), cell=(int(row), int(col)))


def cell_box(result: InferenceResult, token: EncoderToken) -> list[float]:
    """[4] xyxy in original pixels of the token's cell."""
    rows, cols = (int(v) for v in result.internals.spatial_shapes[token.level])
    (pad_h, pad_w), (in_h, in_w), (img_h, img_w) = result.padded_size, result.input_size, result.size
    sx, sy = pad_w * img_w / in_w / cols, pad_h * img_h / in_h / rows
    row, col = token.cell
    return [col * sx, row * sy, (col + 1) * sx, (row + 1) * sy]


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
    `precision` the result was computed in (see `inference.run`)."""
    if result.family is not None:  # a transformers detector (dino_demo.families)
        from ..families.inference import token_attention as family_token_attention

        return family_token_attention(model, result, tokens)
    if not tokens:
        return []
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
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


class TokenAttentionCache:
    """Recomputed token attention by (result, token index): at most `per_result` tokens per
    result, least recently used dropped first; a result's entries go when the result does (weak
    keys), so the cache never keeps a dropped result alive. Thread-safe."""

    def __init__(self, per_result: int = 64):
        if per_result < 1:
            raise ValueError(f"per_result must be positive, got {per_result}")
        self.per_result = per_result
        self._entries: weakref.WeakKeyDictionary[InferenceResult, OrderedDict[int, TokenAttention]] = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many results have tokens cached."""
        with self._lock:
            return len(self._entries)

    def get(self, result: InferenceResult, token: EncoderToken,
            compute: Callable[[], TokenAttention]) -> TokenAttention:
        """The cached attention of `token` in `result`, else `compute()` (outside the lock), cached."""
        with self._lock:
            tokens = self._entries.get(result)
            if tokens is not None and token.index in tokens:
                tokens.move_to_end(token.index)
                return tokens[token.index]
        attention = compute()
        with self._lock:
            tokens = self._entries.setdefault(result, OrderedDict())
            tokens[token.index] = attention
            while len(tokens) > self.per_result:
                tokens.popitem(last=False)
        return attention
