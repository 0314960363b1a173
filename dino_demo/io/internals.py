"""A result's internals as one `.npz` file that numpy alone reads: detections, the encoder's
top-k selection, the decoder's references, boxes and class logits after every layer, and its
sampling locations and attention weights for every query. The app offers it as a download,
`python -m dino_demo detect --save-internals` writes one per image.

The file holds an `index` entry, a JSON text (schema "dino-explorer/internals/1") naming every
other array with its shape, dtype and meaning, plus the model and image it came from::

    import json, numpy as np
    with np.load("photo.internals.npz") as f:          # allow_pickle stays False
        index = json.loads(str(f["index"]))
        locations = f["decoder_sampling_locations"]    # [K, Q, M, L, P, 2]

Arrays are as the model computed them (batch dimension dropped, dtype kept); boxes are
normalized (cx, cy, w, h) of the image unless the name says `xyxy` (then original pixels).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .indexed_npz import array_entries, read_indexed, write_indexed

SCHEMA = "dino-explorer/internals/1"

# name: (meaning, shape legend) for every array of the file.
MEANINGS: dict[str, tuple[str, str]] = {
    "image_size": ("height, width of the image the boxes refer to (original pixels)", "[2]"),
    "input_size": ("height, width the image was resized to for the model", "[2]"),
    "padded_size": ("height, width of the padded batch the model ran on", "[2]"),
    "class_names": ("name of each class id", "[C]"),
    "detection_scores": ("post-processed top-k (query, class) pairs, best first: probability", "[N]"),
    "detection_labels": ("class id of each detection", "[N]"),
    "detection_boxes_xyxy": ("box of each detection, xyxy original pixels", "[N, 4]"),
    "detection_query_slots": ("decoder query slot each detection came from", "[N]"),
    "spatial_shapes": ("rows, cols of each feature level's padded grid", "[L, 2]"),
    "level_start_index": ("index of each level's first token in the flattened memory", "[L]"),
    "valid_ratios": ("(w, h) fraction of each level's padded grid covered by the image", "[L, 2]"),
    "encoder_topk_indices": ("encoder token that seeded each decoder query slot", "[Q]"),
    "encoder_levels": ("feature level of that token", "[Q]"),
    "encoder_cells": ("(row, col) of that token in its level's grid", "[Q, 2]"),
    "encoder_proposals": ("the token's fixed proposal box before the encoder box head, normalized cxcywh", "[Q, 4]"),
    "encoder_boxes": ("the proposal after the encoder box head: the decoder's first reference, normalized cxcywh",
                      "[Q, 4]"),
    "encoder_logits": ("encoder class logits of each selected token", "[Q, C]"),
    "decoder_references": ("reference box before decoder layer 1 and after each layer, normalized cxcywh",
                           "[K + 1, Q, 4]"),
    "decoder_boxes": ("predicted box after each decoder layer (the last is the final box), normalized cxcywh",
                      "[K, Q, 4]"),
    "decoder_logits": ("class logits after each decoder layer", "[K, Q, C]"),
    "decoder_sampling_locations": ("cross-attention sampling points, (x, y) in [0, 1] of each level's padded grid",
                                   "[K, Q, M, L, P, 2]"),
    "decoder_attention_weights": ("cross-attention weights (softmax over L * P per head)", "[K, Q, M, L, P]"),
}
# The arrays a result of a transformers family (dino_demo.families) adds; the encoder_* ones above
# are left out for families without two-stage query selection.
FAMILY_MEANINGS: dict[str, tuple[str, str]] = {
    "decoder_points_per_level": ("sampling points of each level; where they differ, the [.., L, P, ..] arrays are "
                                 "padded to the most with NaN locations and zero weights", "[L]"),
    "decoder_point_levels": ("level of each point in the decoder's own flat point order", "[sum(P_l)]"),
    "decoder_sampling_locations_flat": ("the sampling points in the decoder's own flat order (no padding)",
                                        "[K, Q, M, sum(P_l), 2]"),
    "decoder_attention_weights_flat": ("the weights in the decoder's own flat order", "[K, Q, M, sum(P_l)]"),
    "text_tokens": ("the prompt's tokens as the tokenizer split them", "[T]"),
    "decoder_token_logits": ("logits of every query on every prompt token after each layer (class logits are "
                             "per phrase: the max over its tokens)", "[K, Q, T]"),
}


def internals_arrays(result) -> dict[str, np.ndarray]:
    """The arrays of a `runtime.InferenceResult` (run with internals), by the names of
    MEANINGS (and FAMILY_MEANINGS)."""
    out = result.internals
    selection = out.selection
    detections = result.detections

    def first(t: torch.Tensor) -> np.ndarray:
        return t[0].detach().cpu().numpy()

    def per_layer(t: torch.Tensor) -> np.ndarray:
        return t[:, 0].detach().cpu().numpy()

    arrays = {
        "image_size": np.array(result.size, dtype=np.int64),
        "input_size": np.array(result.input_size, dtype=np.int64),
        "padded_size": np.array(result.padded_size, dtype=np.int64),
        "class_names": np.array([result.label(c) for c in range(out.logits.shape[-1])], dtype=np.str_),
        "detection_scores": detections.scores.numpy(),
        "detection_labels": detections.labels.numpy(),
        "detection_boxes_xyxy": detections.boxes.numpy(),
        "detection_query_slots": detections.query_slot.numpy(),
        "spatial_shapes": out.spatial_shapes.cpu().numpy(),
        "level_start_index": out.level_start_index.cpu().numpy(),
        "valid_ratios": first(out.valid_ratios),
        "decoder_references": per_layer(out.references),
        "decoder_boxes": per_layer(out.boxes),
        "decoder_logits": per_layer(out.logits),
        "decoder_sampling_locations": per_layer(out.sampling_locations),
        "decoder_attention_weights": per_layer(out.attention_weights),
    }
    if selection is not None:  # a family without two-stage query selection has none
        arrays.update({
            "encoder_topk_indices": first(selection.topk_indices),
            "encoder_levels": first(selection.levels),
            "encoder_cells": first(selection.cells),
            "encoder_proposals": first(selection.proposals),
            "encoder_boxes": first(selection.boxes),
            "encoder_logits": first(selection.logits),
        })
    arrays.update(result.extra_arrays(arrays))
    return arrays


def internals_index(result, arrays: dict[str, np.ndarray], *, source: str = "") -> dict:
    """The JSON index of `arrays`: schema, model, image and, per array, shape, dtype and meaning."""
    m, l, p = result.attention_shape
    meanings = MEANINGS | FAMILY_MEANINGS
    model = {"id": result.model_id, "variant": result.variant, **result.model_fields()}
    return {
        "schema": SCHEMA,
        "model": model,
        "image": {"source": source, "height": result.size[0], "width": result.size[1]},
        "sizes": {"K decoder layers": result.num_layers, "Q queries": result.num_queries, "M heads": m,
                  "L levels": l, "P points": p, "N detections": len(result.detections),
                  "C classes": int(arrays["decoder_logits"].shape[-1])},
        "arrays": array_entries(arrays, meanings),
    }


def write_internals(result, path: str | Path, *, source: str = "") -> Path:
    """Write `result`'s internals to `path` (.npz, uncompressed) and return the path."""
    arrays = internals_arrays(result)
    return write_indexed(path, internals_index(result, arrays, source=source), arrays)


def read_internals(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(index, arrays) of a file `write_internals` wrote; ValueError for anything else."""
    return read_indexed(path, SCHEMA, "internals")
