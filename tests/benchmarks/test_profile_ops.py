"""benchmarks/profile_ops.py, smoke-sized: the profiled run's op table and its heaviest shapes."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_profile_ops_lists_the_ops_and_their_shapes():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "profile_ops.py"), "--variant", "dino-tiny", "--size", "64", "96",
         "--precision", "float32", "--warmup", "1", "--rows", "5", "--shapes", "1"],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(profiled)" in done.stdout and "Self CPU" in done.stdout
    assert "ms  x" in done.stdout  # a shape row under one of the top ops
