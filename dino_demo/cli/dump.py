"""`python -m dino_demo dump`: run a batch and write the model's outputs and internals to .npz,
with the array names and layouts of the official parity reference (`dino_demo.parity.dump`)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from ..io.images import load_image
from ..io.preprocess import batch_images, to_tensor_normalized
from ..parity.dump import dump_arrays
from ..sources.loader import build
from . import model_source

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dino_demo dump", description=__doc__)
    parser.add_argument("--variant", help="model variant (default: recognized from the checkpoint)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint file or http(s) URL (official, detrex or MMDetection layout), shipped or untrained:VARIANT")
    source.add_argument("--model", metavar="ZOO_ID", help="a model zoo entry")
    parser.add_argument("--images", nargs="+", required=True, help="images, fed at their own size")
    parser.add_argument("--out", required=True, help="output .npz")
    parser.add_argument("--topk-indices", help="npz whose `topk_indices` replace the encoder's selection")
    parser.add_argument("--device", default="cpu", help="PyTorch device (default cpu)")
    args = parser.parse_args(argv)

    model, cfg = build(model_source(args), variant=args.variant, device=args.device)
    pictures = [load_image(path).array for path in args.images]
    images, masks = batch_images([to_tensor_normalized(p) for p in pictures])
    sizes = torch.tensor([p.shape[:2] for p in pictures])
    topk = None
    if args.topk_indices:
        with np.load(args.topk_indices) as reference:
            if "topk_indices" not in reference:
                raise ValueError(f"{args.topk_indices} has no array named topk_indices")
            topk = torch.from_numpy(reference["topk_indices"]).long()
    with torch.inference_mode():
        output = model(images.to(args.device), masks.to(args.device), topk_indices=topk, capture_attention=True)
    arrays = dump_arrays(output, sizes.to(args.device), cfg.num_select)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **arrays)
    log.info("wrote %d arrays to %s", len(arrays), args.out)
    return 0
