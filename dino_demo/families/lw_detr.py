"""LW-DETR and RF-DETR: a ViT (RF-DETR: DINOv2) backbone and a projector feed a deformable
decoder directly (no encoder). Every decoder layer reads around the same reference boxes (the
two-stage proposals); its class logits and boxes are the shared heads on the layer's output, as
the model computes them in training (in inference it computes the last layer's only)."""
from __future__ import annotations

import torch

from .base import Family

NO_ENCODER = ("{name} has no encoder: a ViT backbone and a projector feed the decoder, so there is no encoder "
              "token to pick")
NO_TOKENS = ("{name} keeps its two-stage proposals per query group without the tokens they came from: "
             "the proposals view needs those")


def predictions(model, outputs, recorder, inputs):
    import importlib

    refine = importlib.import_module(type(model).__module__).refine_bboxes
    hidden = outputs.intermediate_hidden_states                            # [K, B, Q, D]
    reference = outputs.intermediate_reference_points[-1]
    logits = torch.stack([model.class_embed(h) for h in hidden])
    boxes = torch.stack([refine(reference, model.bbox_embed(h)) for h in hidden])
    return logits, boxes


def selection(model, outputs, spatial_shapes, level_start_index):
    return None


def _family(name: str, model_type: str, model_class: str, top_k: int | None) -> Family:
    return Family(name=name, model_types=(model_type,), model_class=model_class, predictions=predictions,
                  selection=selection, refines=lambda config: False, top_k=top_k,
                  unavailable={"encoder": NO_ENCODER.format(name=name), "proposals": NO_TOKENS.format(name=name)})


# top_k: as their processors keep (LW-DETR's is Deformable DETR's, 100; RF-DETR's one per query)
FAMILY = _family("LW-DETR", "lw_detr", "LwDetrForObjectDetection", 100)
RF_FAMILY = _family("RF-DETR", "rf_detr", "RfDetrForObjectDetection", None)
