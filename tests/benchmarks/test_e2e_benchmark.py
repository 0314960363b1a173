"""benchmarks/e2e.py, end to end and smoke-sized: the same JSON layout in float32 and bfloat16,
the bfloat16 run reporting its agreement with the float32 baseline instead of failing."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# Slow: about 15 s of CPU per precision (each timed run a fresh process importing torch), 30 s for both:
# over the fast subset's budget.
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_e2e_benchmark_json_in_both_precisions(tmp_path, precision):
    out = tmp_path / "e2e.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "e2e.py"), "--variant", "dino-tiny", "--size", "64", "96",
         "--repeats", "1", "--threads", "1", "--precision", precision, "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["precision"] == precision
    assert report["median_seconds"]["candidate"]["total"] > 0 and report["median_seconds"]["baseline"]["total"] > 0
    agreement = report["agreement"]
    assert set(agreement) >= {"topk_overlap", "detections", "detections_matched", "max_score_diff", "max_box_diff_px"}
    assert 0 <= agreement["topk_overlap"] <= 1 and agreement["detections_matched"] <= agreement["detections"]
    assert isinstance(report["cpu"]["native_bfloat16"], bool)
    if precision == "float32":  # the same model and computation: the same detections
        assert report["outputs_agree"] and agreement["topk_overlap"] == 1.0
        assert agreement["detections_matched"] == agreement["detections"]
    else:  # the float32 candidate ran alongside: one run, all three times
        assert "agreement with the float32 baseline" in done.stdout
        assert report["median_seconds"]["candidate_float32"]["total"] > 0
