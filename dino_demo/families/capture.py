"""Internals of a `transformers` detector, read by hooks on its attention modules while it runs.

`install(model)` registers, once per model, forward hooks on every deformable-attention core
(`MultiScaleDeformableAttention`: the sampling locations and weights it was given) and forward
pre-hooks on every deformable cross- or self-attention module (the reference points it was
given). The hooks do nothing unless a `Recorder` is active in the calling thread or task
(`with recording(Recorder(...)) as recorder:`), so a model shared by several requests records only
for the one that asked. RT-DETR v2's and D-FINE's cores report to the recorder themselves (see
`op`): they are plain functions, not modules.
"""
from __future__ import annotations

import contextlib
import contextvars
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

CORE_NAME = "MultiScaleDeformableAttention"
V2_MODULES = ("RTDetrV2MultiscaleDeformableAttention", "DFineMultiscaleDeformableAttention")
CROSS_ATTENTION_NAMES = ("encoder_attn", "cross_attn")

_active: contextvars.ContextVar["Recorder | None"] = contextvars.ContextVar("dino_demo_family_recorder",
                                                                             default=None)


@dataclass
class Recorder:
    """What one forward pass's deformable attention was given.

    encoder_rows: encoder tokens whose self-attention to keep (None: keep none; it would be
        [layers, S, M, L, P, 3] floats for every token).
    decoder_locations / decoder_weights: per decoder layer, [B, Q, M, L, P, 2] and [B, Q, M, L, P]
        as the core received them (with `points_per_level` per level; for unequal counts padded,
        see `pad_points`).
    decoder_references: per decoder layer, the reference points [B, Q, L, 2 or 4] its
        cross-attention was given.
    encoder_locations / encoder_weights: per encoder layer, [B, n, M, L, P, 2] / [B, n, M, L, P]
        at `encoder_rows`; encoder_references: per layer [B, n, L, 2].
    """

    encoder_rows: torch.Tensor | None = None
    decoder_locations: list[torch.Tensor] = field(default_factory=list)
    decoder_weights: list[torch.Tensor] = field(default_factory=list)
    decoder_references: list[torch.Tensor] = field(default_factory=list)
    encoder_locations: list[torch.Tensor] = field(default_factory=list)
    encoder_weights: list[torch.Tensor] = field(default_factory=list)
    encoder_references: list[torch.Tensor] = field(default_factory=list)
    points_per_level: tuple[int, ...] | None = None
    # the flat [B, Q, M, sum(P_l), 2] / [B, Q, M, sum(P_l)] form of RT-DETR v2 / D-FINE calls
    decoder_flat_locations: list[torch.Tensor] = field(default_factory=list)
    decoder_flat_weights: list[torch.Tensor] = field(default_factory=list)
    # (H, W) of every level, as the decoder's attention was given them
    level_shapes: tuple[tuple[int, int], ...] | None = None

    def record_core(self, role: str, locations: torch.Tensor, weights: torch.Tensor,
                    level_shapes: Sequence[tuple[int, int]] | None = None) -> None:
        if role == "decoder" and level_shapes is not None:
            self.level_shapes = tuple((int(h), int(w)) for h, w in level_shapes)
        if role == "decoder":
            self.decoder_locations.append(locations.detach())
            self.decoder_weights.append(weights.detach())
        elif self.encoder_rows is not None:
            rows = self.encoder_rows.to(locations.device)
            self.encoder_locations.append(locations.detach()[:, rows])
            self.encoder_weights.append(weights.detach()[:, rows])

    def record_flat(self, locations: torch.Tensor, weights: torch.Tensor, points_per_level: Sequence[int],
                    level_shapes: Sequence[tuple[int, int]]) -> None:
        """A decoder core call of RT-DETR v2 / D-FINE: locations [B, Q, M, sum(P_l), 2], weights
        [B, Q, M, sum(P_l)]."""
        self.level_shapes = tuple((int(h), int(w)) for h, w in level_shapes)

        counts = tuple(int(p) for p in points_per_level)
        self.points_per_level = counts
        self.decoder_flat_locations.append(locations.detach())
        self.decoder_flat_weights.append(weights.detach())
        padded_loc, padded_w = pad_points(locations.detach(), weights.detach(), counts)
        self.decoder_locations.append(padded_loc)
        self.decoder_weights.append(padded_w)

    def record_reference(self, role: str, reference: torch.Tensor) -> None:
        if role == "decoder":
            self.decoder_references.append(reference.detach())
        elif self.encoder_rows is not None:
            self.encoder_references.append(reference.detach()[:, self.encoder_rows.to(reference.device)])


