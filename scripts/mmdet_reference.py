"""MMDetection's DINO-4scale on a real photo: the reference that tests/sources/test_mmdet_parity.py compares
this project against after converting MMDetection's checkpoint.

    python scripts/mmdet_reference.py                      # writes tests/fixtures/mmdet_dino/
    python scripts/mmdet_reference.py --size full --compare --no-write   # full-size figures

Run from the repository root with the project installed (`pip install -e .`). Needs mmdet 3.3,
mmengine and mmcv-lite 2.1 (`pip install mmdet==3.3.0 mmengine mmcv-lite==2.1.0`;
the compiled `mmcv._ext` that mmcv-lite lacks is replaced by a stand-in, see layout_manifests.py:
on CPU tensors MMDetection's DINO runs mmcv's pure-PyTorch deformable attention).

The model is MMDetection's own configs/dino/dino-4scale_r50_8xb2-12e_coco.py, its weights the
parity kit's deterministic recipe (dino_demo.parity.recipe) over MMDetection's key names with
the salt below, saved in MMDetection's checkpoint format (mmengine's save_checkpoint: `meta` with
the config text and the dataset's class names, `state_dict`). The image is examples/chelsea.png,
at its own size (`--size native`, the committed reference) or resized by the official rule to
800 px (`--size full`), normalized by this project's preprocessing; the same tensor goes into
MMDetection's backbone (its data preprocessor, which does the same arithmetic in another order,
is skipped so that only the models are compared).

Written: reference.npz (encoder output at every 8th token, every token's best encoder class
logit, MMDetection's top-900 token indices, the last decoder layer's logits [1, 900, 80] and
boxes [1, 900, 4]) and meta.json (the checkpoint's `meta`, with the config text MMDetection
stores).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from layout_manifests import ROOT, mmdet_model  # this script's folder is on sys.path when it runs

from dino_demo.io.images import load_image
from dino_demo.io.preprocess import prepare_batch, to_tensor_normalized
from dino_demo.model.config import get_config
from dino_demo.parity.recipe import recipe_state_dict

CONFIG = "dino-4scale_r50_8xb2-12e_coco.py"
SALT = "dino-explorer-mmdet-v1"
IMAGE = ROOT / "examples" / "chelsea.png"
MEMORY_STEP = 8
OUT = ROOT / "tests" / "fixtures" / "mmdet_dino"


def input_batch(size: str) -> torch.Tensor:
    """[1, 3, H, W] normalized chelsea.png, unpadded."""
    array = load_image(IMAGE).array
    if size == "native":
        return to_tensor_normalized(array)[None]
    return prepare_batch([array], get_config("dino-4scale-r50")).images


@torch.no_grad()
def mmdet_outputs(model, images: torch.Tensor) -> dict[str, np.ndarray]:
    """MMDetection's forward, stage by stage, as DINO.forward_transformer and DINOHead run it."""
    from mmdet.structures import DetDataSample

    h, w = images.shape[-2:]
    sample = DetDataSample(metainfo={"batch_input_shape": (h, w), "img_shape": (h, w), "ori_shape": (h, w)})
    feats = model.extract_feat(images)
    encoder_in, decoder_in = model.pre_transformer(feats, [sample])
    encoder_out = model.forward_encoder(**encoder_in)
    memory = encoder_out["memory"]
    # pre_decoder's own selection, recomputed to keep its indices (pre_decoder does not return them).
    output_memory, _ = model.gen_encoder_output_proposals(memory, encoder_out["memory_mask"], encoder_out["spatial_shapes"])
    enc_class = model.bbox_head.cls_branches[model.decoder.num_layers](output_memory)
    topk = torch.topk(enc_class.max(-1)[0], k=model.num_queries, dim=1)[1]
    decoder_extra, _ = model.pre_decoder(**encoder_out, batch_data_samples=[sample])
    decoder_in.update(decoder_extra)
    decoder_out = model.forward_decoder(**decoder_in)
    logits, boxes = model.bbox_head(decoder_out["hidden_states"], decoder_out["references"])
    index = torch.arange(0, memory.shape[1], MEMORY_STEP)
    arrays = {"image_hw": torch.tensor([h, w]), "memory_token_index": index, "memory_sample": memory[:, index],
              "enc_max_logit": enc_class.max(-1)[0], "topk_indices": topk,
              "pred_logits": logits[-1], "pred_boxes": boxes[-1]}
    return {k: v.numpy() for k, v in arrays.items()}


