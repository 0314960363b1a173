"""A batch's outputs and internals as the arrays of the official parity reference
(DINO_4scale_reference.npz): names and layouts. The command `python -m dino_demo dump` writes them
(`dino_demo.cli.dump`)."""
from __future__ import annotations

import numpy as np
import torch

from ..model.outputs import DINOOutput
from ..model.postprocess import postprocess

MEMORY_SAMPLE_STEP = 25
DECODER_QUERIES_KEPT = 64


def dump_arrays(output: DINOOutput, image_sizes: torch.Tensor, num_select: int) -> dict[str, np.ndarray]:
    """The reference's arrays from one forward pass (run with capture_attention=True)."""
    memory_index = torch.arange(0, output.memory.shape[1], MEMORY_SAMPLE_STEP)
    detections = postprocess(output.pred_logits, output.pred_boxes, image_sizes, num_select)
    arrays = {
        "image_sizes": image_sizes,
        "spatial_shapes": output.spatial_shapes,
        "level_start_index": output.level_start_index,
        "valid_ratios": output.valid_ratios,
        "memory_token_index": memory_index,
        "memory_sample": output.memory[:, memory_index],
        "enc_max_logit": output.selection.max_logit,
        "topk_indices": output.selection.topk_indices,
        "enc_topk_logits": output.selection.logits,
        "enc_topk_boxes": output.selection.boxes,
        "init_box_proposal": output.selection.proposals,
        "references": output.references,
        "hs_last": output.decoder_features,
        "pred_logits": output.pred_logits,
        "pred_boxes": output.pred_boxes,
        "aux_pred_boxes": output.boxes[:-1],
        "aux_pred_logits": output.logits[:-1],
        "dec_sampling_locations": output.sampling_locations[:, :, :DECODER_QUERIES_KEPT],
        "dec_attention_weights": output.attention_weights[:, :, :DECODER_QUERIES_KEPT],
        "post_scores": torch.stack([d.scores for d in detections]),
        "post_labels": torch.stack([d.labels for d in detections]),
        "post_boxes": torch.stack([d.boxes for d in detections]),
    }
    return {k: v.detach().cpu().numpy() for k, v in arrays.items()}
