"""`python -m dino_demo dump`: run a batch and write the model's outputs and internals to .npz,
with the array names and layouts of the official parity reference (DINO_4scale_reference.npz)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from ..sources import zoo
from ..sources.checkpoint import load_model
from ..io.images import load_image
from ..io.preprocess import batch_images, to_tensor_normalized
from ..model.outputs import DINOOutput
from ..model.postprocess import postprocess

log = logging.getLogger(__name__)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dino_demo dump", description=__doc__)
    parser.add_argument("--variant", help="model variant (default: recognized from the checkpoint)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint file or http(s) URL (official, detrex or MMDetection layout)")
    source.add_argument("--model", metavar="ZOO_ID", help="a model zoo entry")
    parser.add_argument("--images", nargs="+", required=True, help="images, fed at their own size")
    parser.add_argument("--out", required=True, help="output .npz")
    parser.add_argument("--topk-indices", help="npz whose `topk_indices` replace the encoder's selection")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    checkpoint = zoo.get(args.model).source_id if args.model else args.checkpoint
    model, cfg = load_model(checkpoint, variant=args.variant, device=args.device)
    pictures = [load_image(path).array for path in args.images]
    images, masks = batch_images([to_tensor_normalized(p) for p in pictures])
    sizes = torch.tensor([p.shape[:2] for p in pictures])
    topk = None
    if args.topk_indices:
        with np.load(args.topk_indices) as reference:
            if "topk_indices" not in reference:
                raise SystemExit(f"{args.topk_indices} has no array named topk_indices")
            topk = torch.from_numpy(reference["topk_indices"]).long()
    with torch.inference_mode():
        output = model(images.to(args.device), masks.to(args.device), topk_indices=topk, capture_attention=True)
    arrays = dump_arrays(output, sizes.to(args.device), cfg.num_select)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **arrays)
    log.info("wrote %d arrays to %s", len(arrays), args.out)
    return 0
