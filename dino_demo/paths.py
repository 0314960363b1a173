"""Where things are: the project's own folders, and the one cache directory.

The cache (`$DINO_DEMO_CACHE`, default `~/.cache/dino_demo`) holds the compiled kernels
(`ops-<kind>-<hash>/`), checkpoints downloaded from URLs (`checkpoints/`) and the model zoo's
files (`zoo/`, also where a zoo file downloaded by hand goes; Hub files stay in huggingface_hub's
own cache).
"""
from __future__ import annotations

from pathlib import Path

from . import env

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_DIR = PROJECT_ROOT / "weights"
EXAMPLES_DIR = PROJECT_ROOT / "examples"
CSRC_DIR = PROJECT_ROOT / "csrc"
CACHE_VARIABLE = "DINO_DEMO_CACHE"


def cache_dir(*parts: str) -> Path:
    """`$DINO_DEMO_CACHE` (or `~/.cache/dino_demo`) joined with `parts`; not created."""
    root = env.text(CACHE_VARIABLE) or Path.home() / ".cache" / "dino_demo"
    return Path(root).joinpath(*parts)


def url_checkpoints_dir() -> Path:
    """Where checkpoints downloaded from plain URLs are kept (`<cache>/checkpoints`)."""
    return cache_dir("checkpoints")
