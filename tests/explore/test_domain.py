"""A model of the eight synthetic shapes run on a photo says so: the library's decision
(`explore.domain`), the command line's warning, the page's status and the API's detections.json."""
import logging
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from dino_demo.explore import domain
from dino_demo.paths import EXAMPLES_DIR
from dino_demo.sources.checkpoint import DEFAULT_CHECKPOINT
from dino_demo.train.synthetic import CLASS_NAMES, SceneSpec, generate_scene

PHOTOS = sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix in (".png", ".jpg") and not p.name.startswith("shapes"))
SCENE = EXAMPLES_DIR / "shapes-90210-9.png"
SHIPPED = "dino-tiny (shipped)"
needs_weights = pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason="weights/dino-tiny.pth not present")


def _rgb(path):
    return np.asarray(Image.open(path).convert("RGB"))


def _result(image, model_id=SHIPPED, class_names=CLASS_NAMES):
    return SimpleNamespace(image=image, model_id=model_id, class_names=class_names)


@pytest.mark.parametrize("seed, index, size, objects", [(0, 0, 256, 6), (1000, 3, 64, 1), (7, 2, 640, 12),
                                                         (90210, 9, 320, 6), (3, 5, 97, 3)])
def test_synthetic_scenes_of_any_size_are_recognised(seed, index, size, objects):
    image = generate_scene(seed, index, SceneSpec(size=size, max_objects=objects)).image
    assert domain.looks_like_synthetic_scene(image)


def test_photos_drawings_and_flat_or_noise_images_are_not_scenes():
    assert len(PHOTOS) >= 4
    for path in PHOTOS:
        assert not domain.looks_like_synthetic_scene(_rgb(path)), path.name
        assert domain.chroma_noise(_rgb(path)) < 2.0  # 5x below a scene's 6
    rng = np.random.default_rng(0)
    for image in (np.full((64, 80, 3), 128, np.uint8), rng.integers(0, 256, (64, 80, 3), dtype=np.uint8),
                  np.zeros((2, 2, 3), np.uint8)):
        assert not domain.looks_like_synthetic_scene(image)
    # A photo of 4000 x 3000 pixels is read from its centre only.
    large = np.asarray(Image.fromarray(_rgb(PHOTOS[0])).resize((4000, 3000)))
    assert not domain.looks_like_synthetic_scene(large)
    with pytest.raises(ValueError, match="RGB"):
        domain.chroma_noise(np.zeros((8, 8), np.uint8))


def test_the_note_is_for_models_of_the_synthetic_shapes_on_other_images():
    photo, scene = _rgb(PHOTOS[0]), _rgb(SCENE)
    note = domain.synthetic_model_note(_result(photo), domain.CLI_REMEDY)
    assert note.startswith("This model knows only eight synthetic shapes")
    assert "--checkpoint zoo:dino-4scale-r50" in note and "docs/zoo.md" in note
    assert "zoo:dino-4scale-r50" in domain.synthetic_model_note(_result(photo), domain.APP_REMEDY)
    assert domain.synthetic_model_note(_result(photo, "my-shapes.pth"), "x").startswith("This model knows")
    assert domain.synthetic_model_note(_result(scene), domain.CLI_REMEDY) is None
    assert domain.synthetic_model_note(_result(photo, "untrained:dino-tiny"), "x") is None  # knows nothing
    assert domain.synthetic_model_note(_result(photo, "dino-4scale-r50", ("person", "cat")), "x") is None
    assert domain.synthetic_model_note(_result(None), "x") is None  # a stored result: decided before


@pytest.mark.slow
@needs_weights
def test_cli_detect_with_the_shipped_model_on_photos_warns_once(tmp_path, caplog):
    import json

    from dino_demo.cli import main

    photos = [tmp_path / "a.png", tmp_path / "b.png"]
    for path, source in zip(photos, PHOTOS):
        Image.open(source).convert("RGB").resize((128, 96)).save(path)
    photos.append(SCENE)
    with caplog.at_level(logging.INFO):
        assert main(["detect", *map(str, photos), "--out", str(tmp_path / "out")]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "synthetic" in warnings[0] and "zoo:dino-4scale-r50" in warnings[0]
    images = json.loads((tmp_path / "out" / "detections.json").read_text())["images"]
    assert ["notes" in image for image in images] == [True, True, False]


@pytest.mark.slow
@needs_weights
def test_cli_detect_on_a_photo_writes_synthetic_to_stderr(tmp_path):
    """The interface: `python -m dino_demo detect IMG` with the shipped model on a photo."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    photo = tmp_path / "photo.png"
    Image.open(PHOTOS[0]).convert("RGB").resize((128, 96)).save(photo)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-m", "dino_demo", "detect", str(photo), "--out", str(tmp_path / "o")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sum("synthetic" in line for line in done.stderr.splitlines()) == 1


@pytest.mark.slow
@needs_weights
def test_the_page_status_says_so():
    """The page's Detect status (`panels.notice_markdown`) shows what the stored result noted while it
    still had its image."""
    from dino_demo.explore import panels
    from dino_demo.explore.stored import StoredResult
    from dino_demo.runtime import load_detector
    from dino_demo.runtime.detections import detection_view

    detector = load_detector("shipped").named(SHIPPED)
    photo = np.asarray(Image.fromarray(_rgb(PHOTOS[0])).resize((160, 120)))
    for image, said in ((photo, True), (_rgb(SCENE), False)):
        stored = StoredResult.of(detector.run(image))
        notice = panels.notice_markdown(stored, detection_view(stored.result, 0.3), 0.3, False)
        assert ("synthetic shapes" in notice) is said and ("dino-4scale-r50 in the Model menu" in notice) is said
        assert len(stored.notes) == int(said)


@pytest.mark.slow
@needs_weights
def test_the_api_says_so_in_detections_json(url, tmp_path):
    gradio_client = pytest.importorskip("gradio_client")

    photo = tmp_path / "photo.png"
    Image.open(PHOTOS[0]).convert("RGB").resize((160, 120)).save(photo)
    client = gradio_client.Client(url, verbose=False)
    for path, said in ((photo, True), (SCENE, False)):
        _, document = client.predict(gradio_client.handle_file(str(path)), "shipped", "", "auto", 256, 0.3, 20,
                                     api_name="/detect")
        (image,) = document["images"]
        assert ("notes" in image) is said
        if said:
            assert len(image["notes"]) == 1 and "synthetic" in image["notes"][0]
