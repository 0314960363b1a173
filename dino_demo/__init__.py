"""DINO Explorer: the DINO detector with its internals as outputs.

Packages, by concern:
    model/    the detector (config, backbone, transformer, heads, outputs, post-processing)
    ops/      the multi-scale deformable attention op (kernels in ../csrc, reference in PyTorch)
    sources/  where models come from: the Source type, checkpoints, layouts, the zoo, downloads
    io/       images, pre-processing, class names, results and internals files
    explore/  the one inference path with its stored result, the views drawn from it, speed
    train/    synthetic data, matcher, losses, training loop, evaluation
    ui/       the Gradio page (one module per tab group, the app's services, per-session state)
    parity/   the parity kit's weight recipe and reference dump
    cli/      `python -m dino_demo COMMAND` / `dino-demo COMMAND`: every command, the only argv parsing
    env.py    every environment variable (DINO_DEMO_*)

Importing the package does not import torch.
"""
from .model.config import VARIANTS, DINOConfig, get_config

__all__ = ["DINOConfig", "VARIANTS", "get_config"]
