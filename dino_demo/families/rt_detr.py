"""RT-DETR and RT-DETR v2: a hybrid encoder (standard self-attention on the coarsest level, then
convolutional fusion; not deformable) and a deformable decoder whose queries are the top-scoring
encoder tokens. The decoder returns its class logits and boxes after every layer itself
(`intermediate_logits`, `intermediate_reference_points`)."""
from __future__ import annotations

import torch

from .base import Family, selection_from_topk

ENCODER_NOTE = ("{name}'s encoder is not deformable (standard self-attention on the coarsest level, then "
                "convolutional fusion): there are no encoder sampling points to show")


def predictions(model, outputs, recorder, inputs):
    return outputs.intermediate_logits.transpose(0, 1), outputs.intermediate_reference_points.transpose(0, 1)


def selection(model, outputs, spatial_shapes, level_start_index):
    scores = outputs.enc_outputs_class.max(-1).values
    topk = torch.topk(scores, model.config.num_queries, dim=1)[1]
    anchors, _ = model.model.generate_anchors(tuple(tuple(s) for s in spatial_shapes.tolist()),
                                              device=scores.device, dtype=outputs.enc_outputs_coord_logits.dtype)
    return selection_from_topk(topk, scores, outputs.enc_outputs_class, outputs.enc_outputs_coord_logits,
                               anchors.sigmoid().expand(scores.shape[0], -1, -1), spatial_shapes, level_start_index)


FAMILY = Family(
    name="RT-DETR", model_types=("rt_detr",), model_class="RTDetrForObjectDetection", predictions=predictions,
    selection=selection, unavailable={"encoder": ENCODER_NOTE.format(name="RT-DETR")})
V2_FAMILY = Family(
    name="RT-DETR v2", model_types=("rt_detr_v2",), model_class="RTDetrV2ForObjectDetection",
    predictions=predictions, selection=selection, unavailable={"encoder": ENCODER_NOTE.format(name="RT-DETR v2")})
