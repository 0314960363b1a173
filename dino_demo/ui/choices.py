"""Which models the page offers, and what a choice means.

A choice is one of: "shipped" (weights/dino-tiny.pth), "zoo:<id>" (a published COCO model of the
model zoo, downloaded once), "weights/<file>.pth" (any other checkpoint in weights/),
"untrained:<variant>" (random weights, to look at a variant's structure), "hf:ORG/NAME" (a
transformers detector on the Hub, see dino_demo.families), or "custom" (a checkpoint path, a
transformers model folder, an hf: id or an http(s) URL typed into the box below the list).

The default is `DINO_DEMO_MODEL` when set, else the first zoo model already on this machine, else
the shipped model (which works offline).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import env
from ..sources import zoo
from ..sources.checkpoint import DEFAULT_CHECKPOINT
from ..sources.source import HUB_PREFIX, SHIPPED_TEXT, UNTRAINED_PREFIX, ZOO_PREFIX, Source, SourceKind
from ..model.config import VARIANTS, DINOConfig
from ..paths import PROJECT_ROOT, WEIGHTS_DIR, url_checkpoints_dir
from . import families_ui
from .settings import CHECKPOINT_DIRS_VARIABLE, checkpoint_dirs, untrained_variants

SHIPPED = SHIPPED_TEXT
CUSTOM = "custom"
AUTO_VARIANT = "auto"
DEFAULT_MODEL_VARIABLE = "DINO_DEMO_MODEL"
# The model the page offers to those who try the shipped one on a photo.
COCO_MODEL = ZOO_PREFIX + "dino-4scale-r50"


@dataclass(frozen=True)
class ModelChoice:
    """What to load: `source` for `explore.models.load`, a forced `variant` or None, the `model_id`
    shown to people, and the config when it is known before loading (else None)."""

    source: str
    variant: str | None
    model_id: str
    config: DINOConfig | None


def model_choices() -> list[tuple[str, str]]:
    """(label, value) of every model the page offers: checkpoints in weights/ (those whose real
    path lies in an allowed folder: a link to elsewhere is not offered), the untrained variants
    this deployment allows, and the path-or-URL box."""
    choices = []
    if DEFAULT_CHECKPOINT.is_file():
        choices.append(("dino-tiny, shipped · 8 synthetic shapes · works offline", SHIPPED))
    choices += [(zoo_label(status), status.entry.source_id) for status in zoo.status()]
    choices += families_ui.hub_choices()
    for path in sorted(WEIGHTS_DIR.glob("*.pth")):
        if path.resolve() != DEFAULT_CHECKPOINT.resolve() and _allowed(path.resolve()):
            choices.append((f"weights/{path.name}", f"weights/{path.name}"))
    choices += [(f"{name}, untrained (structure only)", UNTRAINED_PREFIX + name) for name in untrained_variants()]
    choices.append(("checkpoint path or URL (below)", CUSTOM))
    return choices


def zoo_label(status: zoo.ZooStatus) -> str:
    """E.g. "DINO-4scale R50, 12 epochs (official) · COCO 49.0 AP · 0.2 GB, downloaded once"."""
    entry = status.entry
    where = "on this machine" if status.cached else "downloaded once"
    return f"{entry.name} · COCO {entry.box_ap:.1f} AP · {entry.size_mb / 1024:.1f} GB, {where}"


def default_choice() -> str:
    """`DINO_DEMO_MODEL` when set, else the first zoo model on this machine, else the shipped one."""
    configured = env.text(DEFAULT_MODEL_VARIABLE)
    if configured:
        resolve(configured, "", None)  # a bad setting fails at start-up, with the reason
        return configured
    cached = [status.entry.source_id for status in zoo.status() if status.cached]
    if cached:
        return cached[0]
    return SHIPPED if DEFAULT_CHECKPOINT.is_file() else UNTRAINED_PREFIX + "dino-tiny"


def variant_is_fixed(choice: str) -> bool:
    """Whether the model menu's `choice` names its own variant (a zoo entry, an untrained variant
    or a transformers model on the Hub), so that the variant menu has nothing to offer."""
    try:
        return Source.parse(choice).kind in (SourceKind.ZOO, SourceKind.UNTRAINED, SourceKind.HUB)
    except ValueError:  # "custom", or a value the menu does not hold: resolve() reports it
        return False


def resolve(choice: str, checkpoint: str | None, variant: str | None) -> ModelChoice:
    """The model a page choice names. Raises ValueError for unknown choices, an empty box,
    unknown variants and files outside the allowed folders."""
    variant = None if variant in (None, "", AUTO_VARIANT) else str(variant)
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}.")
    forced = VARIANTS[variant] if variant else None
    choice = str(choice or "")
    if choice == CUSTOM:
        typed = (checkpoint or "").strip()
        if not typed:
            raise ValueError("Enter a checkpoint path or an http(s) URL, or choose another model.")
        source = Source.parse(typed)
        if source.kind is SourceKind.FOLDER:  # a transformers model folder (save_pretrained)
            return ModelChoice(local_model_folder(typed), None, source.name, None)
        if source.kind is SourceKind.FILE:
            return ModelChoice(local_checkpoint(typed), variant, source.name, forced)
        if source.kind in (SourceKind.URL, SourceKind.HUB):
            return ModelChoice(str(source), variant, source.name, forced)
        return resolve(str(source), "", variant)  # shipped, zoo:ID or untrained:VARIANT typed in the box
    if choice.lower().startswith(HUB_PREFIX):  # a transformers detector on the Hub (dino_demo.families)
        source = Source.parse(choice)
        return ModelChoice(str(source), None, source.name, None)
    if choice.lower() == SHIPPED or choice.lower().startswith((ZOO_PREFIX, UNTRAINED_PREFIX)):
        return _named(Source.parse(choice), variant, forced)
    if choice in {value for _, value in model_choices()}:
        return ModelChoice(local_checkpoint(str(PROJECT_ROOT / choice)), variant, choice, forced)
    raise ValueError(f"Unknown model choice {choice!r}; the choices are {', '.join(v for _, v in model_choices())}.")


def _named(source: Source, variant: str | None, forced: DINOConfig | None) -> ModelChoice:
    """The choice for the shipped model, a zoo entry or an untrained variant."""
    if source.kind is SourceKind.SHIPPED:
        return ModelChoice(str(source), variant, source.name, forced or VARIANTS["dino-tiny"])
    if source.kind is SourceKind.ZOO:
        entry = zoo.get(source.value)
        return ModelChoice(str(source), None, entry.name, VARIANTS[entry.variant])
    if source.value not in untrained_variants():
        raise ValueError(f"Unknown model choice {str(source)!r}: this app offers untrained models of "
                         f"{', '.join(untrained_variants()) or 'no variant'}.")
    return ModelChoice(str(source), None, source.name, VARIANTS[source.value])


def local_checkpoint(source: str) -> str:
    """The file a typed path names, after resolving links; refused before anything is read when it
    lies outside the allowed folders, with one message whether or not such a file exists (the
    page must not tell a visitor which files the server has) and no absolute server path."""
    path = Path(source).expanduser().resolve()
    if not _allowed(path):
        where = ", ".join(_describe(folder) for folder in checkpoint_dirs()) or "nowhere (only URLs)"
        raise ValueError(f"This app opens checkpoint files only from: {where}. "
                         f"Use a URL, or set {CHECKPOINT_DIRS_VARIABLE} where you run it.")
    if not path.is_file():
        raise ValueError(f"No checkpoint file at {Path(source).name!r} in the allowed folders.")
    return str(path)


def local_model_folder(source: str) -> str:
    """The transformers model folder (holding config.json) a typed path names, refused as
    `local_checkpoint` refuses files outside the allowed folders."""
    path = Path(source).expanduser().resolve()
    if not _allowed(path):
        local_checkpoint(source)  # the one refusal message
    if not (path / "config.json").is_file():
        raise ValueError(f"The folder {Path(source).name!r} holds no config.json: not a transformers model folder.")
    return str(path)


def _allowed(path: Path) -> bool:
    allowed = checkpoint_dirs()
    return allowed is None or any(path.is_relative_to(folder) for folder in allowed)


def _describe(folder: Path) -> str:
    """A folder as visitors may see it: relative to the project, or the cache, or its name."""
    if folder.is_relative_to(PROJECT_ROOT.resolve()):
        return f"{folder.relative_to(PROJECT_ROOT.resolve())}/"
    if folder == url_checkpoints_dir().resolve():
        return "the download cache"
    return f"a folder named {folder.name!r}"
