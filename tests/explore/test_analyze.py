"""`python -m dino_demo analyze` on a small synthetic COCO-format set: its counts against counts
computed here from the model's detections with an independent matcher, its nearest queries
against the internals' final boxes, its AP against `evaluate`, and torchrun with two processes
writing the same file."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dino_demo.cli import main as cli
from dino_demo.runtime.dino import run
from dino_demo.explore.models import load
from dino_demo.sources.checkpoint import DEFAULT_CHECKPOINT
from dino_demo.train.data import CocoDetectionSet
from dino_demo.train.evaluate import evaluate
from dino_demo.train.synthetic import SceneSpec, write_dataset

ROOT = Path(__file__).resolve().parents[2]
MODEL = str(DEFAULT_CHECKPOINT) if DEFAULT_CHECKPOINT.is_file() else "untrained:dino-tiny"
THRESHOLD = 0.3


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("set")
    coco = write_dataset(folder, seed=31337, count=6, spec=SceneSpec(size=256))
    # One crowd box, which takes no part in the counts.
    coco["annotations"].append({"id": 999, "image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40], "area": 1600.0,
                                "iscrowd": 1})
    (folder / "annotations.json").write_text(json.dumps(coco))
    return folder, coco


@pytest.fixture(scope="module")
def analysis(synthetic_set, tmp_path_factory):
    folder, _ = synthetic_set
    out = tmp_path_factory.mktemp("out")
    assert cli(["analyze", "--images", str(folder), "--annotations", str(folder / "annotations.json"),
                "--checkpoint", MODEL, "--threshold", str(THRESHOLD), "--out", str(out)]) == 0
    return json.loads((out / "analysis.json").read_text()), out


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def test_counts_match_an_independent_matcher(synthetic_set, analysis):
    folder, coco = synthetic_set
    document, _ = analysis
    detector = load(MODEL)
    model, cfg = detector.model, detector.config
    expected_tp = expected_fp = expected_fn = 0
    by_name = {r["file_name"]: r for r in document["images"]}
    for image in coco["images"]:
        result = run(model, cfg, np.asarray(Image.open(folder / image["file_name"]).convert("RGB")))
        det = result.detections
        keep = (det.scores >= THRESHOLD).numpy()
        boxes, scores = det.boxes.numpy()[keep].tolist(), det.scores.numpy()[keep].tolist()
        categories = [label + 1 for label in det.labels.numpy()[keep].tolist()]   # synthetic: id = class + 1
        slots = det.query_slot.numpy()[keep].tolist()
        truth = [a for a in coco["annotations"] if a["image_id"] == image["id"] and not a.get("iscrowd")]
        truth_boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in truth)]
        taken = [False] * len(truth)
        unmatched = []
        for d in sorted(range(len(scores)), key=lambda i: -scores[i]):
            best, best_iou = None, 0.5
            for g, box in enumerate(truth_boxes):
                iou = _iou(boxes[d], box)
                if not taken[g] and truth[g]["category_id"] == categories[d] and iou >= best_iou:
                    if best is None or iou > best_iou:
                        best, best_iou = g, iou
            if best is None:
                unmatched.append((slots[d], categories[d]))
            else:
                taken[best] = True
        missed = [truth[g]["id"] for g in range(len(truth)) if not taken[g]]
        expected_tp += sum(taken)
        expected_fp += len(unmatched)
        expected_fn += len(missed)

        record = by_name[image["file_name"]]
        assert sorted(m["annotation_id"] for m in record["false_negatives"]) == sorted(missed)
        assert sorted((f["query_slot"], f["category_id"]) for f in record["false_positives"]) == sorted(unmatched)
        assert record["true_positives"] == sum(taken)

        # Every miss's nearest query: the highest IoU of the internals' final boxes with it, and
        # that query's probability for the miss's class.
        final = result.internals.boxes[-1, 0].double()
        cx, cy, w, h = final.unbind(-1)
        height, width = result.size
        xyxy = torch.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                            (cy + h / 2) * height], -1).tolist()
        for miss in record["false_negatives"]:
            ious = [_iou(box, miss["box_xyxy"]) for box in xyxy]
            slot = int(np.argmax(ious))
            assert miss["nearest_query"]["query_slot"] == slot
            assert miss["nearest_query"]["iou"] == pytest.approx(ious[slot], abs=1e-4)
            probability = float(result.internals.logits[-1, 0, slot, miss["category_id"] - 1].sigmoid())
            assert miss["nearest_query"]["score"] == pytest.approx(probability, abs=1e-4)
            assert miss["verdict"] in ("no_proposal", "low_score", "box_off", "duplicate", "below_threshold")

    summary = document["summary"]
    assert (summary["true_positives"], summary["false_positives"], summary["false_negatives"]) == \
        (expected_tp, expected_fp, expected_fn)
    assert summary["ground_truth"] == len(coco["annotations"]) - 1          # the crowd box is left out
    assert sum(c["true_positives"] for c in document["per_category"]) == expected_tp
    assert sum(s["false_negatives"] for s in document["per_size"]) == expected_fn
    assert sum(s["false_positives"] for s in document["per_size"]) == expected_fp
    assert sum(summary["misses_by_verdict"].values()) == expected_fn
    assert sum(summary["false_alarms_by_kind"].values()) == expected_fp
    assert expected_fn > 0 and expected_fp > 0     # the set has both, so the checks above checked something
    # Worst images first.
    errors = [len(r["false_negatives"]) + len(r["false_positives"]) for r in document["images"]]
    assert errors == sorted(errors, reverse=True)


def test_ap_is_the_evaluate_commands(synthetic_set, analysis):
    folder, _ = synthetic_set
    document, _ = analysis
    detector = load(MODEL)
    model, cfg = detector.model, detector.config
    metrics = evaluate(model, cfg, CocoDetectionSet(folder, folder / "annotations.json"), batch_size=1)
    assert document["summary"]["AP"] == pytest.approx(metrics["AP"], abs=1e-4)
    assert document["summary"]["AP50"] == pytest.approx(metrics["AP50"], abs=1e-4)
    assert set(document) == {"schema", "model", "settings", "summary", "per_category", "per_size", "images"}


def test_bad_options_are_one_line_errors(synthetic_set, tmp_path, capsys):
    folder, _ = synthetic_set
    assert cli(["analyze", "--images", str(tmp_path / "nowhere"), "--annotations", str(folder / "annotations.json"),
                "--out", str(tmp_path)]) == 1
    assert "image folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["analyze", "--images", str(folder), "--annotations", str(folder / "annotations.json"),
             "--threshold", "2", "--out", str(tmp_path)])


@pytest.mark.slow
def test_torchrun_with_two_processes_writes_the_same_file(synthetic_set, analysis, tmp_path):
    folder, _ = synthetic_set
    _, one = analysis
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    launch = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "dino_demo",
         "analyze", "--images", str(folder), "--annotations", str(folder / "annotations.json"),
         "--checkpoint", MODEL, "--threshold", str(THRESHOLD), "--out", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=600)
    assert launch.returncode == 0, launch.stderr[-3000:]
    assert "on 2 process(es)" in launch.stderr
    assert json.loads((tmp_path / "analysis.json").read_text()) == json.loads((one / "analysis.json").read_text())


@pytest.mark.cuda
@pytest.mark.slow
def test_on_a_gpu_under_torchrun_the_counts_are_the_cpus(synthetic_set, analysis, tmp_path):
    """`--device cuda` under torchrun (NCCL, one GPU per process; as many processes as GPUs)."""
    folder, _ = synthetic_set
    cpu, _ = analysis
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    launch = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         str(torch.cuda.device_count()), "-m", "dino_demo", "analyze", "--images", str(folder), "--annotations",
         str(folder / "annotations.json"), "--checkpoint", MODEL, "--threshold", str(THRESHOLD), "--device", "cuda",
         "--out", str(tmp_path)],
        env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, timeout=600)
    assert launch.returncode == 0, launch.stderr[-3000:]
    gpu = json.loads((tmp_path / "analysis.json").read_text())
    for key in ("true_positives", "false_positives", "false_negatives"):
        assert abs(gpu["summary"][key] - cpu["summary"][key]) <= 1, key   # scores near the threshold may differ
    assert gpu["summary"]["AP"] == pytest.approx(cpu["summary"]["AP"], abs=0.02)
