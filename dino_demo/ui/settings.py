"""The app's settings, from the environment: device and concurrency read once at start-up,
the checkpoint folders on every use (so that they can change without a restart).

| variable | meaning | default |
|---|---|---|
| `DINO_DEVICE` | where models run | `cuda` when available, else `cpu` |
| `DINO_MODEL_CONCURRENCY` | model runs at a time (re-drawing runs alongside) | 1 |
| `DINO_CHECKPOINT_DIRS` | folders the checkpoint box may open (`:`-separated), or `any` | `any`; on a Space `weights/` |
| `SPACE_ID` | set by Hugging Face Spaces: the app is public | unset |
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..paths import WEIGHTS_DIR

CHECKPOINT_DIRS_VARIABLE = "DINO_CHECKPOINT_DIRS"


@dataclass(frozen=True)
class AppSettings:
    """device: torch device models run on; model_concurrency: model runs at a time."""

    device: str
    model_concurrency: int

    @classmethod
    def from_env(cls) -> "AppSettings":
        import torch

        device = os.environ.get("DINO_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(device=device, model_concurrency=_positive_int("DINO_MODEL_CONCURRENCY", 1))


def on_space() -> bool:
    """Whether the app runs on Hugging Face Spaces (`SPACE_ID` is set there): a public page."""
    return bool(os.environ.get("SPACE_ID"))


def checkpoint_dirs() -> tuple[Path, ...] | None:
    """Folders the checkpoint box may open (`DINO_CHECKPOINT_DIRS`), None for any file. Unset, it
    is any file on your own machine and weights/ alone on a Space, so that visitors of a public
    page cannot make the server open its other files."""
    setting = os.environ.get(CHECKPOINT_DIRS_VARIABLE)
    if setting is None:
        setting = str(WEIGHTS_DIR) if on_space() else "any"
    if setting.strip().lower() == "any":
        return None
    return tuple(Path(part).expanduser().resolve() for part in setting.split(os.pathsep) if part.strip())


def _positive_int(variable: str, default: int) -> int:
    value = os.environ.get(variable)
    if value is None or not value.strip():
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{variable} must be a whole number, got {value!r}") from None
    if number < 1:
        raise ValueError(f"{variable} must be at least 1, got {number}")
    return number
