"""DINO's deformable transformer: encoder, two-stage query selection, refining decoder.

All tensors are batch-first: [B, tokens or queries, D].
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MSDeformAttn
from .box_ops import inverse_sigmoid
from .position_encoding import anchor_sine_embedding


class MLP(nn.Module):
    """Linear layers with ReLU between them (`layers.0`, `layers.1`, ... as in the checkpoints)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [out_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


def feed_forward(layer: EncoderLayer | DecoderLayer, x: torch.Tensor) -> torch.Tensor:
    """A layer's dropout(linear2(dropout(relu(linear1(x))))), or its `fast_feed_forward` where an
    inference copy of the model has one (the same in token blocks with the ReLU fused:
    `runtime.speed.BlockedFeedForward`)."""
    if layer.fast_feed_forward is not None:
        return layer.fast_feed_forward(x)
    return layer.dropout(layer.linear2(layer.dropout(F.relu(layer.linear1(x)))))


@dataclass
class FlatFeatures:
    """Multi-scale features flattened into one token sequence.

    tokens [B, S, D]; pos [B, S, D] (position + level embedding); padding_mask [B, S];
    spatial_shapes [L, 2] int64 (H, W); level_start_index [L]; valid_ratios [B, L, 2] (w, h);
    level_shapes: the (H, W) of `spatial_shapes` as Python ints, for code that loops over levels
    (symbolic sizes under `torch.export`, so that an exported graph follows the input size).
    """

    tokens: torch.Tensor
    pos: torch.Tensor
    padding_mask: torch.Tensor
    spatial_shapes: torch.Tensor
    level_start_index: torch.Tensor
    valid_ratios: torch.Tensor
    level_shapes: tuple[tuple[int, int], ...]


@dataclass
class DecoderOutput:
    """hidden [K, B, Q, D] normalized layer outputs; references [K+1, B, Q, 4];
    logits [K, B, Q, C]; boxes [K, B, Q, 4]; sampling_locations / attention_weights per layer
    ([K, B, Q, M, L, P(, 2)]) when captured."""

    hidden: torch.Tensor
    references: torch.Tensor
    logits: torch.Tensor
    boxes: torch.Tensor
    sampling_locations: torch.Tensor | None
    attention_weights: torch.Tensor | None


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, levels: int, heads: int, points: int, dropout: float):
        super().__init__()
        self.self_attn = MSDeformAttn(dim, levels, heads, points)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.fast_feed_forward: nn.Module | None = None  # see feed_forward

    def forward(self, x: torch.Tensor, reference_points: torch.Tensor, features: FlatFeatures,
                rows: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, S, D] -> [B, S, D]; with `rows` ([n] token indices), only those tokens' outputs
        [B, n, D] (each reads values from all of x; the same rows as a full pass)."""
        query, pos, reference = x, features.pos, reference_points
        if rows is not None:
            query, pos, reference = x[:, rows], pos[:, rows], reference_points[:, rows]
        attended, _, _ = self.self_attn(query + pos, reference, x, features.spatial_shapes,
                                        features.level_start_index, features.padding_mask, features.level_shapes)
        out = self.norm1(query + self.dropout(attended))
        return self.norm2(out + feed_forward(self, out))


class Encoder(nn.Module):
    def __init__(self, num_layers: int, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(**layer_kwargs) for _ in range(num_layers))

    @staticmethod
    def reference_points(features: FlatFeatures) -> torch.Tensor:
        """Centre of every token's cell, normalized by the valid size of its level, then expressed
        in every level's padded map: [B, S, L, 2]."""
        points = []
        valid = features.valid_ratios
        for level, (h, w) in enumerate(features.level_shapes):
            ys, xs = torch.meshgrid(
                torch.arange(h, dtype=torch.float32, device=valid.device) + 0.5,
                torch.arange(w, dtype=torch.float32, device=valid.device) + 0.5, indexing="ij")
            ys = ys.reshape(-1)[None] / (valid[:, None, level, 1] * h)
            xs = xs.reshape(-1)[None] / (valid[:, None, level, 0] * w)
            points.append(torch.stack((xs, ys), -1))
        return torch.cat(points, 1)[:, :, None] * valid[:, None]

    def forward(self, features: FlatFeatures) -> torch.Tensor:
        reference_points = self.reference_points(features)
        x = features.tokens
        for layer in self.layers:
            x = layer(x, reference_points, features)
        return x


