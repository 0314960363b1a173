"""Loading a `transformers` detector: a folder written by `save_pretrained` (config.json, weights,
the processor's files) or a Hub id (`hub.download` fetches that folder first).

Models load with their own transformers class and processor (never remote code), in eval mode,
with the capture hooks installed and our op serving their deformable attention (`op.use_op`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError

from ..sources.download import Progress
from ..sources.source import Source, SourceKind
from . import bounds, capture, family_of, hub
from .base import Family
from .fast import optimize
from .op import use_op

CONFIG = "config.json"


@dataclass(frozen=True)
class FamilySettings:
    """What the page and the command line read of a loaded model (as they read a DINOConfig).

    name: the config's model type; family: the family's display name; min_size / max_size: the
    processor's shorter-side target and longer-side cap (equal for fixed-size processors, which
    resize to min_size x max_size); fixed_size: whether the processor ignores the aspect ratio;
    enc_layers: deformable encoder layers (0: no deformable encoder); num_select: detections kept
    before the threshold; text_prompt: whether it needs a prompt; backbone_levels /
    num_feature_levels: DINO's level table, empty here (a family's feature levels are known only
    after a run, so no encoder tokens are counted before it: `explore.cost`).
    """

    name: str
    family: str
    min_size: int
    max_size: int
    fixed_size: bool
    enc_layers: int
    num_select: int
    text_prompt: bool
    backbone: str = "transformers"
    backbone_levels: tuple[int, ...] = ()
    num_feature_levels: int = 0


@dataclass(eq=False)
class FamilyModel:
    """A loaded detector: the transformers `model`, its `processor` (an image processor, or for
    text-prompted families a processor with a tokenizer), its `family`, `settings`, where it came
    from (`source`) and whether our op serves its attention (`our_op`)."""

    model: torch.nn.Module
    processor: object
    family: Family
    settings: FamilySettings
    source: str
    our_op: bool

    def parameters(self):
        return self.model.parameters()

    def buffers(self):
        return self.model.buffers()

    def use_op(self, enabled: bool) -> None:
        """Switch between our op and transformers' own attention code."""
        use_op(self.model, enabled)
        self.our_op = enabled


def is_model_folder(path: str | Path) -> bool:
    """Whether `path` is a folder holding a transformers config."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG).is_file()


def load(source: str | Path | Source, device: str | torch.device = "cpu", *, our_op: bool = True,
         progress: Progress | None = None, fast: bool = True) -> FamilyModel:
    """A folder written by `save_pretrained`, or "hf:ORG/NAME[@REVISION]", ready for inference
    (`fast`: with the inference fast paths of `fast.optimize`; off: transformers' modules as loaded)."""
    parsed = Source.parse(source)
    if not parsed.is_transformers:
        raise ValueError(f"{parsed} is not a transformers model (an hf:ORG/NAME id or a save_pretrained folder)")
    source = str(parsed)
    folder = hub.download(source, progress) if parsed.kind is SourceKind.HUB else parsed.path
    shown = parsed.name  # messages name the folder, never its path on this machine
    if not is_model_folder(folder):
        raise ValueError(f"{shown} holds no {CONFIG}: not a transformers model folder")
    try:
        model_type = bounds.read_json(folder / CONFIG, shown).get("model_type", "")
    except (OSError, AttributeError) as error:
        raise ValueError(f"{shown}: unreadable {CONFIG} ({type(error).__name__})") from None
    family = family_of(str(model_type))
    bounds.check_folder(folder, shown)  # sizes and memory, before any parameter exists
    model_class = getattr(transformers, family.model_class)
    try:
        model = model_class.from_pretrained(folder, use_safetensors=_has_safetensors(folder) or None)
        if family.text_prompt:
            processor = transformers.AutoProcessor.from_pretrained(folder, trust_remote_code=False)
        else:
            processor = transformers.AutoImageProcessor.from_pretrained(folder, trust_remote_code=False)
    except (OSError, KeyError, TypeError, SafetensorError) as error:
        detail = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        raise ValueError(f"{shown}: not a loadable {family.name} folder ({detail.replace(str(folder), shown)})") \
            from None
    model = model.to(device).eval()
    if fast:
        optimize(model)
    capture.install(model)
    use_op(model, our_op)
    return FamilyModel(model, processor, family, _settings(model, processor, family), source, our_op)


def _has_safetensors(folder: Path) -> bool:
    return any(folder.glob("*.safetensors"))


def _settings(model, processor, family: Family) -> FamilySettings:
    image_processor = getattr(processor, "image_processor", processor)
    size = dict(getattr(image_processor, "size", None) or {})
    if "shortest_edge" in size:
        min_size, max_size, fixed = int(size["shortest_edge"]), int(size.get("longest_edge") or 1333), False
    elif "height" in size and "width" in size:
        min_size, max_size, fixed = int(size["height"]), int(size["width"]), True
    else:
        raise ValueError(f"unsupported image processor size {size!r}")
    config = model.config
    enc_layers = int(getattr(config, "encoder_layers", 0) or 0) if family.deformable_encoder else 0
    top_k = family.top_k or int(config.num_queries)
    return FamilySettings(name=str(config.model_type), family=family.name, min_size=min_size, max_size=max_size,
                          fixed_size=fixed, enc_layers=enc_layers, num_select=top_k, text_prompt=family.text_prompt)
