"""D-FINE: RT-DETR's hybrid encoder and query selection, and a decoder that refines box edges as
distributions (fine-grained distribution refinement). In inference the decoder scores only its
last layer; the class logits of earlier layers are its own per-layer heads (`class_embed[l]`, as
in training) on each layer's output, and each layer's box is the reference the next layer was
given (captured), the last the final box. Points per level may differ (`decoder_n_points` as a
list)."""
from __future__ import annotations

import torch

from .base import Family
from .rt_detr import ENCODER_NOTE, selection


def predictions(model, outputs, recorder, inputs):
    hidden = outputs.intermediate_hidden_states                            # [K, B, Q, D]
    heads = model.model.decoder.class_embed
    logits = [heads[layer](hidden[layer]) for layer in range(hidden.shape[0] - 1)] + [outputs.logits]
    references = [reference[:, :, 0] for reference in recorder.decoder_references[1:]]
    return torch.stack(logits), torch.stack(references + [outputs.pred_boxes])


FAMILY = Family(
    name="D-FINE", model_types=("d_fine",), model_class="DFineForObjectDetection", predictions=predictions,
    selection=selection, unavailable={"encoder": ENCODER_NOTE.format(name="D-FINE")})
