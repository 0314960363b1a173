"""From a checkpoint-kind model source to DINO's model and config.

`build(source)` takes any `Source` (or its text): untrained variants are built here (seeded random
weights), checkpoint files (shipped, zoo, URL, path) go to `checkpoint.load_model`. Training,
exporting and saving load models through it; inference loads a `Detector` through
`runtime.load_detector`, whose registry sends these kinds here (by way of `runtime.dino`, which
adds the inference fast paths) and transformers-format sources to `dino_demo.families`.
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
    modules and state_dict layout (what training, exporting and saving need). A transformers-format
    source (a Hub id, a save_pretrained folder) is refused with a ValueError: only inference runs
    those (`runtime.load_detector`). `variant` forces a configuration on a checkpoint;
    `progress(done_bytes, total_bytes)` hears about a download."""
    source = Source.parse(source)
    if source.kind is SourceKind.UNTRAINED:
        cfg = get_config(source.value)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_model(cfg)
        return model.to(device).eval(), cfg
    if source.is_transformers:
        raise ValueError(f"transformers-format models: {source} is a Hugging Face transformers model, which "
                         "detect and the page run; this command needs a DINO checkpoint (shipped, zoo:ID, a "
                         "file or URL, untrained:VARIANT)")
    return load_model(source, variant=variant, device=device, progress=progress)
