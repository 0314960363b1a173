"""Data-parallel training: two processes under torchrun (Gloo, CPU) compute the gradients one
process computes over the same global batch, and write one set of checkpoints and logs."""
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dino_demo.train import distributed

SCRIPT = Path(__file__).resolve().parents[1] / "support" / "distributed_gradients.py"


@pytest.mark.slow
def test_two_processes_compute_the_gradients_of_one_and_write_once(tmp_path, shapes_coco):
    data = tmp_path / "data.json"
    data.write_text(json.dumps(shapes_coco))
    path = os.pathsep.join(filter(None, [str(SCRIPT.parent.parent), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    launch = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
         str(data), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert launch.returncode == 0, launch.stderr[-3000:]

    one = runpy.run_path(str(SCRIPT))["gradients"](shapes_coco, tmp_path, distributed.Process(0, 1, torch.device("cpu")))
    two = torch.load(tmp_path / "gradients.pt", weights_only=True)
    assert set(one) == set(two) and len(one) > 100
    for name, expected in one.items():
        scale = expected.abs().max().item()
        assert (two[name] - expected).abs().max().item() <= 1e-4 * scale + 1e-9, name

    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["best.pth", "checkpoint.pth", "log.jsonl"]
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [line.get("processes") for line in lines if "start" in line] == [2]
    assert [line["step"] for line in lines if "eval" in line] == [2]
    assert torch.load(run / "checkpoint.pth", weights_only=True)["step"] == 2
