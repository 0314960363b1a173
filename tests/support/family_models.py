"""Tiny `transformers` detectors of every family, built from their configs with seeded random
weights and written with `save_pretrained` (model, image processor, and for Grounding DINO a
tokenizer made from a small vocabulary), for offline tests; the module-scoped fixtures `folders` (every
family saved once per test module) and `image` (a seeded random 48 x 80 RGB uint8 array) for the test
modules that import them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as T

VOCAB = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", "cat", "dog", "remote", "control", "a", "red",
         "ball", "the", "couch", "person", "car")
LABELS = {0: "cat", 1: "dog", 2: "remote"}


def _resnet() -> T.ResNetConfig:
    return T.ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
                          out_features=["stage2", "stage3", "stage4"])


def _detr_backbone() -> dict:
    return dict(backbone_config=_resnet(), use_timm_backbone=False, backbone=None, use_pretrained_backbone=False)


def _rt_backbone() -> T.RTDetrResNetConfig:
    return T.RTDetrResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
                                out_features=["stage2", "stage3", "stage4"], layer_type="basic")


def _rt(cls, **extra):
    return cls(backbone_config=_rt_backbone(), encoder_in_channels=[16, 16, 16], encoder_hidden_dim=32, d_model=32,
               encoder_ffn_dim=32, encoder_attention_heads=2, decoder_in_channels=[32, 32, 32], decoder_ffn_dim=32,
               decoder_layers=2, decoder_attention_heads=2, num_queries=10, num_denoising=0, id2label=LABELS,
               **extra)


def _hgnet() -> T.HGNetV2Config:
    return T.HGNetV2Config(embedding_size=8, hidden_sizes=[16, 16, 16, 16], depths=[1, 1, 1, 1],
                           stem_channels=[3, 8, 8],
                           stage_in_channels=[8, 16, 16, 16], stage_mid_channels=[8, 8, 8, 8],
                           stage_out_channels=[16, 16, 16, 16], stage_num_blocks=[1, 1, 1, 1],
                           stage_downsample=[False, True, True, True], stage_light_block=[False, False, True, True],
                           stage_kernel_size=[3, 3, 5, 5], stage_numb_of_layers=[1, 1, 1, 1],
                           out_features=["stage2", "stage3", "stage4"])


def _lw(cls, backbone_cls):
    if backbone_cls is T.LwDetrViTConfig:
        backbone = backbone_cls(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=64,
                                pretrain_image_size=64, patch_size=16, out_indices=[1, 2], window_block_indices=[0],
                                num_windows=4)
    else:
        backbone = backbone_cls(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=56,
                                patch_size=14, out_indices=[1, 2], num_windows=2)
    return cls(backbone_config=backbone, d_model=32, decoder_ffn_dim=32, decoder_layers=2,
               decoder_self_attention_heads=2, decoder_cross_attention_heads=2, num_queries=10, group_detr=1,
               projector_scale_factors=[1.0], id2label=LABELS)


def _grounding_arguments() -> dict:
    return dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                encoder_attention_heads=2, decoder_attention_heads=2, num_queries=10, max_text_len=16,
                text_config=T.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=32, max_position_embeddings=64),
                **_detr_backbone())


def configs() -> dict[str, tuple[object, str, object]]:
    """name -> (config, model class name, image processor)."""
    detr_processor = T.DeformableDetrImageProcessor(size={"shortest_edge": 128, "longest_edge": 192})
    rt_processor = T.RTDetrImageProcessor(size={"height": 64, "width": 64})
    return {
        "deformable-detr": (T.DeformableDetrConfig(
            d_model=32, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
            encoder_attention_heads=2, decoder_attention_heads=2, num_queries=10, id2label=LABELS,
            **_detr_backbone()), "DeformableDetrForObjectDetection", detr_processor),
        "deformable-detr-two-stage": (T.DeformableDetrConfig(
            d_model=32, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
            encoder_attention_heads=2, decoder_attention_heads=2, num_queries=10, two_stage_num_proposals=10,
            two_stage=True, with_box_refine=True, id2label=LABELS, **_detr_backbone()),
            "DeformableDetrForObjectDetection", detr_processor),
        "grounding-dino": (T.GroundingDinoConfig(**_grounding_arguments()), "GroundingDinoForObjectDetection",
            T.GroundingDinoImageProcessor(size={"shortest_edge": 128, "longest_edge": 192})),
        "mm-grounding-dino": (T.MMGroundingDinoConfig(**_grounding_arguments()), "MMGroundingDinoForObjectDetection",
                              T.GroundingDinoImageProcessor(size={"shortest_edge": 128, "longest_edge": 192})),
        "rt-detr": (_rt(T.RTDetrConfig), "RTDetrForObjectDetection", rt_processor),
        "rt-detr-v2": (_rt(T.RTDetrV2Config), "RTDetrV2ForObjectDetection", rt_processor),
        "d-fine": (T.DFineConfig(
            backbone_config=_hgnet(), encoder_in_channels=[16, 16, 16], encoder_hidden_dim=32, d_model=32,
            encoder_ffn_dim=32, encoder_attention_heads=2, decoder_in_channels=[32, 32, 32], decoder_ffn_dim=32,
            decoder_layers=2, decoder_attention_heads=2, num_queries=10, num_denoising=0, lqe_hidden_dim=8,
            decoder_n_points=[2, 4, 3], id2label=LABELS), "DFineForObjectDetection", rt_processor),
        "lw-detr": (_lw(T.LwDetrConfig, T.LwDetrViTConfig), "LwDetrForObjectDetection",
                    T.DeformableDetrImageProcessor(size={"height": 64, "width": 64})),
        "rf-detr": (_lw(T.RfDetrConfig, T.RfDetrDinov2Config), "RfDetrForObjectDetection",
                    T.RfDetrImageProcessor(size={"height": 56, "width": 56})),
    }


FAMILY_NAMES = tuple(configs())
TEXT_PROMPTED = ("grounding-dino", "mm-grounding-dino")


def save_tiny(name: str, folder: Path, seed: int = 0) -> Path:
    """Write tiny model `name` (a key of `configs()`) into `folder`; returns the folder."""
    config, class_name, image_processor = configs()[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(T, class_name)(config).eval()
        _spread_boxes(model)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    if name in TEXT_PROMPTED:
        vocab = folder / "vocab.txt"
        vocab.write_text("\n".join(VOCAB) + "\n")
        tokenizer = T.BertTokenizer(str(vocab), do_lower_case=True)
        T.GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    else:
        image_processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Every family's tiny model saved in its own folder, by family name."""
    root = tmp_path_factory.mktemp("families")
    return {name: save_tiny(name, root / name) for name in FAMILY_NAMES}


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)


def _spread_boxes(model) -> None:
    """Random weights leave the box heads at zero (as transformers initialises them); small random
    values make every query's box and sampling points differ, so that comparisons mean something."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "bbox_embed" in name and parameter.abs().sum() == 0:
                parameter.normal_(0, 0.2)


def save_spread(name: str, folder: Path, seed: int = 1, scale: float = 0.1) -> Path:
    """`save_tiny`, then every weight perturbed by N(0, scale) (seeded): freshly initialised heads
    give many equal scores, whose top-k order no two runtimes need to share."""
    save_tiny(name, folder)
    model = getattr(T, configs()[name][1]).from_pretrained(folder).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
    model.save_pretrained(folder)
    return folder