class DecoderLayer(nn.Module):
    """Self-attention among queries, deformable cross-attention into the memory, FFN (post-norm)."""

    def __init__(self, dim: int, ffn_dim: int, levels: int, heads: int, points: int, dropout: float):
        super().__init__()
        self.cross_attn = MSDeformAttn(dim, levels, heads, points)
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.fast_feed_forward: nn.Module | None = None  # see feed_forward

    def forward(self, x: torch.Tensor, query_pos: torch.Tensor, reference_boxes: torch.Tensor,
                memory: torch.Tensor, features: FlatFeatures, attn_mask: torch.Tensor | None):
        q = x + query_pos
        attended = self.self_attn(q, q, x, attn_mask=attn_mask, need_weights=False)[0]
        x = self.norm2(x + self.dropout(attended))
        attended, locations, weights = self.cross_attn(
            x + query_pos, reference_boxes, memory, features.spatial_shapes, features.level_start_index,
            features.padding_mask, features.level_shapes)
        x = self.norm1(x + self.dropout(attended))
        x = self.norm3(x + feed_forward(self, x))
        return x, locations, weights


class Decoder(nn.Module):
    """Layers that refine anchor boxes: each layer predicts a box delta in inverse-sigmoid space.

    `class_embed` / `bbox_embed` are the detector's prediction heads, one per layer (official DINO
    shares a single module across layers); they are passed in because the checkpoints list them here
    too. Each layer's reference update clamps its inverse sigmoid with eps 1e-3; the returned boxes
    use `box_eps` (official 1e-3, MMDetection's head 1e-5).
    """

    def __init__(self, num_layers: int, dim: int, class_embed: nn.ModuleList, bbox_embed: nn.ModuleList,
                 box_eps: float = 1e-3, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(dim=dim, **layer_kwargs) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)
        self.ref_point_head = MLP(2 * dim, dim, dim, 2)
        self.bbox_embed = bbox_embed
        self.class_embed = class_embed
        self.box_eps = box_eps

    def forward(self, queries: torch.Tensor, anchors_unsigmoid: torch.Tensor, memory: torch.Tensor,
                features: FlatFeatures, attn_mask: torch.Tensor | None, capture: bool) -> DecoderOutput:
        x = queries
        reference = anchors_unsigmoid.sigmoid()
        references, hidden, locations, weights = [reference], [], [], []
        scale = torch.cat([features.valid_ratios, features.valid_ratios], -1)[:, None]  # [B, 1, L, 4]
        for layer, bbox_head in zip(self.layers, self.bbox_embed):
            reference_per_level = reference[:, :, None] * scale
            query_pos = self.ref_point_head(anchor_sine_embedding(reference_per_level[:, :, 0], x.shape[-1] // 2))
            x, layer_locations, layer_weights = layer(x, query_pos, reference_per_level, memory, features, attn_mask)
            # Look forward twice: the next reference comes from the un-normalized output, detached.
            # The references stay float32 under autocast (a half-precision delta plus a float32
            # inverse sigmoid is float32), so the refinement does not lose precision layer by layer.
            new_reference = (bbox_head(x) + inverse_sigmoid(reference)).sigmoid()
            reference = new_reference.detach()
            references.append(new_reference)
            hidden.append(self.norm(x))
            if capture:
                locations.append(layer_locations)
                weights.append(layer_weights)
        hidden_t = torch.stack(hidden)
        boxes = torch.stack([
            (head(h) + inverse_sigmoid(ref, self.box_eps)).sigmoid()
            for head, h, ref in zip(self.bbox_embed, hidden, references[:-1])])
        logits = torch.stack([head(h) for head, h in zip(self.class_embed, hidden)])
        return DecoderOutput(
            hidden=hidden_t, references=torch.stack(references), logits=logits, boxes=boxes,
            sampling_locations=torch.stack(locations) if capture else None,
            attention_weights=torch.stack(weights) if capture else None)


@dataclass
class Selection:
    """Two-stage selection. topk_indices [B, Q]; proposals [B, Q, 4] sigmoid (before the encoder
    box head); anchors_unsigmoid [B, Q, 4] (after it, detached input of the decoder);
    boxes [B, Q, 4] = sigmoid(anchors) with gradient; logits [B, Q, C]; max_logit [B, S]."""

    topk_indices: torch.Tensor
    proposals: torch.Tensor
    anchors_unsigmoid: torch.Tensor
    boxes: torch.Tensor
    logits: torch.Tensor
    max_logit: torch.Tensor


class DeformableTransformer(nn.Module):
    def __init__(self, *, dim: int, heads: int, ffn_dim: int, levels: int, enc_layers: int, dec_layers: int,
                 enc_points: int, dec_points: int, num_queries: int, num_classes: int, dropout: float,
                 class_embed: nn.ModuleList, bbox_embed: nn.ModuleList, box_eps: float = 1e-3):
        super().__init__()
        self.num_queries = num_queries
        common = dict(ffn_dim=ffn_dim, levels=levels, heads=heads, dropout=dropout)
        self.level_embed = nn.Parameter(torch.empty(levels, dim))
        self.encoder = Encoder(enc_layers, dim=dim, points=enc_points, **common)
        self.decoder = Decoder(dec_layers, dim, class_embed, bbox_embed, box_eps, points=dec_points, **common)
        self.tgt_embed = nn.Embedding(num_queries, dim)
        self.enc_output = nn.Linear(dim, dim)
        self.enc_output_norm = nn.LayerNorm(dim)
        self.enc_out_bbox_embed = MLP(dim, dim, 4, 3)
        self.enc_out_class_embed = nn.Linear(dim, num_classes)

    # -- input ------------------------------------------------------------------------------
    def flatten(self, srcs: list[torch.Tensor], masks: list[torch.Tensor], positions: list[torch.Tensor]) -> FlatFeatures:
        shapes = tuple((src.shape[-2], src.shape[-1]) for src in srcs)
        tokens = torch.cat([src.flatten(2).transpose(1, 2) for src in srcs], 1)
        pos = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embed[i].view(1, 1, -1)
                         for i, p in enumerate(positions)], 1)
        padding_mask = torch.cat([m.flatten(1) for m in masks], 1)
        spatial_shapes = _shapes_tensor(shapes, tokens.device)
        level_start_index = torch.cat((spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1]))
        valid_ratios = torch.stack([_valid_ratio(m) for m in masks], 1)
        return FlatFeatures(tokens, pos, padding_mask, spatial_shapes, level_start_index, valid_ratios, shapes)

    # -- two-stage query selection ----------------------------------------------------------
    def select(self, memory: torch.Tensor, features: FlatFeatures, topk_indices: torch.Tensor | None) -> Selection:
        """Score every encoder token as an object proposal and keep the top `num_queries`
        (or the given `topk_indices`, to force a selection)."""
        proposals = token_proposals(features)  # [B, S, 4] unsigmoid, +inf where invalid
        invalid = torch.isinf(proposals).any(-1, keepdim=True)
        output_memory = self.enc_output_norm(self.enc_output(memory.masked_fill(invalid, 0.0)))
        if torch.is_autocast_enabled(memory.device.type):
            # The selection's scores in float32: half-precision logits tie and change the top-k
            # (bfloat16 on the shipped model: 1.6% of the selection against 1.1% with this).
            with torch.autocast(memory.device.type, enabled=False):
                logits = self.enc_out_class_embed(output_memory.float())
        else:
            logits = self.enc_out_class_embed(output_memory)
        max_logit = logits.max(-1)[0]
        if topk_indices is None:
            k = torch.sym_min(self.num_queries, memory.shape[1])  # a graph op when the size is traced
            topk_indices = torch.topk(max_logit, k, dim=1)[1]
        else:
            topk_indices = _check_topk(topk_indices, memory, self.num_queries)

        def gather(t: torch.Tensor) -> torch.Tensor:
            return torch.gather(t, 1, topk_indices.unsqueeze(-1).expand(-1, -1, t.shape[-1]))

        # The box head only runs on the selected tokens (row-wise, so the same as on all of them).
        selected_memory, selected_proposals = gather(output_memory), gather(proposals)
        anchors = self.enc_out_bbox_embed(selected_memory) + selected_proposals
        return Selection(
            topk_indices=topk_indices, proposals=selected_proposals.sigmoid(),
            anchors_unsigmoid=anchors.detach(), boxes=anchors.sigmoid(),
            logits=gather(logits), max_logit=max_logit)

    def content_queries(self, batch: int, count: int) -> torch.Tensor:
        """[B, count, D] learned content queries (DINO's mixed query selection)."""
        return self.tgt_embed.weight[:count].unsqueeze(0).expand(batch, -1, -1)


