"""The DINO detector: backbone -> input projections -> deformable transformer -> per-layer heads."""
from __future__ import annotations

import dataclasses
import math
import time

import torch
from torch import nn

from .attention import MSDeformAttn
from .backbone import build_backbone, downsample_mask
from .config import MIN_INPUT_SIDE, DINOConfig
from .denoising import DenoisingQueries, denoising_attn_mask, make_denoising_queries
from .outputs import DenoisingOutput, DINOOutput, EncoderSelection
from .position_encoding import PositionEmbeddingSine
from .transformer import MLP, DeformableTransformer


class Joiner(nn.Sequential):
    """(backbone, position encoding), named `backbone.0` / `backbone.1` as in the checkpoints."""

    def __init__(self, backbone: nn.Module, position_encoding: PositionEmbeddingSine):
        super().__init__(backbone, position_encoding)

    def forward(self, images: torch.Tensor, mask: torch.Tensor):
        features = self[0](images, mask)
        return features, [self[1](m).to(x.dtype) for x, m in features]


class DINO(nn.Module):
    def __init__(self, cfg: DINOConfig):
        super().__init__()
        self.cfg = cfg
        dim = cfg.hidden_dim
        backbone = build_backbone(cfg.backbone, cfg.backbone_levels)
        self.backbone = Joiner(backbone, PositionEmbeddingSine(dim // 2, cfg.pe_temperature, cfg.pe_offset))
        self.input_proj = _input_projections(backbone.num_channels, cfg.num_feature_levels, dim)
        # The decoder layers' class and box heads, listed once per layer under both `class_embed.*`
        # and `transformer.decoder.class_embed.*` in the checkpoints: one Linear and one MLP shared
        # by every layer (official DINO), or one of each per layer (`shared_heads=False`: detrex,
        # MMDetection, official DINO with dec_pred_class_embed_share / bbox_embed_share off).
        if cfg.shared_heads:
            class_heads, bbox_heads = [nn.Linear(dim, cfg.num_classes)], [MLP(dim, dim, 4, 3)]
            per_layer = cfg.dec_layers
        else:
            class_heads = [nn.Linear(dim, cfg.num_classes) for _ in range(cfg.dec_layers)]
            bbox_heads = [MLP(dim, dim, 4, 3) for _ in range(cfg.dec_layers)]
            per_layer = 1
        self.class_embed = nn.ModuleList(class_heads * per_layer)
        self.bbox_embed = nn.ModuleList(bbox_heads * per_layer)
        self.transformer = DeformableTransformer(
            dim=dim, heads=cfg.num_heads, ffn_dim=cfg.ffn_dim, levels=cfg.num_feature_levels,
            enc_layers=cfg.enc_layers, dec_layers=cfg.dec_layers, enc_points=cfg.enc_points,
            dec_points=cfg.dec_points, num_queries=cfg.num_queries, num_classes=cfg.num_classes,
            dropout=cfg.dropout, class_embed=self.class_embed, bbox_embed=self.bbox_embed, box_eps=cfg.box_eps)
        # Denoising label embedding: one row per class plus one spare, as the official code.
        self.label_enc = nn.Embedding(cfg.num_classes + 1, dim)
        _init_weights(self, class_heads, bbox_heads)

    # -- stages -----------------------------------------------------------------------------
    def multi_scale_features(self, images: torch.Tensor, masks: torch.Tensor):
        """Backbone features projected to `hidden_dim`, plus the extra stride-2 levels, with masks
        and position encodings: three lists of length num_feature_levels."""
        features, positions = self.backbone(images, masks)
        srcs = [proj(x) for proj, (x, _) in zip(self.input_proj, features)]
        level_masks = [m for _, m in features]
        for level in range(len(features), self.cfg.num_feature_levels):
            # The first extra level convolves the raw last backbone stage, later ones the previous level.
            source = features[-1][0] if level == len(features) else srcs[-1]
            src = self.input_proj[level](source)
            mask = downsample_mask(masks, src.shape[-2:])
            srcs.append(src)
            level_masks.append(mask)
            positions.append(self.backbone[1](mask).to(src.dtype))
        return srcs, level_masks, positions

    def forward(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        targets: list[dict[str, torch.Tensor]] | None = None,
        *,
        topk_indices: torch.Tensor | None = None,
        denoising: DenoisingQueries | None = None,
        capture_attention: bool = False,
        timings: dict[str, float] | None = None,
    ) -> DINOOutput:
        """Run DINO on a padded batch.

        Args:
            images: [B, 3, H, W] normalized images, zero-padded right/bottom.
            masks: [B, H, W] bool, True on padding.
            targets: per image `labels` [n] int64 and `boxes` [n, 4] normalized cxcywh; in
                training mode they add the contrastive denoising queries.
            topk_indices: [B, Q'] encoder token indices to use instead of the top-Q selection.
            denoising: denoising queries to decode beside the matching queries (in any mode),
                instead of those made from `targets` in training mode (see
                `denoising.make_denoising_queries`; its `num_queries` must be Q').
            capture_attention: also return every decoder layer's sampling locations and weights,
                and the encoder's input tokens (any encoder token's attention is recomputed
                from them on demand, see `explore.encoder`).
            timings: if given, filled with seconds spent in "backbone", "encoder", "decoder".
        """
        _check_inputs(images, masks)
        clock = _StageClock(timings, images.device)
        srcs, level_masks, positions = self.multi_scale_features(images, masks)
        clock.lap("backbone")

        transformer = self.transformer
        features = transformer.flatten(srcs, level_masks, positions)
        memory = transformer.encoder(features)
        selection = transformer.select(memory, features, topk_indices)
        clock.lap("encoder")

        batch, num_selected = selection.topk_indices.shape
        queries = transformer.content_queries(batch, num_selected)
        anchors = selection.anchors_unsigmoid
        attn_mask, dn = None, denoising
        if dn is None and self.training and targets is not None and self.cfg.dn_number > 0:
            dn = self._denoising_queries(targets, num_selected)
        if dn is not None:
            dn = _fit_denoising(dn, batch, num_selected)
            queries = torch.cat([dn.content, queries], 1)
            anchors = torch.cat([dn.anchors_unsigmoid, anchors], 1)
            attn_mask = dn.attn_mask
        decoded = transformer.decoder(queries, anchors, memory, features, attn_mask, capture_attention)
        clock.lap("decoder")

        pad = dn.pad_size if dn is not None else 0
        levels, cells = _token_positions(selection.topk_indices, features.spatial_shapes, features.level_start_index)
        return DINOOutput(
            logits=decoded.logits[:, :, pad:], boxes=decoded.boxes[:, :, pad:],
            references=decoded.references[:, :, pad:], decoder_features=decoded.hidden[-1][:, pad:],
            memory=memory, spatial_shapes=features.spatial_shapes,
            level_start_index=features.level_start_index, valid_ratios=features.valid_ratios,
            padding_mask=features.padding_mask,
            selection=EncoderSelection(
                topk_indices=selection.topk_indices, levels=levels, cells=cells,
                proposals=selection.proposals, boxes=selection.boxes, logits=selection.logits,
                max_logit=selection.max_logit),
            sampling_locations=None if decoded.sampling_locations is None else decoded.sampling_locations[:, :, pad:],
            attention_weights=None if decoded.attention_weights is None else decoded.attention_weights[:, :, pad:],
            encoder_input=features.tokens if capture_attention else None,
            denoising=None if dn is None else DenoisingOutput(
                logits=decoded.logits[:, :, :pad], boxes=decoded.boxes[:, :, :pad], pad_size=pad,
                num_groups=dn.num_groups, max_targets=dn.max_targets, attn_mask=dn.attn_mask,
                references=decoded.references[:, :, :pad], queries=dn),
            timings=dict(timings) if timings is not None else {},
        )

    def _denoising_queries(self, targets, num_queries: int) -> DenoisingQueries:
        cfg = self.cfg
        return make_denoising_queries(
            targets, self.label_enc, cfg.num_classes, num_queries, cfg.dn_number,
            cfg.dn_label_noise_ratio, cfg.dn_box_noise_scale)


def build_model(cfg: DINOConfig) -> DINO:
    return DINO(cfg)


def _input_projections(in_channels: list[int], num_levels: int, dim: int) -> nn.ModuleList:
    """1x1 conv + GroupNorm per backbone level; 3x3 stride-2 conv + GroupNorm per extra level."""
    projections = [nn.Sequential(nn.Conv2d(c, dim, kernel_size=1), nn.GroupNorm(32, dim)) for c in in_channels]
    extra_in = in_channels[-1]
    for _ in range(num_levels - len(in_channels)):
        projections.append(nn.Sequential(nn.Conv2d(extra_in, dim, kernel_size=3, stride=2, padding=1), nn.GroupNorm(32, dim)))
        extra_in = dim
    return nn.ModuleList(projections)


def _init_weights(model: DINO, class_heads: list[nn.Linear], bbox_heads: list[MLP]) -> None:
    """Initialization for training from scratch (checkpoints overwrite all of it)."""
    transformer = model.transformer
    for name, p in transformer.named_parameters():
        if p.dim() > 1 and not name.startswith("decoder.class_embed") and not name.startswith("decoder.bbox_embed"):
            nn.init.xavier_uniform_(p)
    for module in transformer.modules():
        if isinstance(module, MSDeformAttn):
            module.reset_parameters()
    nn.init.normal_(transformer.level_embed)
    for proj in model.input_proj:
        nn.init.xavier_uniform_(proj[0].weight, gain=1)
        nn.init.zeros_(proj[0].bias)
    prior_bias = -math.log((1 - 0.01) / 0.01)
    for head in (*class_heads, transformer.enc_out_class_embed):
        nn.init.constant_(head.bias, prior_bias)
    for mlp in (*bbox_heads, transformer.enc_out_bbox_embed):
        nn.init.zeros_(mlp.layers[-1].weight)
        nn.init.zeros_(mlp.layers[-1].bias)


def _token_positions(indices: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor):
    """Token index -> (feature level [B, Q], (row, col) [B, Q, 2])."""
    levels = torch.bucketize(indices, level_start_index, right=True) - 1
    offset = indices - level_start_index[levels]
    widths = spatial_shapes[levels, 1]
    return levels, torch.stack([offset // widths, offset % widths], -1)


def _fit_denoising(dn: DenoisingQueries, batch: int, num_queries: int) -> DenoisingQueries:
    """`dn` with its attention mask made for `num_queries` matching queries (fewer than configured
    when the image has fewer encoder tokens; the mask draws no random numbers)."""
    if dn.content.shape[:2] != (batch, dn.pad_size):
        raise ValueError(f"denoising queries for {dn.content.shape[0]} images do not fit a batch of {batch}")
    if dn.attn_mask.shape != (dn.pad_size + num_queries,) * 2:
        dn = dataclasses.replace(dn, attn_mask=denoising_attn_mask(dn.pad_size, dn.num_groups, num_queries,
                                                                   dn.attn_mask.device))
    return dn


def _check_inputs(images: torch.Tensor, masks: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    if masks.shape != (images.shape[0], *images.shape[2:]) or masks.dtype != torch.bool:
        raise ValueError(f"masks must be bool [B, H, W] matching images {tuple(images.shape)}, "
                         f"got {masks.dtype} {tuple(masks.shape)}")
    if images.shape[-2] < MIN_INPUT_SIDE or images.shape[-1] < MIN_INPUT_SIDE:
        raise ValueError(f"images must be at least {MIN_INPUT_SIDE}x{MIN_INPUT_SIDE} pixels, "
                         f"got {tuple(images.shape[-2:])}")


class _StageClock:
    """Records wall time per stage into `timings` (synchronizing CUDA so the split is real)."""

    def __init__(self, timings: dict[str, float] | None, device: torch.device):
        self.timings, self.device = timings, device
        self.last = self._now() if timings is not None else 0.0

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.timings is not None:
            now = self._now()
            self.timings[stage] = now - self.last
            self.last = now
