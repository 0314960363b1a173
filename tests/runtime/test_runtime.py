"""The runtime (dino_demo/runtime/): every kind of model source gives a `Detector` through one
registry, each detector says what it offers, and nothing above the runtime tests types."""
from __future__ import annotations

import ast
import re

import numpy as np
import pytest
import torch

from dino_demo.runtime import Detector, InferenceResult, Offers, load_detector, register
from dino_demo.runtime import dino, dino_encoder, registry
from dino_demo.sources.checkpoint import DEFAULT_CHECKPOINT
from dino_demo.sources.source import Source, SourceKind

from conftest import ROOT

PACKAGE = ROOT / "dino_demo"
IMAGE = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
# The floors above the runtime, and the floors below it (sources, io, model, ops) that must not
# reach above it either.
ABOVE = ("explore", "train", "export", "families", "ui", "cli")


@pytest.fixture(scope="module")
def tiny():
    return load_detector("untrained:dino-tiny")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    pytest.importorskip("transformers")
    from family_models import save_tiny

    root = tmp_path_factory.mktemp("runtime-families")
    return {name: save_tiny(name, root / name) for name in ("deformable-detr", "deformable-detr-two-stage",
                                                           "grounding-dino", "rt-detr", "lw-detr")}


# -- the registry ----------------------------------------------------------------------------------
def test_every_source_kind_has_one_loader():
    from dino_demo.families import registration

    for kind in (SourceKind.SHIPPED, SourceKind.ZOO, SourceKind.URL, SourceKind.FILE, SourceKind.UNTRAINED):
        assert registry.loader_for(kind) is dino.load
    for kind in (SourceKind.HUB, SourceKind.FOLDER):
        assert registry.loader_for(kind) is registration.load_detector
    assert set(SourceKind) == {SourceKind.SHIPPED, SourceKind.ZOO, SourceKind.URL, SourceKind.FILE,
                               SourceKind.UNTRAINED, SourceKind.HUB, SourceKind.FOLDER}


def test_a_registered_loader_is_the_one_used():
    original = registry.loader_for(SourceKind.URL)
    calls = []

    def stand_in(source, variant, device, progress):
        calls.append((str(source), variant, str(device)))
        return "a detector"

    register([SourceKind.URL], stand_in)
    try:
        assert load_detector("https://example.com/w.pth", variant="dino-tiny") == "a detector"
    finally:
        register([SourceKind.URL], original)
    assert calls == [("https://example.com/w.pth", "dino-tiny", "cpu")]
    assert registry.loader_for(SourceKind.URL) is original


def test_dino_sources_load_dino_detectors(tiny):
    assert isinstance(tiny, Detector) and isinstance(tiny, dino.DINODetector)
    assert tiny.offers == Offers(proposals=True, encoder=True, denoising=True, prompt=False)
    assert tiny.variant == tiny.config.name == "dino-tiny" and tiny.model_id == "untrained:dino-tiny"
    assert not tiny.model.training
    shipped = load_detector(Source.local(DEFAULT_CHECKPOINT))  # a FILE source
    assert shipped.variant == "dino-tiny" and shipped.model_id == DEFAULT_CHECKPOINT.name
    with pytest.raises(ValueError, match="no variant to force"):
        load_detector("hf:org/name", variant="dino-tiny")


def test_a_folder_without_config_is_told_apart(tmp_path):
    with pytest.raises(ValueError, match="folder without config.json"):
        load_detector(tmp_path)


# -- a DINO detector -------------------------------------------------------------------------------
def test_dino_detector_runs_the_one_inference_path(tiny):
    result = tiny.named("mine").run(IMAGE)
    assert isinstance(result, InferenceResult) and result.model_id == "mine" and result.variant == "dino-tiny"
    expected = dino.run(tiny.model, tiny.config, IMAGE)
    torch.testing.assert_close(result.detections.scores, expected.detections.scores)
    assert result.unavailable == {} and result.reason("proposals") is None and result.family is None
    batch = tiny.run_batch([IMAGE, IMAGE[:40]], internals=False)
    assert [r.image_size for r in batch] == [(48, 80), (40, 80)] and batch[0].output is None
    with pytest.raises(ValueError, match="takes no prompt"):
        tiny.run(IMAGE, prompt="cat .")
    with pytest.raises(ValueError, match="at least one image"):
        tiny.run_batch([])


