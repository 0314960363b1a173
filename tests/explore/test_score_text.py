"""A score below the threshold never reads as equal to it (`explore.score_text`), in the page's
status line and the diagnosis."""
from types import SimpleNamespace

import numpy as np
import pytest

from dino_demo.explore import panels
from dino_demo.explore.score_text import score_text, threshold_text


@pytest.mark.parametrize("threshold, text", [(0.3, "0.30"), (0.0, "0.00"), (1.0, "1.00"), (0.305, "0.305"),
                                             (0.1234, "0.1234"), (0.123456, "0.1235")])
def test_a_threshold_is_shown_with_the_decimals_it_needs(threshold, text):
    assert threshold_text(threshold) == text


@pytest.mark.parametrize("score, threshold, text", [
    (0.299, 0.3, "0.299"), (0.2999, 0.3, "0.2999"), (0.29999999, 0.3, "0.299999"), (0.25, 0.3, "0.25"),
    (np.float32(0.29), 0.3, "0.29"), (0.3004, 0.305, "0.30"), (0.3, 0.3, "0.30"), (0.87012, 0.3, "0.87"),
    (0.2996, 0.3, "0.2996"),
])
def test_a_score_below_the_threshold_reads_below_it(score, threshold, text):
    shown = score_text(score, threshold)
    assert shown == text
    if score < threshold:
        assert float(shown) < float(threshold_text(threshold))


def test_the_status_line_gives_the_best_score_below_the_threshold():
    """The issue's case: "... threshold 0.30 (the best score is 0.30)" when the best was 0.299."""
    result = SimpleNamespace(detections=SimpleNamespace(scores=np.array([0.299, 0.2], np.float32)),
                             backend=("cpp", "compiled"))
    notice = panels.notice_markdown(SimpleNamespace(result=result, notes=()), [], 0.3, False)
    assert "No detection reaches the score threshold 0.30 (the best score is 0.299)" in notice
