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