def test_dino_detector_token_attention(tiny):
    from dino_demo.explore import encoder

    result = tiny.run(IMAGE)
    token = encoder.token(result, 0, 1, 2)
    attention = tiny.token_attention(result, token)
    expected = dino_encoder.token_attention(tiny.model, result, [token])[0]
    assert attention.token == token
    torch.testing.assert_close(attention.sampling_locations, expected.sampling_locations)


# -- family detectors ------------------------------------------------------------------------------
@pytest.mark.parametrize("name, proposals, encoder, prompt", [
    ("deformable-detr", False, True, False), ("deformable-detr-two-stage", True, True, False),
    ("grounding-dino", True, True, True), ("rt-detr", True, False, False), ("lw-detr", False, False, False)])
def test_family_detectors_offer_what_their_results_show(folders, name, proposals, encoder, prompt):
    from dino_demo.explore import encoder as tokens

    detector = load_detector(folders[name])
    assert isinstance(detector, Detector)
    assert detector.offers == Offers(proposals=proposals, encoder=encoder, denoising=False, prompt=prompt)
    assert isinstance(detector.model, torch.nn.Module)
    text = "cat . remote control ." if prompt else None
    result = detector.run(IMAGE, prompt=text)
    assert (result.reason("proposals") is None) == proposals
    assert (result.reason("encoder") is None) == encoder
    assert (result.reason("token scores") is None) == prompt
    assert result.model_id == detector.model_id == folders[name].name
    batch = detector.run_batch([IMAGE, IMAGE], prompt=text, internals=False)
    assert len(batch) == 2
    torch.testing.assert_close(batch[1].detections.scores, result.detections.scores)
    token = tokens.token(result, 0, 0, 0)
    if encoder:
        assert detector.token_attention(result, token).token == token
    else:
        with pytest.raises(ValueError, match="encoder"):
            detector.token_attention(result, token)


def test_family_post_processing_goes_through_model_postprocess(folders, monkeypatch):
    from dino_demo.families import inference
    from dino_demo.model import postprocess

    calls = []

    def spy(*args, **kwargs):
        calls.append(args[3])
        return postprocess.postprocess(*args, **kwargs)

    monkeypatch.setattr(inference, "postprocess", spy)
    detector = load_detector(folders["rt-detr"])
    result = detector.run(IMAGE)
    assert calls == [detector.config.num_select] and len(result.detections) == detector.config.num_select


# -- the floors ------------------------------------------------------------------------------------
def _imports(path) -> set[str]:
    """Package-relative module names a file imports ("explore.draw.data", "families", ...)."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(PACKAGE).parts[:-1]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(package[:len(package) - node.level + 1])
            names.add(".".join(base + ([node.module] if node.module else [])))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dino_demo."):
            names.add(node.module.removeprefix("dino_demo."))
        elif isinstance(node, ast.Import):
            names.update(a.name.removeprefix("dino_demo.") for a in node.names if a.name.startswith("dino_demo."))
    return names


@pytest.mark.parametrize("floor", ["runtime", "sources", "io", "model", "ops"])
def test_the_runtime_and_the_floors_below_import_nothing_above(floor):
    offenders = [f"{path.relative_to(PACKAGE)} -> {name}" for path in (PACKAGE / floor).rglob("*.py")
                 for name in _imports(path) if name.split(".")[0] in ABOVE]
    assert offenders == []


def test_no_caller_tests_the_detectors_type():
    """Dispatch on the kind of model lives in the runtime and the model code; everything else asks
    a detector what it offers, or a result why a view does not apply."""
    pattern = re.compile(r"isinstance\([^)]*(DINOConfig|FamilyModel|FamilySettings|DINODetector|FamilyDetector)"
                         r"|\.family is (not )?None|backbone\", \"\"\) == \"transformers\"")
    offenders = [f"{path.relative_to(PACKAGE)}:{number}" for path in PACKAGE.rglob("*.py")
                 if path.relative_to(PACKAGE).parts[0] not in ("runtime", "model", "families")
                 for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []
