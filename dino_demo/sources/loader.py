"""The one dispatch from a model source to the code that loads it.

`build(source)` takes any `Source` (or its text): untrained variants are built here (seeded random
weights), transformers-format models (Hub ids, `save_pretrained` folders) go to
`transformers_model`, checkpoint files (shipped, zoo, URL, path) to `checkpoint.load_model`.
The page, the command line, training and export all load models through it (the page and the CLI
by way of `explore.models`, which adds the inference fast paths and a cache).
"""
from __future__ import annotations

import os

import torch

from ..model.config import DINOConfig, get_config
from ..model.detector import DINO, build_model
from .checkpoint import load_model
from .download import Progress
from .source import Source, SourceKind


def build(source: str | os.PathLike | Source, variant: str | None = None, device: str | torch.device = "cpu",
          progress: Progress | None = None) -> tuple[DINO, DINOConfig]:
    """(model, config) for a source (see sources/source.py), in eval mode with the official
    modules and state_dict layout (what training, exporting and saving need). `variant` forces a
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
        return transformers_model(source, variant, device, progress)
    return load_model(source, variant=variant, device=device, progress=progress)


def transformers_model(source: Source, variant: str | None = None, device: str | torch.device = "cpu",
                       progress: Progress | None = None) -> tuple[DINO, DINOConfig]:
    """A transformers-format model: `hf:ORG/NAME[@REVISION]` or a local `save_pretrained` folder.
    Not supported yet: raises ValueError saying so (a folder without config.json is told apart)."""
    if source.kind is SourceKind.FOLDER and not (source.path / "config.json").is_file():
        raise ValueError(f"{source.name} is a folder without config.json: give a checkpoint file, or a "
                         "transformers save_pretrained folder")
    raise ValueError(f"transformers-format models: {source} is a Hugging Face transformers model "
                     "(hf:ORG/NAME or a save_pretrained folder), which this version cannot load yet; "
                     "use a DINO checkpoint, shipped, zoo:ID or untrained:VARIANT")
