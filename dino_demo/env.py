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


MCP_VARIABLE = "DINO_DEMO_MCP"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def flag(variable: str) -> bool:
    """Whether `$variable` is switched on (1/true/yes/on; unset, empty, 0/false/no/off are off).
    ValueError naming the variable for anything else."""
    value = os.environ.get(variable, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{variable} must be 1/true/yes/on or 0/false/no/off, got {value!r}")


def mcp_server() -> bool:
    """`DINO_DEMO_MCP`: serve the app's API endpoints as MCP tools too (Gradio's MCP server)."""
    return flag(MCP_VARIABLE)
