"""The one dispatch from a model source to the code that loads it.

`build(source)` takes any `Source` (or its text): untrained variants are built here (seeded random
weights), transformers-format models (Hub ids, `save_pretrained` folders) go to
`transformers_model` (dino_demo.families: only for callers that run them, the inference path),
checkpoint files (shipped, zoo, URL, path) to `checkpoint.load_model`. The page, the command line, training and export all load models through it (the page and the CLI
by way of `explore.models`, which adds the inference fast paths and a cache).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from ..model.config import DINOConfig, get_config
from ..model.detector import DINO, build_model
from .checkpoint import load_model
from .download import Progress
from .source import Source, SourceKind

if TYPE_CHECKING:
    from ..families.load import FamilyModel, FamilySettings


def build(source: str | os.PathLike | Source, variant: str | None = None, device: str | torch.device = "cpu",
          progress: Progress | None = None, *, transformers: bool = False
          ) -> tuple[DINO, DINOConfig] | tuple[FamilyModel, FamilySettings]:
    """(model, config) for a source (see sources/source.py), in eval mode with the official
    modules and state_dict layout (what training, exporting and saving need). A transformers-format
    source is refused (ValueError) unless the caller takes `transformers` models (the inference
    path: `explore.models.load`), which get (`families.load.FamilyModel`, `FamilySettings`). `variant` forces a
    configuration on a checkpoint; `progress(done_bytes, total_bytes)` hears about a download.

    The one dispatch on the kind of source: untrained variants are built here, transformers-format
    models (Hub ids, `save_pretrained` folders) go to `transformers_model`, checkpoint files
    (shipped, zoo, URL, path) to `sources.checkpoint.load_model`."""
    source = Source.parse(source)
    if source.kind is SourceKind.UNTRAINED:
        cfg = get_config(source.value)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_model(cfg)
        return model.to(device).eval(), cfg
    if source.is_transformers:
        if not transformers:
            raise ValueError(f"transformers-format models: {source} is a Hugging Face transformers model, which "
                             "detect and the page run; this command needs a DINO checkpoint (shipped, zoo:ID, a "
                             "file or URL, untrained:VARIANT)")
        return transformers_model(source, variant, device, progress)
    return load_model(source, variant=variant, device=device, progress=progress)


def transformers_model(source: Source, variant: str | None = None, device: str | torch.device = "cpu",
                       progress: Progress | None = None) -> tuple[FamilyModel, FamilySettings]:
    """A transformers-format model: `hf:ORG/NAME[@REVISION]` or a local `save_pretrained` folder,
    loaded by `families.load.load` (transformers' own model class and processor, never remote
    code; our op serving its deformable attention): (`FamilyModel`, its `FamilySettings`), which
    the inference path (`explore.inference.run`) takes as it takes (DINO, DINOConfig). Its config
    says what it is, so `variant` is refused; a folder without config.json is told apart."""
    if source.kind is SourceKind.FOLDER and not (source.path / "config.json").is_file():
        raise ValueError(f"{source.name} is a folder without config.json: give a checkpoint file, or a "
                         "transformers save_pretrained folder")
    if variant:
        raise ValueError(f"{source} is a transformers model: its config says what it is (no variant to force)")
    try:
        from ..families.load import load as load_family  # transformers is imported only for these models
    except ImportError as error:
        raise ValueError(f"{source} needs transformers, not installed here ({error}): "
                         "pip install -r requirements.txt (in the project folder)") from None

    handle = load_family(source, device, progress=progress)
    return handle, handle.settings
