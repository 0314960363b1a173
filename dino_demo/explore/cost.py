"""What a Detect will cost, known before it runs, and the input-size bound of a public server.

A checkpoint's stored config may ask for any input size within `STORED_LIMITS` (4096 px a side):
on the shipped weights, `min_size = max_size = 4096` made one Detect take 22.6 s and 2.75 GB more
memory. The cost of a run grows with the model input's area (the backbone's activations, the
encoder's tokens); a public server caps the input's longer side at the released variant's own
maximum (times DINO_DEMO_INPUT_SIDE_FACTOR, default 1), whatever a file asks for, and every Detect
states its input size and encoder tokens before the model runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .. import env
from ..model.config import VARIANTS, DINOConfig



@dataclass(frozen=True)
class RequestCost:
    """input_size: (h, w) of the model input; tokens: the encoder's tokens over all feature levels;
    relative: the input's area over the variant's usual largest (`max_size` x `min_size`)."""

    input_size: tuple[int, int]
    tokens: int | None
    relative: float

    def describe(self) -> str:
        h, w = self.input_size
        tokens = "" if self.tokens is None else f", {self.tokens:,} encoder tokens"
        return f"{w}x{h} px model input{tokens} ({self.relative:.2f}x the model's usual)"


def request_cost(cfg: DINOConfig, input_size: tuple[int, int]) -> RequestCost:
    """The cost of running `cfg`'s model on an input of `input_size` = (h, w); the encoder's tokens
    are counted where the config has a level table (DINO's; a transformers family's feature levels
    are known only after a run: not counted)."""
    h, w = input_size
    strides = level_strides(cfg)
    tokens = sum(math.ceil(h / s) * math.ceil(w / s) for s in strides) if strides else None
    usual = usual_range(cfg)
    return RequestCost((h, w), tokens, (h * w) / (usual[0] * usual[1]))


def level_strides(cfg: DINOConfig) -> tuple[int, ...]:
    """The feature levels' strides: backbone stage i has stride 4 * 2**i, and each extra level
    (a stride-2 convolution on the last) doubles the last; () without a level table."""
    strides = [4 * 2**stage for stage in cfg.backbone_levels]
    while strides and len(strides) < cfg.num_feature_levels:
        strides.append(strides[-1] * 2)
    return tuple(strides[:cfg.num_feature_levels])


def usual_range(cfg: DINOConfig) -> tuple[int, int]:
    """(min_size, max_size) of the released variant `cfg` is made from (its name), else the
    config's own sizes (a transformers family's: its processor's) within the largest range of any
    released variant (a stored config or a folder's saved settings cannot raise it)."""
    base = VARIANTS.get(cfg.name)
    if base is not None:
        return base.min_size, base.max_size
    largest = max(v.min_size for v in VARIANTS.values()), max(v.max_size for v in VARIANTS.values())
    return min(cfg.min_size, largest[0]), min(cfg.max_size, largest[1])


def public_max_input(cfg: DINOConfig) -> int:
    """The cap on the model input's longer side on a public server: the variant's usual maximum
    times DINO_DEMO_INPUT_SIDE_FACTOR (default 1)."""
    factor = env.positive_number(env.INPUT_SIDE_FACTOR, 1.0)
    return max(1, int(usual_range(cfg)[1] * factor))


def bounded_max_input(cfg: DINOConfig, requested: int, public: bool) -> int:
    """The cap on the input's longer side a request runs with: `requested`, and on a public
    server at most `public_max_input(cfg)` (a stored config cannot raise it)."""
    return min(requested, public_max_input(cfg)) if public else requested
