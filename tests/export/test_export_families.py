"""ONNX export of the transformers families and Gather-based sampling: tiny seeded models of each
family (tests/support/family_models.py, every weight perturbed so that no scores tie), exported both ways,
run in ONNX Runtime and OpenVINO, compared with the PyTorch path."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import transformers

from conftest import ROOT
from dino_demo import ops
from dino_demo.export.engines import open_session
from dino_demo.export.family_metadata import FamilyExportInfo, write_processor_files
from dino_demo.export.family_runtime import FamilyOnnxDetector, open_detector, top_detections
from dino_demo.ops.gather import ms_deform_attn_gather
from dino_demo.ops.reference import ms_deform_attn_reference
from family_models import save_spread, save_tiny

RUNTIMES = ("onnxruntime", "openvino")
SCORE_ATOL = 1e-4
BOX_ATOL = 1e-2         # pixels of a 256 x 384 image
LOCATION_ATOL = 1e-4
IMAGE_SHAPE = (256, 384, 3)  # resized to 128 x 192 by the tiny padding processors: their canvas exactly


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, IMAGE_SHAPE, dtype=np.uint8)


def _infer(folder: Path, image: np.ndarray, prompt: str | None):
    """The PyTorch path (`Detector.run`) on a transformers folder."""
    from dino_demo.explore.models import load

    return load(str(folder), None, "cpu").run(image, prompt=prompt, internals=True)


# fast --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gather_sampling_equals_the_reference_op(dtype):
    generator = torch.Generator().manual_seed(0)
    shapes = [(7, 9), (4, 5), (1, 3)]
    spatial = torch.tensor(shapes)
    start = torch.cat([spatial.new_zeros(1), spatial.prod(1).cumsum(0)[:-1]])
    tokens = int(spatial.prod(1).sum())
    value = torch.randn(2, tokens, 3, 4, generator=generator, dtype=dtype)
    # beyond the edges too: zero padding outside every map, half a cell beyond it still blends
    locations = torch.rand(2, 5, 3, 3, 4, 2, generator=generator, dtype=dtype) * 1.6 - 0.3
    locations[0, 0, 0, :, 0] = torch.tensor([0.0, 0.0], dtype=dtype)        # the corner
    locations[0, 0, 0, :, 1] = torch.tensor([1.0, 1.0], dtype=dtype)        # the far corner
    weights = torch.rand(2, 5, 3, 3, 4, generator=generator, dtype=dtype)
    expected = ms_deform_attn_reference(value, spatial, start, locations, weights)
    torch.testing.assert_close(ms_deform_attn_gather(value, spatial, start, locations, weights), expected,
                               rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-12)
    with ops.use_backend("gather"):
        assert ops.backend("cpu")[0] == "gather"
        torch.testing.assert_close(ops.ms_deform_attn(value, spatial, start, locations, weights), expected,
                                   rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-12)


def test_runtime_choices_are_checked(tmp_path):
    missing = tmp_path / "none.onnx"
    with pytest.raises(ValueError, match="runtime must be one of"):
        open_session(missing, "tensorrt")
    with pytest.raises(ValueError, match="precision must be one of"):
        open_session(missing, "openvino", "float16")
    (tmp_path / "x.onnx").write_bytes(b"not onnx")
    with pytest.raises(ValueError, match="bfloat16 is OpenVINO's"):
        open_session(tmp_path / "x.onnx", "onnxruntime", "bfloat16")
    for runtime in RUNTIMES:
        with pytest.raises(ValueError, match="not an ONNX model"):
            open_session(tmp_path / "x.onnx", runtime)


def test_openvino_reports_the_precision_it_compiled_for(tmp_path):
    """float32 by default, bfloat16 with the hint where the CPU computes it natively (AVX-512 BF16
    or AMX), else float32 whatever the hint."""
    from onnx import TensorProto, helper

    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    weight = helper.make_tensor("w", TensorProto.FLOAT, [8, 8], np.eye(8, dtype=np.float32).ravel().tolist())
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [weight])
    path = tmp_path / "matmul.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert open_session(path, "openvino").precision == "float32"
    assert open_session(path, "openvino", "bfloat16").precision == ("bfloat16" if native else "float32")


def test_slice_assignments_are_captured_as_concatenations():
    """Slice assignments of step 1 (Grounding DINO's text-logit padding) become Concat-able `cat`s with
    the same values, which OpenVINO compiles; other steps stay torch's slice_scatter."""
    from dino_demo.export.families import _DECOMPOSITIONS

    class Assign(torch.nn.Module):
        def forward(self, x, y, z):
            x = x.clone()
            x[:, ::2] = y
            x[..., 1:3] = z
            return x

    inputs = (torch.zeros(2, 6), torch.ones(2, 3), torch.full((2, 2), 5.0))
    table = torch.export.default_decompositions()
    table.update(_DECOMPOSITIONS)
    program = torch.export.export(Assign(), inputs, strict=False).run_decompositions(table)
    targets = [node.target for node in program.graph.nodes if node.op == "call_function"]
    assert targets.count(torch.ops.aten.slice_scatter.default) == 1 and torch.ops.aten.cat.default in targets
    torch.testing.assert_close(program.module()(*inputs), Assign()(*inputs), rtol=0, atol=0)


def test_processor_files_must_be_plain_names(tmp_path):
    with pytest.raises(ValueError, match="plain file name"):
        write_processor_files({"../escape.json": "{}"}, tmp_path)


def test_top_detections_match_transformers_post_processing():
    """The numpy post-processing of fixed-class files equals transformers' DETR-family processor's."""
    generator = torch.Generator().manual_seed(0)
    logits, boxes = torch.randn(1, 12, 5, generator=generator), torch.rand(1, 12, 4, generator=generator) * 0.5 + 0.2
    processor = transformers.DeformableDetrImageProcessor()
    expected = processor.post_process_object_detection(
        type("Out", (), {"logits": logits, "pred_boxes": boxes})(), threshold=0.0, target_sizes=[(30, 40)], top_k=7)[0]
    scores, labels, corners, slots = top_detections(logits[0].numpy(), boxes[0].numpy(), (30, 40), 7)
    np.testing.assert_allclose(scores, expected["scores"].numpy(), atol=1e-6)
    np.testing.assert_array_equal(labels, expected["labels"].numpy())
    np.testing.assert_allclose(corners, expected["boxes"].numpy(), atol=1e-4)
    assert slots.shape == (7,)


# slow: real exports -----------------------------------------------------------------------------

EXPORTED = ("deformable-detr", "deformable-detr-two-stage", "grounding-dino", "mm-grounding-dino", "rt-detr", "rt-detr-v2",
            "d-fine", "lw-detr", "rf-detr")
# the families with a deformable encoder (the others' encoders are plain attention, or none)
DEFORMABLE_ENCODERS = ("deformable-detr", "deformable-detr-two-stage", "grounding-dino", "mm-grounding-dino")
DYNAMIC = ("deformable-detr-two-stage", "grounding-dino")  # one of each kind of deformable encoder


def _encoder_internals(result) -> tuple[np.ndarray, np.ndarray]:
    """The exported encoder's sampling locations [E, 1, S, M, L, P, 2] and weights [E, 1, S, M, L, P]."""
    internals = result.internals
    return internals["encoder_sampling_locations"], internals["encoder_attention_weights"]


def _pytorch_encoder(folder: Path, detector: FamilyOnnxDetector, prompt: str | None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The same encoder internals from transformers' model in PyTorch, recorded on every token's
    row by the explorer's own hooks (`families.capture`), for the inputs the ONNX file was fed."""
    from dino_demo.families.capture import Recorder, recording
    from dino_demo.families.load import load

    feeds, _, _ = detector._inputs(_image(), prompt, None)
    tokens = detector.run(_image(), prompt=prompt).internals["encoder_sampling_locations"].shape[2]
    with torch.no_grad(), recording(Recorder(encoder_rows=torch.arange(tokens))) as recorder:
        load(str(folder), fast=False).model(**{key: torch.from_numpy(value) for key, value in feeds.items()})
    return torch.stack(recorder.encoder_locations).numpy(), torch.stack(recorder.encoder_weights).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (folder, {sampling: ONNX file}) made on first use (exports take a minute or more)."""
    from dino_demo.export.families import export_family
    from dino_demo.families.load import load

    for noisy in ("onnx_ir", "onnxscript"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    root, files = tmp_path_factory.mktemp("families"), {}

    def make(name: str, sampling: str = "gather", dynamic: bool = False) -> tuple[Path, Path]:
        if name not in files:
            files[name] = (save_spread(name, root / name), {})
        folder, paths = files[name]
        if (sampling, dynamic) not in paths:
            paths[sampling, dynamic] = root / f"{name}-{sampling}{'-dynamic' if dynamic else ''}.onnx"
            export_family(load(str(folder), fast=False), paths[sampling, dynamic], sampling=sampling, internals=True,
                          source=name, dynamic=dynamic)
        return folder, paths[sampling, dynamic]

    return make


def _compare(result, reference, *, locations: bool = True) -> None:
    detections = reference.detections
    np.testing.assert_array_equal(result.labels, detections.labels.numpy())
    np.testing.assert_array_equal(result.query_slot, detections.query_slot.numpy())
    np.testing.assert_allclose(result.scores, detections.scores.numpy(), atol=SCORE_ATOL, rtol=0)
    np.testing.assert_allclose(result.boxes, detections.boxes.numpy(), atol=BOX_ATOL, rtol=0)
    assert result.class_names == reference.class_names
    if locations:
        output = reference.output
        np.testing.assert_allclose(result.internals["sampling_locations"], output.sampling_locations.numpy(),
                                   atol=LOCATION_ATOL, rtol=0, equal_nan=True)
        np.testing.assert_allclose(result.internals["attention_weights"], output.attention_weights.numpy(),
                                   atol=LOCATION_ATOL, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPORTED)
def test_gather_export_runs_like_pytorch_in_both_runtimes(exported, name):
    folder, path = exported(name)
    graph = onnx.load(str(path), load_external_data=False)
    kinds = {node.op_type for node in graph.graph.node}
    assert "GridSample" not in kinds and "GatherElements" in kinds
    assert {node.domain for node in graph.graph.node} <= {"", "ai.onnx"}
    prompt = "cat . remote control ." if "grounding" in name else None
    reference = _infer(folder, _image(), prompt)
    for runtime in RUNTIMES:
        detector = open_detector(path, runtime=runtime)
        assert isinstance(detector, FamilyOnnxDetector) and detector.session.precision == "float32"
        result = detector.run(_image(), prompt=prompt)
        _compare(result, reference)
        if name in DEFORMABLE_ENCODERS:
            for found, expected in zip(_encoder_internals(result), _pytorch_encoder(folder, detector, prompt)):
                np.testing.assert_allclose(found, expected, atol=LOCATION_ATOL, rtol=0)
        else:
            assert "encoder_sampling_locations" not in result.internals


@pytest.mark.slow
@pytest.mark.parametrize("name", DYNAMIC)
def test_dynamic_export_runs_two_sizes_like_pytorch(exported, name):
    """One dynamic file takes a landscape and a portrait image at the sizes the processor makes
    (128 x 192 and 192 x 128, unpadded) and agrees with PyTorch at both, in both runtimes."""
    folder, path = exported(name, dynamic=True)
    graph = onnx.load(str(path), load_external_data=False)
    height, width = graph.graph.input[0].type.tensor_type.shape.dim[2:]
    assert height.dim_param and width.dim_param            # symbolic in the file
    prompt = "cat . remote control ." if "grounding" in name else None
    images = (_image(), np.random.default_rng(2).integers(0, 255, (300, 200, 3), dtype=np.uint8))
    references = [_infer(folder, image, prompt) for image in images]
    for runtime in RUNTIMES:
        detector = open_detector(path, runtime=runtime)
        assert detector.info.dynamic and detector.info.min_side > 0
        sizes = set()
        for image, reference in zip(images, references):
            result = detector.run(image, prompt=prompt)
            assert result.padded_size == result.input_size
            sizes.add(result.input_size)
            _compare(result, reference)
        assert sizes == {(128, 192), (192, 128)}


def test_dynamic_export_is_refused_for_fixed_size_processors(tmp_path):
    from dino_demo.export.families import export_family
    from dino_demo.families.load import load

    handle = load(str(save_tiny("rt-detr", tmp_path / "rt-detr")), fast=False)
    with pytest.raises(ValueError, match="resizes every image to 64x64.*a dynamic size would serve no image"):
        export_family(handle, tmp_path / "m.onnx", dynamic=True)
    with pytest.raises(ValueError, match="not both"):
        export_family(handle, tmp_path / "m.onnx", dynamic=True, canvas=(64, 64))


@pytest.mark.slow
def test_grid_sample_export_holds_grid_sample_and_agrees(exported):
    folder, path = exported("rt-detr-v2", "grid-sample")
    assert "GridSample" in {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}
    reference = _infer(folder, _image(1), None)
    for runtime in RUNTIMES:
        _compare(open_detector(path, runtime=runtime).run(_image(1)), reference)


@pytest.mark.slow
def test_one_grounding_dino_file_serves_any_prompt(exported):
    folder, path = exported("grounding-dino")
    info = FamilyExportInfo.from_properties(open_session(path).properties)
    assert info.inputs == ("pixel_values", "pixel_mask", "input_ids", "attention_mask", "token_type_ids")
    assert "vocab.txt" in info.files or "tokenizer.json" in info.files
    prompts = ("cat . dog .", "a red ball . the couch . person .")
    references = {prompt: _infer(folder, _image(), prompt) for prompt in prompts}
    for runtime in RUNTIMES:  # OpenVINO: the text logits' padding is a Concat (export.families._slice_scatter)
        detector = open_detector(path, runtime=runtime)
        results = {}
        for prompt in prompts:
            results[prompt] = detector.run(_image(), prompt=prompt)
            _compare(results[prompt], references[prompt])
        first, second = results.values()
        assert first.class_names[:2] == ("cat", "dog")
        assert second.class_names[:3] == ("a red ball", "the couch", "person")
        assert not np.allclose(first.scores, second.scores)
        with pytest.raises(ValueError, match="give one"):
            detector.run(_image(), prompt="")


@pytest.mark.slow
def test_export_and_detect_commands(exported, tmp_path):
    """`export --checkpoint FOLDER --sampling gather` and `detect --onnx --runtime R` write the
    detections.json that `detect --checkpoint FOLDER` writes (scores and boxes within tolerance)."""
    folder, _ = exported("d-fine")
    image = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(_image()).save(image)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    command = [sys.executable, "-m", "dino_demo"]
    model = tmp_path / "m.onnx"
    subprocess.run(command + ["export", "--checkpoint", str(folder), "--sampling", "gather", "--out", str(model)],
                   check=True, env=env, cwd=ROOT, capture_output=True)
    assert "GridSample" not in {node.op_type for node in onnx.load(str(model)).graph.node}
    documents = {}
    for runtime in RUNTIMES + ("pytorch",):
        source = ["--checkpoint", str(folder)] if runtime == "pytorch" else ["--onnx", str(model), "--runtime", runtime]
        out = tmp_path / runtime
        subprocess.run(command + ["detect", str(image), *source, "--threshold", "0.05", "--out", str(out)],
                       check=True, env=env, cwd=ROOT, capture_output=True)
        documents[runtime] = json.loads((out / "detections.json").read_text())["images"][0]["detections"]
    expected = documents.pop("pytorch")
    assert expected
    for runtime, found in documents.items():
        assert [d["category_id"] for d in found] == [d["category_id"] for d in expected], runtime
        np.testing.assert_allclose([d["score"] for d in found], [d["score"] for d in expected], atol=1e-3)
        np.testing.assert_allclose([d["bbox"] for d in found], [d["bbox"] for d in expected], atol=0.05)
