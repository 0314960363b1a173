"""A denoising run (`explore.denoising.DenoisingRun`) as one `.npz` file that numpy alone reads,
with a JSON `index` (schema "dino-explorer/denoising/1") like the internals file's
(`io.indexed_npz`). `python -m dino_demo denoise` writes it as DIR/denoising.npz; the page offers
it as a download::

    import json, numpy as np
    with np.load("denoising.npz") as f:
        index = json.loads(str(f["index"]))
        boxes = f["dn_pred_boxes"]          # [K, pad, 4]

Boxes are normalized (cx, cy, w, h) by the image's own width and height, as the official targets.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .indexed_npz import array_entries, read_indexed, write_indexed

SCHEMA = "dino-explorer/denoising/1"

# name: (meaning, shape legend) for every array of the file.
MEANINGS: dict[str, tuple[str, str]] = {
    "image_size": ("height, width of the image the boxes were given for (pixels)", "[2]"),
    "input_image": ("the normalized model input ((x / 255 - mean) / std, resized)", "[3, h, w]"),
    "class_names": ("name of each class id", "[C]"),
    "gt_labels": ("ground-truth class ids (the model's numbering)", "[n]"),
    "gt_boxes": ("ground-truth boxes, normalized cxcywh", "[n, 4]"),
    "dn_labels": ("noised class ids fed to the label embedding; -1 on padding slots", "[pad]"),
    "dn_boxes": ("noised anchors, normalized cxcywh, before the inverse sigmoid; 0.5 on padding slots", "[pad, 4]"),
    "dn_positive": ("True for positive slots (noise under half the box size), False for negatives", "[pad]"),
    "dn_target": ("index of the ground-truth box each slot copies; -1 on padding slots", "[pad]"),
    "dn_group": ("denoising group of each slot", "[pad]"),
    "attn_mask": ("decoder self-attention mask, denoising slots first; True = may not attend", "[pad + Q, pad + Q]"),
    "dn_references": ("reference box before decoder layer 1 and after each layer (detached), normalized cxcywh",
                      "[K + 1, pad, 4]"),
    "dn_pred_boxes": ("box predicted by each decoder layer for each denoising slot, normalized cxcywh",
                      "[K, pad, 4]"),
    "dn_pred_logits": ("class logits of each decoder layer for each denoising slot", "[K, pad, C]"),
    "loss_class": ("per-slot focal loss summed over classes (NaN on padding)", "[K, pad]"),
    "loss_bbox": ("per-slot L1 box loss (positives only, NaN otherwise)", "[K, pad]"),
    "loss_giou": ("per-slot 1 - GIoU (positives only, NaN otherwise)", "[K, pad]"),
}


def denoising_arrays(run) -> dict[str, np.ndarray]:
    """The arrays of a DenoisingRun by the names of MEANINGS."""
    arrays = {name: np.asarray(getattr(run, name)) for name in MEANINGS
              if name not in ("image_size", "class_names")}
    arrays["image_size"] = np.array(run.image_size, dtype=np.int64)
    arrays["class_names"] = np.array(run.class_names, dtype=np.str_)
    return {name: arrays[name] for name in MEANINGS}


def denoising_index(run, arrays: dict[str, np.ndarray], *, source: str = "") -> dict:
    return {
        "schema": SCHEMA,
        "model": {"id": run.model_id, "variant": run.variant},
        "image": {"source": source, "height": run.image_size[0], "width": run.image_size[1]},
        "denoising": {"seed": run.seed, "dn_number": run.dn_number, "label_noise_ratio": run.label_noise_ratio,
                      "box_noise_scale": run.box_noise_scale, "num_groups": run.num_groups,
                      "max_targets": run.max_targets, "pad_size": run.pad_size},
        "sizes": {"n boxes": int(len(run.gt_labels)), "pad denoising slots": run.pad_size,
                  "Q matching queries": run.num_queries, "K decoder layers": run.num_layers,
                  "C classes": int(run.dn_pred_logits.shape[-1])},
        "arrays": array_entries(arrays, MEANINGS),
    }


def write_denoising(run, path: str | Path, *, source: str = "") -> Path:
    """Write `run` to `path` (.npz) and return the path."""
    arrays = denoising_arrays(run)
    return write_indexed(path, denoising_index(run, arrays, source=source), arrays)


def read_denoising(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(index, arrays) of a file `write_denoising` wrote; ValueError for anything else."""
    return read_indexed(path, SCHEMA, "denoising")