def pad_points(locations: torch.Tensor, weights: torch.Tensor, points_per_level: Sequence[int]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Locations [N, Q, M, sum(P_l), 2] and weights [N, Q, M, sum(P_l)] with P_l points on level l as
    [N, Q, M, L, P_max, 2] and [N, Q, M, L, P_max]: the missing points get weight 0 (they add
    nothing) and location NaN (they are no point)."""
    n, q, m = weights.shape[:3]
    width = max(points_per_level)
    padded_loc = locations.new_full((n, q, m, len(points_per_level), width, 2), float("nan"))
    padded_w = weights.new_zeros((n, q, m, len(points_per_level), width))
    start = 0
    for level, count in enumerate(points_per_level):
        padded_loc[:, :, :, level, :count] = locations[:, :, :, start:start + count]
        padded_w[:, :, :, level, :count] = weights[:, :, :, start:start + count]
        start += count
    return padded_loc, padded_w


def active() -> Recorder | None:
    """The recorder of the running pass, if any."""
    return _active.get()


@contextlib.contextmanager
def recording(recorder: Recorder):
    """Make `recorder` receive what the hooks see until the block ends."""
    token = _active.set(recorder)
    try:
        yield recorder
    finally:
        _active.reset(token)


def _role(name: str) -> str | None:
    parts = name.split(".")
    if "decoder" in parts:
        return "decoder"
    if "encoder" in parts:
        return "encoder"
    return None


def _argument(module: nn.Module, args: tuple, kwargs: dict, name: str):
    if name in kwargs:
        return kwargs[name]
    parameters = list(inspect.signature(module.forward).parameters)
    index = parameters.index(name) if name in parameters else -1
    return args[index] if 0 <= index < len(args) else None


def install(model: nn.Module) -> nn.Module:
    """Register the recording hooks on `model` (once; a second call does nothing)."""
    if getattr(model, "_dino_demo_capture", False):
        return model
    for name, module in model.named_modules():
        role = _role(name)
        if role is None:
            continue
        kind = type(module).__name__
        if kind == CORE_NAME:
            module.register_forward_hook(_core_hook(role), with_kwargs=True)
        has_core = any(type(child).__name__ == CORE_NAME for child in module.children())
        if has_core or kind in V2_MODULES:
            if role == "encoder" or name.rsplit(".", 1)[-1] in CROSS_ATTENTION_NAMES:
                module.register_forward_pre_hook(_reference_hook(role), with_kwargs=True)
    model._dino_demo_capture = True
    return model


def _core_hook(role: str):
    def hook(module, args, kwargs, output):
        recorder = _active.get()
        if recorder is not None:
            recorder.record_core(role, _argument(module, args, kwargs, "sampling_locations"),
                                 _argument(module, args, kwargs, "attention_weights"),
                                 _argument(module, args, kwargs, "value_spatial_shapes_list"))

    return hook


def _reference_hook(role: str):
    def hook(module, args, kwargs):
        recorder = _active.get()
        if recorder is not None:
            reference = _argument(module, args, kwargs, "reference_points")
            if reference is not None:
                recorder.record_reference(role, reference)

    return hook
