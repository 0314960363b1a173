"""DINO Explorer: the DINO detector with its internals as outputs.

Packages, by concern:
    model/    the detector (config, backbone, transformer, heads, outputs, post-processing)
    ops/      the multi-scale deformable attention op (kernels in ../csrc, reference in PyTorch)
    io/       checkpoints, images, pre-processing, class names, results files
    explore/  the one inference path with its stored result, the views drawn from it, speed
    train/    synthetic data, matcher, losses, training loop, evaluation
    ui/       the Gradio page (layout, callbacks, per-session state)
    parity/   the parity kit's weight recipe and reference dump
    cli/      `python -m dino_demo COMMAND` / `dino-demo COMMAND`

Importing the package does not import torch.
"""
from .model.config import VARIANTS, DINOConfig, get_config

__all__ = ["DINOConfig", "VARIANTS", "get_config"]
