"""The app's settings, from the environment: device and concurrency read once at start-up,
the checkpoint folders on every use (so that they can change without a restart).

| variable | meaning | default |
|---|---|---|
| `DINO_DEMO_DEVICE` | where models run | `cuda` when available, else `cpu` |
| `DINO_DEMO_MODEL_CONCURRENCY` | model runs at a time (re-drawing runs alongside) | 1 |
| `DINO_DEMO_PRECISION` | the page's default precision: `float32`, or `bfloat16` / `float16` (autocast: GPUs, CPUs with AVX-512 BF16 / AMX) | `float32` |
| `DINO_DEMO_DOWNLOAD_CONCURRENCY` | model downloads at a time, beside the model runs; more are refused at once | 2 |
| `DINO_DEMO_MODEL_CACHE_MB` | memory for loaded models (least recently used dropped, one always kept) | 1024 in public mode, else 4096 |
| `DINO_DEMO_RESULT_BUDGET_MB` | memory for stored results, all sessions together (least recently used dropped) | 512 |
| `DINO_DEMO_CHECKPOINT_DIRS` | folders the checkpoint box may open (`:`-separated), or `any` | `weights/` and the download cache |
| `DINO_DEMO_UNTRAINED_VARIANTS` | variants offered with random weights (`,`-separated), `all` or `none` | `all`; on a Space all but Swin-L |
| `DINO_DEMO_QUEUE_SIZE` | events waiting in the queue, and uploads received at once; more are refused at once with "busy" (`ui.busy`, `ui.admission`) | 16 |
| `DINO_DEMO_BUSY_WAIT` | seconds a model run waits for its slot before "busy, try again" (`ui.busy`) | 60 |
| `SPACE_ID` | set by Hugging Face Spaces: the app is public | unset |

The names without `DEMO_` (`DINO_DEVICE`, ...) still work, with a warning (see `dino_demo.env`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .. import env
from ..model.config import VARIANTS
from ..paths import WEIGHTS_DIR, url_checkpoints_dir

CHECKPOINT_DIRS_VARIABLE = "DINO_DEMO_CHECKPOINT_DIRS"
UNTRAINED_VARIANTS_VARIABLE = "DINO_DEMO_UNTRAINED_VARIANTS"
# Untrained Swin-L models hold 1.4 GB and are slow on a CPU Space: not for visitors.
LARGE_VARIANTS = ("dino-4scale-swinl", "dino-5scale-swinl")


@dataclass(frozen=True)
class AppSettings:
    """device: torch device models run on; model_concurrency: model runs at a time;
    result_budget_mb: memory for the stored results of all sessions together; precision: the
    page's default Precision choice and the API endpoints' precision (see
    `runtime.dino.run_batch`); download_concurrency: model downloads at a
    time; model_cache_mb: memory for loaded models (None: bounded by count only)."""

    device: str
    model_concurrency: int
    result_budget_mb: int = 512
    precision: str = "float32"
    download_concurrency: int = 2
    model_cache_mb: int | None = None

    @classmethod
    def from_env(cls) -> "AppSettings":
        import torch

        from ..sources.download import Policy

        device = env.text("DINO_DEMO_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
        precision = env.choice("DINO_DEMO_PRECISION", ("float32", "float16", "bfloat16"), "float32")
        public = Policy.from_env().public
        return cls(device=device, model_concurrency=env.positive_number("DINO_DEMO_MODEL_CONCURRENCY", 1, integer=True),
                   result_budget_mb=env.positive_number("DINO_DEMO_RESULT_BUDGET_MB", 512, integer=True),
                   precision=precision,
                   download_concurrency=env.positive_number(env.DOWNLOAD_CONCURRENCY, 2, integer=True),
                   model_cache_mb=env.positive_number(env.MODEL_CACHE_MB, 1024 if public else 4096, integer=True))


def on_space() -> bool:
    """Whether the app runs on Hugging Face Spaces (`SPACE_ID` is set there): a public page."""
    return bool(env.text("SPACE_ID"))


def checkpoint_dirs() -> tuple[Path, ...] | None:
    """Folders (symlinks resolved) whose files the app opens as checkpoints, None for any file:
    `DINO_DEMO_CHECKPOINT_DIRS`, by default weights/ and the download cache, so that the page cannot
    make the server open its other files."""
    setting = env.text(CHECKPOINT_DIRS_VARIABLE)
    if setting is None:
        return (WEIGHTS_DIR.resolve(), url_checkpoints_dir().resolve())
    if setting.strip().lower() == "any":
        return None
    return tuple(Path(part).expanduser().resolve() for part in setting.split(os.pathsep) if part.strip())


def untrained_variants() -> tuple[str, ...]:
    """Variants the page offers with random weights (`DINO_DEMO_UNTRAINED_VARIANTS`): all of them on
    your own machine, all but the large Swin-L ones on a Space."""
    setting = env.text(UNTRAINED_VARIANTS_VARIABLE)
    if setting is None:
        return tuple(v for v in VARIANTS if not (on_space() and v in LARGE_VARIANTS))
    if setting.strip().lower() == "all":
        return tuple(VARIANTS)
    chosen = tuple(part.strip() for part in setting.split(",") if part.strip() and part.strip().lower() != "none")
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise ValueError(f"{UNTRAINED_VARIANTS_VARIABLE} names unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    return chosen