def token_proposals(features: FlatFeatures) -> torch.Tensor:
    """One proposal per token: the cell centre normalized by the valid size, width and height
    0.05 * 2**level, in inverse-sigmoid space; +inf for padding tokens and for proposals with any
    coordinate outside (0.01, 0.99). -> [B, S, 4]."""
    mask = features.padding_mask
    batch = mask.shape[0]
    proposals, start = [], 0
    for level, (h, w) in enumerate(features.level_shapes):
        level_mask = mask[:, start:start + h * w].view(batch, h, w)
        valid_h = (~level_mask[:, :, 0]).sum(1)
        valid_w = (~level_mask[:, 0, :]).sum(1)
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float32, device=mask.device),
            torch.arange(w, dtype=torch.float32, device=mask.device), indexing="ij")
        grid = torch.stack([xs, ys], -1)
        scale = torch.stack([valid_w, valid_h], -1).view(batch, 1, 1, 2)
        grid = (grid.unsqueeze(0).expand(batch, -1, -1, -1) + 0.5) / scale
        wh = torch.ones_like(grid) * 0.05 * (2.0 ** level)
        proposals.append(torch.cat((grid, wh), -1).view(batch, -1, 4))
        start += h * w
    proposals = torch.cat(proposals, 1)
    valid = ((proposals > 0.01) & (proposals < 0.99)).all(-1, keepdim=True)
    proposals = torch.log(proposals / (1 - proposals))
    proposals = proposals.masked_fill(mask.unsqueeze(-1), float("inf"))
    return proposals.masked_fill(~valid, float("inf"))


