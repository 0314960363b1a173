"""Scores and thresholds as people read them: a score below the threshold never reads as equal
to it ("the best score is 0.299" under the threshold 0.30, not "0.30").

Every message that puts a score beside a threshold formats both here.
"""
from __future__ import annotations

import math

# Decimals a threshold is shown with (the fewest that show it exactly, e.g. 0.30, 0.305) and the
# most a score below it gets before it is cut instead of rounded.
THRESHOLD_DECIMALS = (2, 3, 4)
MAX_SCORE_DECIMALS = 6


def threshold_text(threshold: float) -> str:
    """`threshold` with 2 decimals, or 3 or 4 when those show it exactly ("0.30", "0.305")."""
    for decimals in THRESHOLD_DECIMALS:
        text = f"{threshold:.{decimals}f}"
        if abs(float(text) - threshold) < 1e-6:
            return text
    return f"{threshold:.{THRESHOLD_DECIMALS[-1]}f}"


def score_text(score: float, threshold: float, decimals: int = 2) -> str:
    """`score` with `decimals` decimals; a score below `threshold` gets as many more as it takes to
    read below the threshold as `threshold_text` shows it (0.299 → "0.299" under 0.30), and past
    `MAX_SCORE_DECIMALS` is cut, never rounded up to the threshold."""
    score = float(score)
    text = f"{score:.{decimals}f}"
    if score >= threshold:
        return text
    shown = float(threshold_text(threshold))
    for more in range(decimals, MAX_SCORE_DECIMALS + 1):
        text = f"{score:.{more}f}"
        if float(text) < shown:
            return text
    scale = 10 ** MAX_SCORE_DECIMALS
    return f"{math.floor(score * scale) / scale:.{MAX_SCORE_DECIMALS}f}"
