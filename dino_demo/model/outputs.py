"""Typed outputs of a DINO forward pass. Shapes use B batch, Q query slots, C classes, S encoder
tokens, L feature levels, M heads, P points, K decoder layers, D hidden size.

Boxes are normalized (cx, cy, w, h) relative to each image's own (unpadded) size unless a field
says otherwise, exactly as in the official code.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .denoising import DenoisingQueries


@dataclass
class EncoderSelection:
    """The two-stage query selection: which encoder tokens became decoder queries.

    topk_indices: [B, Q] int64 token index into the flattened multi-scale memory, indexed by
        query slot (decoder query slot q starts from token topk_indices[:, q]).
    levels: [B, Q] int64 feature level of each selected token.
    cells: [B, Q, 2] int64 (row, col) of each selected token in its level's grid.
    proposals: [B, Q, 4] the token's fixed proposal box (cell centre, 0.05 * 2**level wide),
        before the encoder box head; invalid tokens come out as 1.0 (sigmoid of +inf).
    boxes: [B, Q, 4] proposal after the encoder box head (the decoder's initial anchors).
    logits: [B, Q, C] encoder class logits of the selected tokens.
    max_logit: [B, S] max over classes of the encoder class logits of every token (the score
        top-k ranks by).
    """

    topk_indices: torch.Tensor
    levels: torch.Tensor
    cells: torch.Tensor
    proposals: torch.Tensor
    boxes: torch.Tensor
    logits: torch.Tensor
    max_logit: torch.Tensor


@dataclass
class DenoisingOutput:
    """Decoder outputs of the contrastive denoising queries (training only).

    logits: [K, B, pad_size, C]; boxes: [K, B, pad_size, 4] (each layer's prediction, the boxes
    the loss sees).
    references: [K + 1, B, pad_size, 4] the reference boxes before layer 0 (the noised anchors)
        and after each layer (the detached boxes the next layer starts from).
    Query slots are laid out in `num_groups` groups of 2 * `max_targets` (positives first, then
    negatives); positive query t of group g is slot g * 2 * max_targets + t.
    attn_mask: [pad_size + Q, pad_size + Q] bool, True where attention is blocked.
    queries: the denoising queries that were decoded (noised labels and boxes, slot layout).
    """

    logits: torch.Tensor
    boxes: torch.Tensor
    pad_size: int
    num_groups: int
    max_targets: int
    attn_mask: torch.Tensor
    references: torch.Tensor
    queries: "DenoisingQueries"


@dataclass
class DINOOutput:
    """Everything one forward pass of DINO produces.

    logits: [K, B, Q, C] class logits after every decoder layer (last = final prediction).
    boxes: [K, B, Q, 4] sigmoid boxes after every decoder layer (look-forward-twice: layer k's box
        refines references[k] with the layer's normalized output).
    references: [K + 1, B, Q, 4] decoder reference boxes before layer 0 and after each layer,
        computed from the layer output *before* the decoder's final LayerNorm, as officially.
    decoder_features: [B, Q, D] normalized output of the last decoder layer.
    memory: [B, S, D] encoder output.
    spatial_shapes: [L, 2] int64 (H, W) per level; level_start_index: [L] int64.
    valid_ratios: [B, L, 2] (w, h) fraction of each padded map covered by the image.
    padding_mask: [B, S] bool, True on padding tokens.
    selection: the encoder's top-Q selection (None for a detector without one: the `transformers`
        families of `dino_demo.families` fill these fields from their own outputs).
    sampling_locations: [K, B, Q, M, L, P, 2] decoder cross-attention sampling points, (x, y) in
        [0, 1] of the padded feature maps; only when requested.
    attention_weights: [K, B, Q, M, L, P]; only when requested.
    encoder_input: [B, S, D] the encoder's input tokens (flattened projected features, before the
        position embedding), from which any encoder token's attention in any layer can be
        recomputed (`explore.encoder`); only when attention is requested.
    denoising: the denoising queries' outputs, in training with targets only.
    timings: seconds per stage ("backbone", "encoder", "decoder"), when requested.
    """

    logits: torch.Tensor
    boxes: torch.Tensor
    references: torch.Tensor
    decoder_features: torch.Tensor
    memory: torch.Tensor
    spatial_shapes: torch.Tensor
    level_start_index: torch.Tensor
    valid_ratios: torch.Tensor
    padding_mask: torch.Tensor
    selection: EncoderSelection | None
    sampling_locations: torch.Tensor | None = None
    attention_weights: torch.Tensor | None = None
    encoder_input: torch.Tensor | None = None
    denoising: DenoisingOutput | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def pred_logits(self) -> torch.Tensor:
        """[B, Q, C] final class logits."""
        return self.logits[-1]

    @property
    def pred_boxes(self) -> torch.Tensor:
        """[B, Q, 4] final normalized cxcywh boxes."""
        return self.boxes[-1]

    def select_image(self, index: int) -> "DINOOutput":
        """Image `index` of the batch as a batch of one, copied so that it does not keep the whole
        batch's storage alive. The denoising outputs (training only) are dropped."""
        b = slice(index, index + 1)

        def per_layer(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[:, b].clone()

        selection = self.selection
        return DINOOutput(
            logits=per_layer(self.logits), boxes=per_layer(self.boxes), references=per_layer(self.references),
            decoder_features=self.decoder_features[b].clone(), memory=self.memory[b].clone(),
            spatial_shapes=self.spatial_shapes, level_start_index=self.level_start_index,
            valid_ratios=self.valid_ratios[b].clone(), padding_mask=self.padding_mask[b].clone(),
            selection=None if selection is None else EncoderSelection(
                **{name: getattr(selection, name)[b].clone() for name in EncoderSelection.__dataclass_fields__}),
            sampling_locations=per_layer(self.sampling_locations),
            attention_weights=per_layer(self.attention_weights),
            encoder_input=None if self.encoder_input is None else self.encoder_input[b].clone(),
            timings=dict(self.timings))


@dataclass
class Detections:
    """Post-processed detections of one image, best first.

    scores: [N] sigmoid probability; labels: [N] int64 class id; boxes: [N, 4] xyxy in pixels of
    the size passed to post-processing; query_slot: [N] int64 decoder query slot each came from.
    """

    scores: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    query_slot: torch.Tensor

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def above(self, threshold: float) -> "Detections":
        keep = self.scores >= threshold
        return Detections(self.scores[keep], self.labels[keep], self.boxes[keep], self.query_slot[keep])
