"""Every setting read from the environment, in one place, with one error message for a bad value.

The project's own variables all start with `DINO_DEMO_`. Six older names without `DEMO_` (the app's
settings: `DINO_DEVICE`, `DINO_MODEL_CONCURRENCY`, `DINO_PRECISION`, `DINO_RESULT_BUDGET_MB`,
`DINO_CHECKPOINT_DIRS`, `DINO_UNTRAINED_VARIANTS`) are still read when the new name is unset, with a
DeprecationWarning and a log line naming the new one. Other tools' variables (`SPACE_ID`,
`HF_HUB_OFFLINE`, `GRADIO_SERVER_NAME`, torchrun's `RANK`, ...) are read here too, under their own
names. docs/environment.md lists them all.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "DINO_DEMO_"
# New name -> the name it had before the one prefix.
OLD_NAMES = {
    "DINO_DEMO_DEVICE": "DINO_DEVICE",
    "DINO_DEMO_MODEL_CONCURRENCY": "DINO_MODEL_CONCURRENCY",
    "DINO_DEMO_PRECISION": "DINO_PRECISION",
    "DINO_DEMO_RESULT_BUDGET_MB": "DINO_RESULT_BUDGET_MB",
    "DINO_DEMO_CHECKPOINT_DIRS": "DINO_CHECKPOINT_DIRS",
    "DINO_DEMO_UNTRAINED_VARIANTS": "DINO_UNTRAINED_VARIANTS",
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")
_warned: set[str] = set()


def text(variable: str) -> str | None:
    """The value of `$variable` as set (None when unset); for a `DINO_DEMO_` name whose old name is
    set instead, that one's, with a warning naming the new name (once per process)."""
    value = os.environ.get(variable)
    old = OLD_NAMES.get(variable)
    if value is None and old is not None and old in os.environ:
        if old not in _warned:
            _warned.add(old)
            message = f"{old} is deprecated: set {variable} instead"
            warnings.warn(message, DeprecationWarning, stacklevel=3)
            log.warning(message)
        value = os.environ[old]
    return value


def bad_value(variable: str, expected: str, value: str) -> ValueError:
    """The one error for a setting that cannot be used."""
    return ValueError(f"{variable} must be {expected}, got {value!r}")


def flag(variable: str, *, strict: bool = True) -> bool:
    """Whether `$variable` is switched on (1/true/yes/on; unset, empty, 0/false/no/off are off).
    Another value is an error, unless not `strict` (another tool's variable, read as that tool
    reads it: anything else is off)."""
    value = (text(variable) or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE or not strict:
        return False
    raise bad_value(variable, "1/true/yes/on or 0/false/no/off", value)


def positive_number(variable: str, default: float | None = None, *, integer: bool = False) -> float | int | None:
    """The positive number in `$variable` (a whole number when `integer`), or `default` when it is
    unset or empty. ValueError naming the variable for anything else."""
    value = (text(variable) or "").strip()
    if not value:
        return default
    expected = "a positive whole number" if integer else "a positive number"
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        raise bad_value(variable, expected, value) from None
    if not number > 0:
        raise bad_value(variable, expected, value)
    return number


def whole_number(variable: str, default: int) -> int:
    """The whole number (zero or more) in `$variable`, or `default` when unset or empty."""
    value = (text(variable) or "").strip()
    if not value:
        return default
    if not value.isdigit():
        raise bad_value(variable, "a whole number", value)
    return int(value)


def choice(variable: str, options: tuple[str, ...], default: str) -> str:
    """`$variable` when it is one of `options`, `default` when unset or empty."""
    value = (text(variable) or "").strip()
    if not value:
        return default
    if value not in options:
        raise bad_value(variable, " or ".join(options), value)
    return value


def non_negative_number(variable: str, default: float | None = None) -> float | None:
    """The number (zero or more) in `$variable`, or `default` when it is unset or empty (0 switches a
    safeguard off where its description says so). ValueError naming the variable otherwise."""
    value = (text(variable) or "").strip()
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise bad_value(variable, "a number, 0 or more", value) from None
    if not number >= 0:
        raise bad_value(variable, "a number, 0 or more", value)
    return number


MCP_VARIABLE = "DINO_DEMO_MCP"


def mcp_server() -> bool:
    """`DINO_DEMO_MCP`: serve the app's API endpoints as MCP tools too (Gradio's MCP server)."""
    return flag(MCP_VARIABLE)


DATA_DIRS_VARIABLE = "DINO_DEMO_DATA_DIRS"


def data_dirs() -> tuple[Path, ...]:
    """`DINO_DEMO_DATA_DIRS`: the server folders the page's Data set tab may read images from
    (`:`-separated, resolved); unset or empty: none."""
    setting = text(DATA_DIRS_VARIABLE) or ""
    return tuple(Path(p).expanduser().resolve() for p in setting.split(os.pathsep) if p.strip())


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
# transformers folders may go beyond the usual bounds (families.bounds; never in public mode).
ALLOW_LARGE_MODEL = "DINO_DEMO_ALLOW_LARGE_MODEL"
