"""Reading settings from environment variables, with one error message for a bad value."""
from __future__ import annotations

import os


def positive_number(variable: str, default: float | None = None, *, integer: bool = False) -> float | int | None:
    """The positive number in `$variable` (a whole number when `integer`), or `default` when it is
    unset or empty. ValueError naming the variable for anything else."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ValueError(f"{variable} must be {kind}, got {text!r}") from None
    if not value > 0:
        raise ValueError(f"{variable} must be positive, got {text!r}")
    return value


def non_negative_number(variable: str, default: float | None = None) -> float | None:
    """The number >= 0 in `$variable`, or `default` when it is unset or empty (0 switches a
    safeguard off where its description says so). ValueError naming the variable otherwise."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{variable} must be a number, got {text!r}") from None
    if not value >= 0:
        raise ValueError(f"{variable} must be 0 or more, got {text!r}")
    return value


# -- the limits of a public server (docs/deployment.md) ----------------------------------------
# Seconds a download that failed fails at once for the next request of the same file (0: never).
DOWNLOAD_RETRY_AFTER = "DINO_DEMO_DOWNLOAD_RETRY_AFTER"
# Model downloads at a time; further requests that must download are refused at once.
DOWNLOAD_CONCURRENCY = "DINO_DEMO_DOWNLOAD_CONCURRENCY"
# Memory for loaded models (MiB), least recently used dropped first.
MODEL_CACHE_MB = "DINO_DEMO_MODEL_CACHE_MB"
# Hours after which a session's files, served files and unused uploads are removed.
FILES_MAX_AGE_H = "DINO_DEMO_FILES_MAX_AGE_H"
# MiB the app's temporary files (sessions' files, Gradio's cache) may take on disk.
FILES_QUOTA_MB = "DINO_DEMO_FILES_QUOTA_MB"
# The model input's longer side in public mode is at most this factor of the variant's own maximum.
INPUT_SIDE_FACTOR = "DINO_DEMO_INPUT_SIDE_FACTOR"
