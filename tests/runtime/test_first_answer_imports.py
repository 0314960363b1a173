"""The first Detect's imports: what the app, `detect` and the first-answer benchmark import to load
a model and run it leaves out the compiler stack (torch._dynamo, inductor, triton, sympy) and the
libraries only other commands use. Checked in a fresh interpreter through `sys.modules`, not by
timing."""
from __future__ import annotations

import json
import subprocess
import sys

import torch

from dino_demo.model.config import get_config
from dino_demo.model.detector import build_model
from dino_demo.model.skeleton import on_meta

from conftest import ROOT

HEAVY = ("torch._dynamo", "torch._inductor", "triton", "sympy", "transformers", "gradio", "scipy", "pycocotools",
         "onnx", "onnxruntime", "matplotlib")

_FIRST_DETECT = r"""
import json, sys
import numpy as np
from dino_demo import ops
from dino_demo.explore.models import ModelCache
from dino_demo.io.images import load_image
ops.backend("cpu")
detector = ModelCache(device="cpu").get(sys.argv[1])
result = detector.run(np.zeros((64, 80, 3), dtype=np.uint8))
print(json.dumps(sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)))
"""


def _fresh(code: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_the_first_detect_imports_no_compiler_stack():
    shipped = ROOT / "weights" / "dino-tiny.pth"  # the first answer's model: a checkpoint file, checked on meta
    assert json.loads(_fresh(_FIRST_DETECT, str(shipped), json.dumps(HEAVY))) == []


def test_torchvision_without_dynamo_still_works_and_dynamo_loads_later():
    code = r"""
import json, sys, torch
from dino_demo.vision import import_torchvision
tv = import_torchvision()
before = "torch._dynamo" in sys.modules
out = tv.ops.roi_align(torch.rand(1, 2, 8, 8), torch.tensor([[0, 0., 0., 4., 4.]]), (2, 2))
import torch._dynamo.utils
print(json.dumps([before, list(out.shape), callable(torch._dynamo.utils.is_compile_supported),
                  torch._dynamo.__file__.endswith("__init__.py")]))
"""
    assert json.loads(_fresh(code)) == [False, [1, 2, 2, 2], True, True]


def test_meta_skeleton_has_the_models_table_without_values():
    cfg = get_config("dino-tiny")
    torch.manual_seed(0)
    real = {k: (v.shape, v.dtype) for k, v in build_model(cfg).state_dict().items()}
    with on_meta():
        skeleton = build_model(cfg)
    assert {k: (v.shape, v.dtype) for k, v in skeleton.state_dict().items()} == real
    assert all(p.is_meta for p in skeleton.parameters())
    with on_meta():
        large = build_model(get_config("dino-4scale-r50"))
    assert all(t.is_meta for t in [*large.parameters(), *large.buffers()])
