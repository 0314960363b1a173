"""bfloat16 runs (CPU autocast): every variant runs, the shipped model's detections stay those of
float32, and the device's bfloat16 support is read and said.

bfloat16 is emulated on CPUs without AVX-512 BF16 / AMX (as on CI machines): there a bfloat16
run is many times slower than float32, so the official variants run reduced (one layer each, a
small image) and are marked slow.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from dino_demo.runtime import precision
from dino_demo.runtime.dino import run
from dino_demo.explore.models import load
from dino_demo.explore.draw.data import detection_view
from dino_demo.model.box_ops import box_iou
from dino_demo.model.config import VARIANTS, get_config
from dino_demo.model.detector import build_model
from dino_demo.train.synthetic import SceneSpec, generate_scene

WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "dino-tiny.pth"
OFFICIAL = sorted(name for name in VARIANTS if name != "dino-tiny")


def reduced(variant: str):
    """`variant` with one encoder and one decoder layer and 50 queries, seeded random weights."""
    torch.manual_seed(0)
    cfg = get_config(variant).replace(enc_layers=1, dec_layers=1, num_queries=50, num_select=50)
    return build_model(cfg).eval(), cfg


def agreement(full, half):
    """(largest encoder-output difference, top-k overlap as sets, largest top-10 score difference)."""
    memory = float((full.output.memory - half.output.memory).abs().max())
    a, b = (set(r.output.selection.topk_indices[0].tolist()) for r in (full, half))
    scores = float((full.detections.scores[:10] - half.detections.scores[:10]).abs().max())
    return memory, len(a & b) / len(a), scores


@pytest.mark.parametrize("variant", ["dino-tiny"] + [pytest.param(v, marks=pytest.mark.slow) for v in OFFICIAL])
def test_every_variant_runs_in_bfloat16_close_to_float32(variant):
    model, cfg = reduced(variant)
    image = np.random.default_rng(5).integers(0, 256, size=(96, 128, 3), dtype=np.uint8)
    cfg = cfg.replace(min_size=96, max_size=128)
    full = run(model, cfg, image)
    half = run(model, cfg, image, precision="bfloat16")
    assert half.precision == "bfloat16" and full.precision == "float32"
    assert half.output.pred_logits.dtype == torch.float32 and half.output.memory.dtype == torch.float32
    assert half.output.sampling_locations.dtype == torch.float32
    memory, overlap, scores = agreement(full, half)
    # Random weights, values of order 1: bfloat16's 8-bit mantissa moves them by a few percent.
    assert memory < 0.25, memory
    assert overlap >= 0.8, overlap
    assert scores < 0.05, scores


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="weights/dino-tiny.pth is not in this checkout")
def test_shipped_model_detections_unchanged_in_bfloat16():
    """The issue's bound: at least 97% of float32 detections (score >= 0.3) have a bfloat16 one of
    the same label at IoU > 0.9; the encoder's top-k selection agrees at 95% or more."""
    detector = load(str(WEIGHTS))
    model, cfg = detector.model, detector.config
    matched = total = 0
    for index in range(4):
        image = generate_scene(4242, index, SceneSpec(size=256)).image
        full, half = run(model, cfg, image), run(model, cfg, image, precision="bfloat16")
        _, overlap, _ = agreement(full, half)
        assert overlap >= 0.95, overlap
        reference, candidate = detection_view(full, 0.3), detection_view(half, 0.3)
        total += len(reference)
        if len(reference) and len(candidate):
            iou, _ = box_iou(torch.as_tensor(reference.boxes), torch.as_tensor(candidate.boxes))
            same = torch.as_tensor(reference.labels[:, None] == candidate.labels[None, :])
            matched += int(((iou > 0.9) & same).any(1).sum())
    assert total >= 10 and matched >= 0.97 * total, (matched, total)


def test_model_keeps_float32_where_precision_matters():
    """Under bfloat16 autocast: softmax weights, sampling locations, selection scores and box
    references are float32; the op gets bfloat16 values."""
    model, cfg = reduced("dino-tiny")
    seen = {}
    model.transformer.encoder.layers[0].self_attn.value_proj.register_forward_hook(
        lambda module, args, output: seen.update(value_proj=output.dtype))
    image = np.random.default_rng(1).integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*_batch(image, cfg), capture_attention=True)
    assert seen["value_proj"] == torch.bfloat16
    assert out.attention_weights.dtype == torch.float32 and out.sampling_locations.dtype == torch.float32
    assert out.selection.max_logit.dtype == torch.float32
    assert out.references.dtype == torch.float32


def _batch(image, cfg):
    from dino_demo.io.preprocess import prepare_batch

    batch = prepare_batch([image], cfg, None)
    return batch.images, batch.masks


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile amx_bf16\n\n"
                       "processor\t: 1\nflags\t\t: fpu\n")
    assert {"avx512_bf16", "amx_bf16"} <= precision.cpu_flags(cpuinfo)
    assert precision.cpu_flags(tmp_path / "missing") == frozenset()


def test_support_notes_say_what_to_expect(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    slow = precision.support("cpu")
    assert not slow.native_bfloat16 and slow.capability == torch.backends.cpu.get_cpu_capability()
    assert "no native bfloat16" in slow.note("bfloat16") and "slower than float32" in slow.note("bfloat16")
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16", "amx_bf16"}))
    fast = precision.support("cpu")
    assert fast.native_bfloat16 and fast.bfloat16_features == ("avx512_bf16", "amx_bf16")
    assert "native bfloat16: avx512_bf16, amx_bf16" in fast.note("bfloat16")
    assert "bfloat16 would be faster" in fast.note("float32")
    with pytest.raises(ValueError, match="precision must be one of"):
        fast.note("float8")


# -- the choice on the command line (on the page: tests/ui/test_page.py) ------------------------------

# The CPU's flags as /proc/cpuinfo would give them: this machine's own, one that emulates bfloat16
# and one that computes in it (AVX-512 BF16, AMX); the log says what each does, on any machine.
CPUS = {"this CPU": None, "emulated": frozenset({"avx2"}), "native": frozenset({"avx2", "avx512_bf16", "amx_bf16"})}
SAID = {"emulated": "emulated, so much slower than float32", "native": "bfloat16 matrix products on this CPU"}


@pytest.mark.parametrize("cpu", list(CPUS))
def test_cli_detect_runs_in_the_chosen_precision(tmp_path, caplog, monkeypatch, cpu):
    import logging

    from PIL import Image

    from dino_demo.cli import main

    if CPUS[cpu] is not None:
        monkeypatch.setattr(precision, "cpu_flags", lambda *args: CPUS[cpu])
    image = tmp_path / "scene.png"
    Image.fromarray(generate_scene(4242, 0, SceneSpec(size=96)).image).save(image)
    with caplog.at_level(logging.INFO):
        status = main(["detect", str(image), "--checkpoint", "untrained:dino-tiny", "--precision", "bfloat16",
                       "--out", str(tmp_path / "out")])
    assert status == 0 and (tmp_path / "out" / "detections.json").is_file()
    assert "precision: " + precision.support("cpu").note("bfloat16") in caplog.text
    if cpu in SAID:
        assert SAID[cpu] in caplog.text
    with pytest.raises(SystemExit):  # argparse: not a precision
        main(["detect", str(image), "--precision", "float8", "--out", str(tmp_path / "out")])
