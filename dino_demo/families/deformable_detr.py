"""Deformable DETR (`SenseTime/deformable-detr`, with box refinement and two-stage variants).

Per decoder layer the head of `DeformableDetrForObjectDetection` (class_embed[l], bbox_embed[l])
gives class logits and boxes, exactly as its forward computes them; two-stage models select their
queries from the encoder's per-token class-0 score.
"""
from __future__ import annotations

import torch

from .base import Family, refined_boxes, selection_from_topk


def predictions(model, outputs, recorder, inputs):
    hidden = outputs.intermediate_hidden_states                           # [B, K, Q, D]
    references = [outputs.init_reference_points] + list(outputs.intermediate_reference_points.unbind(1))[:-1]
    logits, boxes = [], []
    for layer in range(hidden.shape[1]):
        logits.append(model.class_embed[layer](hidden[:, layer]))
        boxes.append(refined_boxes(model.bbox_embed[layer](hidden[:, layer]), references[layer]))
    return torch.stack(logits), torch.stack(boxes)


def selection(model, outputs, spatial_shapes, level_start_index):
    if not model.config.two_stage:
        return None
    scores = outputs.enc_outputs_class[..., 0]
    topk = torch.topk(scores, model.config.two_stage_num_proposals, dim=1)[1]
    memory = outputs.encoder_last_hidden_state
    mask = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)
    _, proposals = model.model.gen_encoder_output_proposals(memory, ~mask, [tuple(s) for s in spatial_shapes.tolist()])
    return selection_from_topk(topk, scores, outputs.enc_outputs_class, outputs.enc_outputs_coord_logits,
                               proposals.sigmoid(), spatial_shapes, level_start_index)


FAMILY = Family(
    name="Deformable DETR", model_types=("deformable_detr",), model_class="DeformableDetrForObjectDetection",
    predictions=predictions, selection=selection, deformable_encoder=True, top_k=100,
    refines=lambda config: bool(config.with_box_refine), two_stage=lambda config: bool(config.two_stage))
