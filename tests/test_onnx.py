"""The ONNX export against the PyTorch model it came from: every output under ONNX Runtime, the
encoder's top-k selection, the detections, and `detect --onnx` (which must not import torch)
against `detect`.

Two exports, the slow part of this module: the shipped model with --dynamic --internals, and a
random-weight R50 for a fixed, reduced input with --internals.
"""
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from dino_demo.cli import main as cli_main
from dino_demo.explore.models import build
from dino_demo.export.metadata import FORMAT, INTERNAL_OUTPUTS, OUTPUTS
from dino_demo.export.onnx import DetectorGraph, export_onnx
from dino_demo.export.runtime import OnnxDetector
from dino_demo.io.checkpoint import DEFAULT_CHECKPOINT
from dino_demo.parity.recipe import recipe_state_dict
from dino_demo.paths import EXAMPLES_DIR

from conftest import ROOT

BOX_ATOL = 1e-4        # boxes, references, sampling locations, detection boxes (normalized)
LOGIT_ATOL = 1e-3      # class logits
WEIGHT_ATOL = 1e-4     # attention weights, scores
R50_CANVAS = (256, 320)
# Random weights put many R50 scores within float noise of each other; members of the top-k may
# trade places with others that score the same to this tolerance (the trained model's may not).
R50_TIE_ATOL = 1e-5
PHOTOS = sorted(EXAMPLES_DIR.glob("*.png"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(PyTorch graph, ONNX Runtime detector) of the shipped model, dynamic, with internals."""
    model, cfg = build(str(DEFAULT_CHECKPOINT))
    path = tmp_path_factory.mktemp("onnx") / "dino-tiny.onnx"
    export_onnx(model, path, internals=True, source=DEFAULT_CHECKPOINT.name)
    return DetectorGraph(model, internals=True).eval(), OnnxDetector(path)


@pytest.fixture(scope="module")
def r50(tmp_path_factory):
    """(PyTorch graph, ONNX Runtime detector) of a 4-scale R50 with the parity kit's random
    weights (every weight random, unlike a fresh model's zero sampling offsets), fixed canvas."""
    model, cfg = build("untrained:dino-4scale-r50")
    model.load_state_dict(recipe_state_dict(model.state_dict()), strict=True)
    path = tmp_path_factory.mktemp("onnx") / "r50.onnx"
    export_onnx(model, path, canvas=R50_CANVAS, internals=True, source="parity recipe")
    return DetectorGraph(model, internals=True).eval(), OnnxDetector(path)


def padded_batch(sizes, padded, seed=0):
    """Random normalized images of `sizes` (h, w), zero-padded to `padded`, with their masks."""
    rng = np.random.default_rng(seed)
    images = np.zeros((len(sizes), 3, *padded), np.float32)
    masks = np.ones((len(sizes), *padded), bool)
    for i, (h, w) in enumerate(sizes):
        images[i, :, :h, :w] = rng.standard_normal((3, h, w))
        masks[i, :h, :w] = False
    return images, masks


# Outputs per query slot: (batch axis, tolerance); the slot axis follows the batch axis.
PER_SLOT = {"logits": (0, LOGIT_ATOL), "proposal_logits": (0, LOGIT_ATOL), "boxes": (0, BOX_ATOL),
            "references": (1, BOX_ATOL), "layer_boxes": (1, BOX_ATOL), "sampling_locations": (1, BOX_ATOL),
            "attention_weights": (1, WEIGHT_ATOL)}


def compare(graph, detector, images, masks, tie_atol: float = 0.0) -> dict[str, float]:
    """Run PyTorch and ONNX Runtime on one batch, assert that they agree, return the differences.

    The encoder's top-k selections are compared as sets: with `tie_atol` > 0 a member may be in one
    only if it scores within `tie_atol` of the other's cut-off; with 0 they must be equal, in the
    same order. The decoder starts each query slot from its selected token, so its outputs are
    compared slot by slot against PyTorch teacher-forced with ONNX Runtime's selection (as the
    parity tests do), and the detections as sets (named by token and class) with the same rule.
    """
    def run_torch(topk=None):
        with torch.inference_mode():
            outputs = graph(torch.from_numpy(images), torch.from_numpy(masks), topk)
        return dict(zip(names, (t.numpy() for t in outputs)))

    names = [spec.name for spec in detector.info.outputs]
    onnx_run = dict(zip(names, detector.session.run(None, {"images": images, "masks": masks})))
    free = run_torch()
    same_order = np.array_equal(free["topk_indices"], onnx_run["topk_indices"])
    forced = free if same_order else run_torch(torch.from_numpy(onnx_run["topk_indices"]))
    for name, array in free.items():
        assert array.shape == onnx_run[name].shape, name
    np.testing.assert_array_equal(free["spatial_shapes"], onnx_run["spatial_shapes"])
    assert same_order or tie_atol > 0
    diffs = {"selection_differences": 0, "detection_differences": 0}
    for i in range(len(images)):
        selections = [dict(zip(run["topk_indices"][i].tolist(), run["proposal_logits"][i].max(-1).tolist()))
                      for run in (free, onnx_run)]
        diffs["selection_differences"] += assert_same_top(*selections, tie_atol)
        detections = [detection_set(run, i) for run in (forced, onnx_run)]
        diffs["detection_differences"] += assert_same_top(*detections, tie_atol)
        common = detections[0].keys() & detections[1].keys()
        diffs["scores"] = max(diffs.get("scores", 0.0), max(abs(detections[0][k] - detections[1][k]) for k in common))
    for name, (_, atol) in PER_SLOT.items():
        diffs[name] = float(np.abs(forced[name] - onnx_run[name]).max())
        assert diffs[name] <= atol, (name, diffs[name])
    assert diffs["scores"] <= WEIGHT_ATOL
    return diffs


def detection_set(run: dict, image: int) -> dict:
    """{(encoder token of the query slot, class): score} of one image's detections."""
    tokens = run["topk_indices"][image][run["query_slot"][image]]
    return dict(zip(zip(tokens.tolist(), run["labels"][image].tolist()), run["scores"][image].tolist()))


def assert_same_top(expected: dict, actual: dict, tie_atol: float) -> int:
    """Two top-k selections ({member: score}) hold the same members, but for members that score
    within `tie_atol` of the other selection's lowest score (ties at the cut-off). Returns how many
    members are in one only."""
    assert len(expected) == len(actual)
    cut = {"expected": min(expected.values()), "actual": min(actual.values())}
    only_expected = {k: v for k, v in expected.items() if k not in actual}
    only_actual = {k: v for k, v in actual.items() if k not in expected}
    assert all(v <= cut["actual"] + tie_atol for v in only_expected.values()), (only_expected, cut)
    assert all(v <= cut["expected"] + tie_atol for v in only_actual.values()), (only_actual, cut)
    return len(only_expected)


def test_file_is_standard_onnx_with_our_metadata(tiny):
    _, detector = tiny
    model = onnx.load(detector.path, load_external_data=False)
    onnx.checker.check_model(model, full_check=True)
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
    assert "GridSample" in {node.op_type for node in model.graph.node}
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 16
    props = {p.key: p.value for p in model.metadata_props}
    assert props["dino_explorer.format"] == FORMAT and props["variant"] == "dino-tiny"
    assert json.loads(props["class_names"])[:2] == ["circle", "square"]
    assert json.loads(props["category_ids"]) == list(range(1, 9))
    rule = json.loads(props["input_size_rule"])
    assert (rule["min_size"], rule["max_size"], rule["canvas"]) == (256, 512, None)
    assert json.loads(props["normalization"])["mean"] == [0.485, 0.456, 0.406]
    assert [i.name for i in model.graph.input] == ["images", "masks"]
    assert [o.name for o in model.graph.output] == [s.name for s in OUTPUTS + INTERNAL_OUTPUTS]
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))


@pytest.mark.parametrize("sizes", [[(256, 320)], [(300, 260), (280, 200)]], ids=["1x256x320", "2x300x260-padded"])
def test_dynamic_shipped_model_matches_pytorch(tiny, sizes):
    graph, detector = tiny
    padded = tuple(max(s[i] for s in sizes) for i in (0, 1))
    diffs = compare(graph, detector, *padded_batch(sizes, padded))
    assert diffs["selection_differences"] == diffs["detection_differences"] == 0


def test_fixed_r50_matches_pytorch(r50):
    graph, detector = r50
    assert detector.info.canvas == R50_CANVAS and detector.info.config.name == "dino-4scale-r50"
    compare(graph, detector, *padded_batch([(240, 320)], R50_CANVAS, seed=1), tie_atol=R50_TIE_ATOL)


def test_fixed_canvas_fits_every_image(r50):
    _, detector = r50
    rng = np.random.default_rng(2)
    portrait, landscape = (rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((480, 200), (400, 600)))
    results = detector.run_batch([portrait, landscape])
    assert [r.input_size for r in results] == [(256, 107), (213, 319)]
    assert all(r.padded_size == R50_CANVAS for r in results)
    assert results[0].boxes.shape == (300, 4) and results[0].internals["sampling_locations"].shape[1] == 1


def test_detect_onnx_writes_what_detect_writes_without_torch(tiny, tmp_path):
    _, detector = tiny
    onnx_out, torch_out = tmp_path / "onnx", tmp_path / "torch"
    args = [*map(str, PHOTOS), "--threshold", "0.05"]
    code = ("import json, sys\n"
            "from dino_demo.cli import main\n"
            f"code = main(['detect', '--onnx', {str(detector.path)!r}, *{args!r}, "
            f"'--out', {str(onnx_out)!r}])\n"
            "print(json.dumps({'code': code, 'torch': [m for m in sys.modules if m.split('.')[0] == 'torch']}))\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "torch": []}
    assert cli_main(["detect", *args, "--out", str(torch_out)]) == 0

    from_onnx = json.loads((onnx_out / "detections.json").read_text())
    from_torch = json.loads((torch_out / "detections.json").read_text())
    assert from_onnx["schema"] == from_torch["schema"] and from_onnx["settings"] == from_torch["settings"]
    assert from_onnx["model"]["variant"] == from_torch["model"]["variant"] == "dino-tiny"
    assert len(from_onnx["images"]) == len(PHOTOS)
    count = 0
    for a, b in zip(from_onnx["images"], from_torch["images"]):
        assert {k: v for k, v in a.items() if k != "detections"} == {k: v for k, v in b.items() if k != "detections"}
        by_key = [{(d["label"], d["category_id"], d["query_slot"]): d for d in image["detections"]} for image in (a, b)]
        assert by_key[0].keys() == by_key[1].keys()
        for key, d in by_key[0].items():
            e = by_key[1][key]
            assert abs(d["score"] - e["score"]) <= 2e-5
            assert np.abs(np.subtract(d["box_xyxy"], e["box_xyxy"])).max() <= 0.05
        count += len(by_key[0])
    assert count > 0


def test_a_foreign_file_is_refused(tmp_path, capsys):
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([node], "g", [value("x", onnx.TensorProto.FLOAT, [1])],
                                   [value("y", onnx.TensorProto.FLOAT, [1])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(onnx.helper.make_model(graph), foreign)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match="not a DINO Explorer ONNX export"):
        OnnxDetector(foreign)
    with pytest.raises(ValueError, match="not an ONNX model"):
        OnnxDetector(garbage)
    assert cli_main(["detect", "--onnx", str(foreign), str(PHOTOS[0]), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: foreign.onnx is not a DINO Explorer ONNX export")


def test_dynamic_file_refuses_inputs_below_its_range(tiny):
    _, detector = tiny
    assert detector.info.min_side > 32
    with pytest.raises(ValueError, match="at least"):
        detector.input_size(100, 200, max_size=64)  # 32 x 64
