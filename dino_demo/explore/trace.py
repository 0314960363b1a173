"""DINO's forward pass, walked: every stage of one image's run with its real shapes and a small
preview, under the names of the official code (so that the listing reads beside
`models/dino/dino.py` and `deformable_transformer.py`).

`traced_run` is `runtime.dino.run` with forward hooks on the model's stages (backbone, input
projections, encoder, two-stage heads, decoder) for the duration of the call: the same single
inference path, nothing recomputed. `trace_document` makes the JSON that `detect --trace` writes.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from ..model.transformer import Encoder
from ..runtime.dino import run
from ..runtime.result import InferenceResult

SCHEMA = "dino-explorer/trace/1"
PREVIEW_VALUES = 6


@dataclass(frozen=True)
class TraceStage:
    """One tensor of the forward pass: `name` as in the official code, its `stage` (backbone,
    encoder, query selection, decoder, heads, post-processing), `shape`, `dtype`, what it is
    (`meaning`) and a `preview`: its first values (flattened) and, for numbers, min / max / mean;
    for a bool mask, the fraction of True."""

    name: str
    stage: str
    shape: tuple[int, ...]
    dtype: str
    meaning: str
    preview: dict

    def as_dict(self) -> dict:
        return {"name": self.name, "stage": self.stage, "shape": list(self.shape), "dtype": self.dtype,
                "meaning": self.meaning, "preview": self.preview}


def preview(t: torch.Tensor) -> dict:
    """First values and summary of a tensor (JSON-ready)."""
    t = t.detach().cpu()
    flat = t.reshape(-1)
    if t.dtype == torch.bool:
        return {"true_fraction": round(float(flat.float().mean()) if flat.numel() else 0.0, 4),
                "first": [bool(v) for v in flat[:PREVIEW_VALUES]]}
    if not t.is_floating_point():
        return {"first": [int(v) for v in flat[:PREVIEW_VALUES]],
                **({"min": int(flat.min()), "max": int(flat.max())} if flat.numel() else {})}
    values = flat.double()
    finite = values[torch.isfinite(values)]
    summary = {"min": float(finite.min()), "max": float(finite.max()), "mean": float(finite.mean())} if len(finite) else {}
    return {"first": [_number(v) for v in values[:PREVIEW_VALUES].tolist()],
            **{k: _number(v) for k, v in summary.items()},
            **({"non_finite": int((~torch.isfinite(values)).sum())} if len(finite) < len(values) else {})}


def _number(v: float):
    return float(f"{v:.6g}") if np.isfinite(v) else str(v)


class _Recorder:
    """Forward hooks that keep what the stages received and returned."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.seen: dict[str, object] = {}

    @contextlib.contextmanager
    def hooked(self):
        transformer = self.model.transformer
        hooks = [
            self.model.backbone.register_forward_hook(self._keep("backbone", output=True)),
            transformer.encoder.register_forward_hook(self._keep("encoder", inputs=True, output=True)),
            transformer.enc_output_norm.register_forward_hook(self._keep("output_memory", output=True)),
            transformer.enc_out_class_embed.register_forward_hook(self._keep("enc_outputs_class", output=True)),
            transformer.decoder.register_forward_hook(self._keep("decoder", inputs=True, output=True)),
        ]
        hooks += [proj.register_forward_hook(self._keep(f"srcs.{i}", output=True))
                  for i, proj in enumerate(self.model.input_proj)]
        try:
            yield self
        finally:
            for hook in hooks:
                hook.remove()

    def _keep(self, name: str, inputs: bool = False, output: bool = False):
        def hook(module, args, result):
            self.seen[name] = (args if inputs else None, result if output else None)
        return hook


def traced_run(model: torch.nn.Module, cfg, image: np.ndarray, **options) -> tuple[InferenceResult, list[TraceStage]]:
    """`runtime.dino.run(model, cfg, image, **options)` (with internals) and its trace."""
    recorder = _Recorder(model)
    with recorder.hooked():
        result = run(model, cfg, image, internals=True, **options)
    return result, build_trace(recorder.seen, result, cfg)


