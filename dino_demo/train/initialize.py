"""Where a training run starts: a variant from scratch, or a trained model (a model zoo id or any
model source, see `sources.source`) made to fit the data's categories; and which of a
pretrained backbone's parameters train.

Fitting a trained model to new categories is the official fine-tuning
(`--finetune_ignore label_enc.weight class_embed`): every class head (decoder and encoder) and the
denoising label embedding are built anew for the data's number of classes, with the model's own
initialization; every other weight is kept. A model whose class names and category ids already
are the data's keeps its heads too.
"""
from __future__ import annotations

from dataclasses import fields

from torch import nn

from ..sources.loader import build
from ..sources.source import Source
from ..io.labels import category_ids, class_names
from ..model.config import DINOConfig, get_config
from ..model.detector import DINO, build_model
from .data import Categories

# Keys that depend on the number of classes (matched as substrings, as the official
# `--finetune_ignore` keywords are).
CLASS_KEYWORDS = ("class_embed", "label_enc.weight")
RESNET_TRAINED_STAGES = ("layer2", "layer3", "layer4")
# DINOConfig fields a run may set that shape no parameter: a built model takes them as they are.
RUN_SETTINGS = ("dn_box_noise_scale", "dn_label_noise_ratio", "min_size", "max_size")


def is_class_key(key: str) -> bool:
    return any(keyword in key for keyword in CLASS_KEYWORDS)


def init_source(init: str | Source) -> str:
    """`--init` as the text of a model source: what `Source.parse` reads, where a bare model zoo id
    (`dino-4scale-r50`) names its zoo entry (`zoo:dino-4scale-r50`) unless a file of that name exists."""
    return str(Source.parse(init, bare_zoo=True))


def fits(cfg: DINOConfig, categories: Categories) -> bool:
    """Whether a model built from `cfg` already predicts exactly `categories`."""
    return class_names(cfg) == categories.names and category_ids(cfg) == categories.ids


def with_categories(cfg: DINOConfig, categories: Categories) -> DINOConfig:
    """`cfg` predicting `categories`; their ids are stored unless they are the default numbering
    for named classes (1..N)."""
    if fits(cfg, categories):
        return cfg
    named = cfg.replace(num_classes=len(categories), class_names=categories.names, category_ids=())
    return named if category_ids(named) == categories.ids else named.replace(category_ids=categories.ids)


def initial_model(categories: Categories, *, init: str | Source | None = None, variant: str = "dino-tiny",
                  **settings) -> DINO:
    """The model a run starts from: `init` (see `init_source`) with its class heads re-sized for
    `categories` when they differ, or `variant` from scratch. `settings` are DINOConfig fields the
    run sets (denoising noise, input size)."""
    if init is None:
        return build_model(with_categories(get_config(variant), categories).replace(**settings))
    trained, trained_cfg = build(init_source(init))
    cfg = with_categories(trained_cfg, categories).replace(**settings)
    if fits(trained_cfg, categories):
        return with_run_settings(trained, cfg)
    model = build_model(cfg)
    model.load_state_dict({key: value for key, value in trained.state_dict().items() if not is_class_key(key)},
                          strict=False)
    return model


def with_run_settings(model: DINO, cfg: DINOConfig) -> DINO:
    """`model` (in training mode) computing with `cfg`, which may differ from its own config only in
    `RUN_SETTINGS`: the same weights, without building the model again."""
    changed = [f.name for f in fields(cfg) if getattr(cfg, f.name) != getattr(model.cfg, f.name)]
    if not set(changed) <= set(RUN_SETTINGS):
        raise ValueError(f"these config fields need a model built anew: {sorted(set(changed) - set(RUN_SETTINGS))}")
    model.cfg = cfg
    return model.train()


def freeze_pretrained_backbone(model: DINO, train_backbone: bool = True) -> None:
    """The official rule for a pretrained backbone: a ResNet trains only layer2..layer4 and keeps
    its BatchNorm fixed (statistics and affine, as FrozenBatchNorm2d), a Swin trains whole;
    nothing of it trains when `train_backbone` is False (official: lr_backbone 0)."""
    backbone = model.backbone[0]
    resnet = model.cfg.backbone.startswith("resnet")
    for name, parameter in backbone.named_parameters():
        if not train_backbone or (resnet and not any(stage in name for stage in RESNET_TRAINED_STAGES)):
            parameter.requires_grad_(False)
    for module in backbone.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.requires_grad_(False)


def train_mode(model: nn.Module) -> None:
    """`model.train()`, except BatchNorm layers whose parameters are frozen, which keep using
    their running statistics."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d) and not any(
                p.requires_grad for p in module.parameters()):
            module.eval()
