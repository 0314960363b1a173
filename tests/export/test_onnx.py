"""The ONNX export against the PyTorch model it came from: every output under ONNX Runtime, the
encoder's top-k selection, the detections, and `detect --onnx` (which must not import torch)
against `detect`.

Two exports, the tests marked slow: the shipped model with --dynamic --internals, and a
random-weight R50 for a fixed, reduced input with --internals.
"""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from dino_demo import get_config
from dino_demo.cli import main as cli_main
from dino_demo.explore.models import build
from dino_demo.export.metadata import FORMAT, INTERNAL_OUTPUTS, OUTPUTS, ExportInfo
from dino_demo.export.onnx import DetectorGraph, export_onnx
from dino_demo.export.runtime import OnnxDetector
from dino_demo.sources.checkpoint import DEFAULT_CHECKPOINT
from dino_demo.io.images import load_image
from dino_demo.io.model_input import prepare_arrays
from dino_demo.parity.recipe import recipe_state_dict
from dino_demo.paths import EXAMPLES_DIR

from conftest import ROOT

BOX_ATOL = 1e-4        # boxes, references, sampling locations, detection boxes (normalized)
LOGIT_ATOL = 1e-3      # class logits
WEIGHT_ATOL = 1e-4     # attention weights, scores
R50_CANVAS = (256, 320)
# Scores that tie (flat image regions give identical tokens; random weights give scores within
# float noise of each other) may fall on either side of a top-k cut-off: members of one selection
# only must score within this of the other's cut-off.
TIE_ATOL = 1e-5
PHOTOS = sorted(EXAMPLES_DIR.glob("*.png"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(PyTorch graph, ONNX Runtime detector) of the shipped model, dynamic, with internals, GridSample."""
    model, _ = build(str(DEFAULT_CHECKPOINT))
    path = tmp_path_factory.mktemp("onnx") / "dino-tiny.onnx"
    export_onnx(model, path, internals=True, source=DEFAULT_CHECKPOINT.name, sampling="grid-sample")
    return DetectorGraph(model, internals=True).eval(), OnnxDetector(path)


@pytest.fixture(scope="module")
def r50(tmp_path_factory):
    """(PyTorch graph, ONNX Runtime detector) of a 4-scale R50 with the parity kit's random
    weights (every weight random, unlike a fresh model's zero sampling offsets), fixed canvas, GridSample."""
    model, _ = build("untrained:dino-4scale-r50")
    model.load_state_dict(recipe_state_dict(model.state_dict()), strict=True)
    path = tmp_path_factory.mktemp("onnx") / "r50.onnx"
    export_onnx(model, path, canvas=R50_CANVAS, internals=True, source="parity recipe", sampling="grid-sample")
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


# Outputs per query slot, with their tolerances.
PER_SLOT = {"logits": LOGIT_ATOL, "proposal_logits": LOGIT_ATOL, "boxes": BOX_ATOL, "references": BOX_ATOL,
            "layer_boxes": BOX_ATOL, "sampling_locations": BOX_ATOL, "attention_weights": WEIGHT_ATOL}


def compare(graph, detector, images, masks) -> dict[str, float]:
    """Run PyTorch and ONNX Runtime on one batch, assert that they agree, return the differences.

    The encoder's top-k selections are compared as sets, equal but for ties at the cut-off
    (`TIE_ATOL`). Scores equal to float noise may also rank in another order, and the decoder
    starts each query slot from its selected token, so where the orders differ its outputs are
    compared slot by slot against PyTorch teacher-forced with ONNX Runtime's selection (as the
    parity tests do); the detections as sets (named by token and class), with the same rule.
    """
    def run_torch(topk=None):
        with torch.inference_mode():
            outputs = graph(torch.from_numpy(images), torch.from_numpy(masks), topk)
        return dict(zip(names, (t.numpy() for t in outputs)))

    names = [spec.name for spec in detector.info.outputs]
    onnx_run = dict(zip(names, detector.session.run({"images": images, "masks": masks})))
    free = run_torch()
    same_order = np.array_equal(free["topk_indices"], onnx_run["topk_indices"])
    forced = free if same_order else run_torch(torch.from_numpy(onnx_run["topk_indices"]))
    for name, array in free.items():
        assert array.shape == onnx_run[name].shape, name
    np.testing.assert_array_equal(free["spatial_shapes"], onnx_run["spatial_shapes"])
    diffs = {"selection_differences": 0, "detection_differences": 0, "scores": 0.0}
    for i in range(len(images)):
        selections = [dict(zip(run["topk_indices"][i].tolist(), run["proposal_logits"][i].max(-1).tolist()))
                      for run in (free, onnx_run)]
        diffs["selection_differences"] += assert_same_top(*selections)
        detections = [detection_set(run, i) for run in (forced, onnx_run)]
        diffs["detection_differences"] += assert_same_top(*detections)
        common = detections[0].keys() & detections[1].keys()
        diffs["scores"] = max([diffs["scores"], *(abs(detections[0][k] - detections[1][k]) for k in common)])
    for name, atol in PER_SLOT.items():
        diffs[name] = float(np.abs(forced[name] - onnx_run[name]).max())
        assert diffs[name] <= atol, (name, diffs[name])
    assert diffs["scores"] <= WEIGHT_ATOL
    return diffs


def detection_set(run: dict, image: int) -> dict:
    """{(encoder token of the query slot, class): score} of one image's detections."""
    tokens = run["topk_indices"][image][run["query_slot"][image]]
    return dict(zip(zip(tokens.tolist(), run["labels"][image].tolist()), run["scores"][image].tolist()))


def assert_same_top(expected: dict, actual: dict) -> int:
    """Two top-k selections ({member: score}) hold the same members, but for members that score
    within `TIE_ATOL` of the other selection's lowest score (ties at the cut-off). Returns how many
    members are in one only."""
    assert len(expected) == len(actual)
    cut = {"expected": min(expected.values()), "actual": min(actual.values())}
    only_expected = {k: v for k, v in expected.items() if k not in actual}
    only_actual = {k: v for k, v in actual.items() if k not in expected}
    assert all(v <= cut["actual"] + TIE_ATOL for v in only_expected.values()), (only_expected, cut)
    assert all(v <= cut["expected"] + TIE_ATOL for v in only_actual.values()), (only_actual, cut)
    return len(only_expected)


@pytest.mark.slow
def test_file_is_standard_onnx_with_our_metadata(tiny):
    _, detector = tiny
    model = onnx.load(detector.path, load_external_data=False)
    onnx.checker.check_model(model, full_check=True)
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
    ops = {node.op_type for node in model.graph.node}
    assert "GridSample" in ops and not {op for op in ops if "Sequence" in op}  # no sequences: TensorRT has none
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


@pytest.mark.slow
@pytest.mark.parametrize("names, max_size", [
    (["chelsea.png"], None),                            # 1 x 256 x 384
    (["shapes-90210-8.png", "rocket.jpg"], None),       # 2 x 256 x 383, the first padded
    (["coffee.png"], 200),                              # 1 x 133 x 200
], ids=["chelsea", "shapes+rocket", "coffee-200"])
def test_dynamic_shipped_model_matches_pytorch(tiny, names, max_size):
    graph, detector = tiny
    batch = prepare_arrays([load_image(EXAMPLES_DIR / name).array for name in names], detector.info.config, max_size)
    compare(graph, detector, batch.images, batch.masks)


@pytest.mark.slow
def test_fixed_r50_matches_pytorch(r50):
    graph, detector = r50
    assert detector.info.canvas == R50_CANVAS and detector.info.config.name == "dino-4scale-r50"
    compare(graph, detector, *padded_batch([(240, 320)], R50_CANVAS, seed=1))


@pytest.mark.slow
def test_fixed_canvas_fits_every_image(r50):
    _, detector = r50
    rng = np.random.default_rng(2)
    portrait, landscape = (rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((480, 200), (400, 600)))
    results = detector.run_batch([portrait, landscape])
    assert [r.input_size for r in results] == [(256, 107), (213, 319)]
    assert all(r.padded_size == R50_CANVAS for r in results)
    assert results[0].boxes.shape == (300, 4) and results[0].internals["sampling_locations"].shape[1] == 1


@pytest.mark.slow
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
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
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
        assert len(a["detections"]) == len(b["detections"])
        unmatched = list(b["detections"])
        for d in a["detections"]:  # tied query slots may trade places: match by class, score and box
            match = next((e for e in unmatched if e["label"] == d["label"] and abs(e["score"] - d["score"]) <= 2e-5
                          and np.abs(np.subtract(e["box_xyxy"], d["box_xyxy"])).max() <= 0.05), None)
            assert match is not None, (a["file_name"], d)
            unmatched.remove(match)
        count += len(a["detections"])
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


def test_metadata_reads_back_and_bounds_the_input():
    info = ExportInfo(config=get_config("dino-tiny"), source="dino-tiny.pth", internals=True, canvas=None,
                      min_side=65, exporter="test")
    assert ExportInfo.from_properties(info.properties()) == info
    assert info.input_size(300, 400) == (256, 341)
    with pytest.raises(ValueError, match="at least 65"):
        info.input_size(100, 200, max_size=64)  # 32 x 64
    fixed = dataclasses.replace(info, canvas=(256, 320), min_side=256)
    assert fixed.input_size(300, 400) == (240, 320)
    with pytest.raises(ValueError, match="not a DINO Explorer ONNX export"):
        ExportInfo.from_properties({"producer": "someone else"})