def build_trace(seen: dict, result: InferenceResult, cfg) -> list[TraceStage]:
    stages: list[TraceStage] = []

    def add(name: str, stage: str, t: torch.Tensor, meaning: str) -> None:
        stages.append(TraceStage(name, stage, tuple(int(v) for v in t.shape), str(t.dtype).replace("torch.", ""),
                                 meaning, preview(t)))

    out = result.internals
    features, positions = seen["backbone"][1]
    (flat,), memory = seen["encoder"]
    for i, (x, mask) in enumerate(features):
        add(f"features[{i}].tensors", "backbone", x, f"backbone stage {cfg.backbone_levels[i] + 1} output")
        add(f"features[{i}].mask", "backbone", mask, "padding mask of that stage (True = padding)")
    for i, p in enumerate(positions):
        add(f"poss[{i}]", "backbone", p, "sine position encoding of that stage")
    for i in range(len(out.spatial_shapes)):
        src = seen[f"srcs.{i}"][1]
        how = "1x1 conv + GroupNorm of the backbone stage" if i < len(features) else \
            "extra level: 3x3 stride-2 conv + GroupNorm"
        add(f"srcs[{i}]", "input projection", src, how)
    add("src_flatten", "encoder", flat.tokens, "all levels' tokens, flattened and concatenated")
    add("mask_flatten", "encoder", flat.padding_mask, "padding mask of every token (True = padding)")
    add("lvl_pos_embed_flatten", "encoder", flat.pos, "position encoding + level embedding of every token")
    add("spatial_shapes", "encoder", flat.spatial_shapes, "(H, W) of each level")
    add("level_start_index", "encoder", flat.level_start_index, "index of each level's first token")
    add("valid_ratios", "encoder", flat.valid_ratios, "(w, h) share of each padded level holding the image")
    add("reference_points", "encoder", Encoder.reference_points(flat),
        "encoder reference points: each token's cell centre, in every level's padded map")
    add("memory", "encoder", memory, "encoder output")
    add("output_memory", "query selection", seen["output_memory"][1],
        "enc_output + LayerNorm of the memory (invalid proposals zeroed)")
    add("enc_outputs_class_unselected", "query selection", seen["enc_outputs_class"][1],
        "encoder class logits of every token")
    selection = out.selection
    add("topk_proposals", "query selection", selection.topk_indices, "the top-k tokens by best class logit")
    add("init_box_proposal", "query selection", selection.proposals,
        "their fixed proposals: cell centre, 0.05 * 2**level wide (sigmoid)")
    add("refpoint_embed_undetach.sigmoid()", "query selection", selection.boxes,
        "the encoder box head's boxes of the picked tokens: the decoder's first references")
    (queries, anchors, _, _, attn_mask, _), decoded = seen["decoder"]
    add("tgt", "query selection", queries, "content queries: tgt_embed, learned (mixed query selection)")
    add("refpoint_embed", "query selection", anchors, "the first references, detached, inverse sigmoid")
    if attn_mask is not None:
        add("attn_mask", "decoder", attn_mask, "self-attention mask (True = may not attend)")
    add("hs", "decoder", decoded.hidden, "normalized output of every decoder layer")
    add("references", "decoder", decoded.references, "reference boxes before layer 1 and after each layer (sigmoid)")
    add("outputs_class", "heads", decoded.logits, "class logits of every layer")
    add("outputs_coord_list", "heads", decoded.boxes, "boxes of every layer (look forward twice), cxcywh")
    add("pred_logits", "heads", out.pred_logits, "final class logits")
    add("pred_boxes", "heads", out.pred_boxes, "final boxes, normalized cxcywh")
    detections = result.detections
    add("scores", "post-processing", detections.scores, f"top {cfg.num_select} (query, class) probabilities")
    add("labels", "post-processing", detections.labels, "their class ids")
    add("boxes", "post-processing", detections.boxes, "their boxes, xyxy in the image's pixels")
    return stages


def trace_document(result: InferenceResult, stages: list[TraceStage], *, source: str = "") -> dict:
    """The JSON `detect --trace` writes: schema, model, image sizes and every stage."""
    return {"schema": SCHEMA, "model": {"id": result.model_id, "variant": result.variant},
            "image": {"source": source, "height": result.size[0], "width": result.size[1],
                      "input_height": result.input_size[0], "input_width": result.input_size[1]},
            "stages": [s.as_dict() for s in stages]}