def checkpoint_meta(model_cfg_text: str) -> dict:
    import mmdet
    import mmengine
    from mmdet.datasets import CocoDataset

    return {"mmengine_version": mmengine.__version__, "mmdet_version": mmdet.__version__, "epoch": 12,
            "cfg": model_cfg_text, "dataset_meta": {"classes": list(CocoDataset.METAINFO["classes"])}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("native", "full"), default="native")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--no-write", action="store_true", help="do not write the reference files")
    parser.add_argument("--compare", action="store_true", help="also convert the checkpoint, run this project's "
                        "model on the same input and print the largest differences")
    args = parser.parse_args(argv)

    import mmdet
    from mmengine.config import Config
    from mmengine.runner.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = mmdet_model(CONFIG).eval()
    weights = recipe_state_dict(model.state_dict(), SALT)
    model.load_state_dict(weights, strict=True)
    cfg_text = Config.fromfile(str(Path(mmdet.__file__).parent / ".mim" / "configs" / "dino" / CONFIG)).pretty_text
    meta = checkpoint_meta(cfg_text)
    images = input_batch(args.size)
    reference = mmdet_outputs(model, images)
    scores = np.sort(reference["enc_max_logit"][0])[::-1]
    print(f"input {tuple(images.shape)}; smallest gap among the top 901 encoder scores: {(-np.diff(scores[:901])).min():.2e}")
    if not args.no_write:
        args.out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.out / "reference.npz", **reference)
        (args.out / "meta.json").write_text(json.dumps({"meta": meta, "salt": SALT, "config": CONFIG,
                                                        "image": IMAGE.name, "size": args.size,
                                                        "memory_step": MEMORY_STEP}, indent=1))
        print(f"wrote {args.out}/reference.npz and meta.json")
    if args.compare:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "dino-4scale_r50_mmdet.pth"
            save_checkpoint({"meta": meta, "state_dict": weights}, str(path))
            compare(path, images, reference)
    return 0


@torch.no_grad()
def compare(checkpoint: Path, images: torch.Tensor, reference: dict[str, np.ndarray]) -> None:
    from dino_demo.sources.checkpoint import load_model
    from dino_demo.sources.layouts import COCO80_IDS

    model, cfg = load_model(checkpoint)
    print(f"converted: {cfg.name}, pe_temperature={cfg.pe_temperature}, pe_offset={cfg.pe_offset}, "
          f"shared_heads={cfg.shared_heads}, box_eps={cfg.box_eps}")
    masks = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.bool)
    free = model(images, masks)
    forced = model(images, masks, topk_indices=torch.from_numpy(reference["topk_indices"]))
    ids = list(COCO80_IDS)

    def diff(a, b):
        return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())

    ours_topk, theirs_topk = free.selection.topk_indices[0].numpy(), reference["topk_indices"][0]
    print(f"memory (every {MEMORY_STEP}th token) max |diff|: "
          f"{diff(free.memory[:, reference['memory_token_index']], reference['memory_sample']):.2e}")
    print(f"encoder best-class logit max |diff|: {diff(free.selection.max_logit, reference['enc_max_logit']):.2e}")
    print(f"top-900: same set {len(set(ours_topk) & set(theirs_topk))}/900, same slot {(ours_topk == theirs_topk).mean():.4f}")
    print(f"teacher-forced final logits max |diff|: {diff(forced.pred_logits[..., ids], reference['pred_logits']):.2e}")
    print(f"teacher-forced final boxes max |diff|: {diff(forced.pred_boxes, reference['pred_boxes']):.2e}")
    model.transformer.decoder.box_eps = 1e-3  # what the official heads would compute
    official_eps = model(images, masks, topk_indices=torch.from_numpy(reference["topk_indices"]))
    print(f"  (with the official inverse-sigmoid eps 1e-3 instead of MMDetection's 1e-5: "
          f"{diff(official_eps.pred_boxes, reference['pred_boxes']):.2e})")


if __name__ == "__main__":
    sys.exit(main())