def _shapes_tensor(shapes: tuple[tuple[int, int], ...], device: torch.device) -> torch.Tensor:
    """(H, W) pairs -> [L, 2] int64; traced (symbolic) sizes are built from scalars so that they
    stay graph values, plain ints in one copy."""
    if all(isinstance(size, int) for shape in shapes for size in shape):
        return torch.tensor(shapes, dtype=torch.long, device=device)
    return torch.stack([torch.stack([torch.scalar_tensor(size, dtype=torch.long, device=device) for size in shape])
                        for shape in shapes])


def _valid_ratio(mask: torch.Tensor) -> torch.Tensor:
    """[B, H, W] padding mask -> [B, 2] (valid width / W, valid height / H)."""
    _, h, w = mask.shape
    valid_h = torch.sum(~mask[:, :, 0], 1)
    valid_w = torch.sum(~mask[:, 0, :], 1)
    return torch.stack([valid_w.float() / w, valid_h.float() / h], -1)


def _check_topk(topk_indices: torch.Tensor, memory: torch.Tensor, num_queries: int) -> torch.Tensor:
    batch, tokens = memory.shape[:2]
    if topk_indices.dim() != 2 or topk_indices.shape[0] != batch or not 1 <= topk_indices.shape[1] <= num_queries:
        raise ValueError(f"topk_indices must be [{batch}, <= {num_queries}] token indices, "
                         f"got shape {tuple(topk_indices.shape)}")
    if topk_indices.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"topk_indices must be integers, got {topk_indices.dtype}")
    if len(topk_indices) and (topk_indices.min() < 0 or topk_indices.max() >= tokens):
        raise ValueError(f"topk_indices must lie in [0, {tokens}) for this input's {tokens} tokens")
    return topk_indices.to(device=memory.device, dtype=torch.long)
