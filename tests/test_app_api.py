"""The app's API, through gradio_client, against the app served on 127.0.0.1."""
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

import app  # noqa: E402
from dino_demo.io.checkpoint import DEFAULT_CHECKPOINT, save_checkpoint  # noqa: E402
from dino_demo.model.config import get_config  # noqa: E402
from dino_demo.model.detector import build_model  # noqa: E402
from dino_demo.explore.models import load  # noqa: E402

EXAMPLES = Path(app.__file__).resolve().parent / "examples"
SHIPPED = DEFAULT_CHECKPOINT.is_file()
MODEL = "shipped" if SHIPPED else "untrained:dino-tiny"
# Gradio's own use of pandas warns under pandas 3; not this project's concern.
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")
needs_weights = pytest.mark.skipif(not SHIPPED, reason="shipped weights/dino-tiny.pth not present")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring width x height pixels with (almost) no data: a decompression bomb."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


@pytest.fixture
def client(url):
    return Client(url, verbose=False)


def _detect(client, image, model=MODEL, threshold=0.0, max_detections=20, max_input=1333,
            checkpoint="", variant="auto"):
    return client.predict(handle_file(str(image)), model, checkpoint, variant, max_input, threshold, max_detections,
                          api_name="/detect")


def _inspect(client, slot, layer, head="all", level="all", color_by="level"):
    return client.predict(slot, layer, head, level, color_by, api_name="/inspect")


def test_detect_on_a_photo(client):
    image_path, result = _detect(client, EXAMPLES / "chelsea.png")
    with Image.open(image_path) as drawn:
        assert drawn.size == (902, 600)  # small images are drawn enlarged x2
    assert result["image"] == {"file_name": "chelsea.png", "width": 451, "height": 300}
    assert result["model_id"]
    detections = result["detections"]
    assert 0 < len(detections) <= 20
    for d in detections:
        assert set(d) == {"label", "category_id", "score", "box_xyxy", "query_slot"}
        assert isinstance(d["query_slot"], int) and 0 <= d["query_slot"] < 900
    scores = [d["score"] for d in detections]
    assert scores == sorted(scores, reverse=True)
    threshold = scores[2] - 1e-4  # the JSON rounds scores to 5 decimals
    _, above = _detect(client, EXAMPLES / "chelsea.png", threshold=threshold)
    assert [d["score"] for d in above["detections"]] == scores[:len(above["detections"])]
    assert all(d["score"] >= threshold for d in above["detections"]) and len(above["detections"]) >= 3


@needs_weights
def test_detect_finds_the_objects_of_a_synthetic_scene(client):
    from dino_demo.model.box_ops import box_iou
    from dino_demo.train.synthetic import CLASS_NAMES, SceneSpec, generate_scene

    scene = generate_scene(90210, 9, SceneSpec(size=256))
    _, result = _detect(client, EXAMPLES / "shapes-90210-9.png", threshold=0.3)
    boxes = torch.tensor([d["box_xyxy"] for d in result["detections"]], dtype=torch.float64).reshape(-1, 4)
    names = [d["label"] for d in result["detections"]]
    iou, _ = box_iou(torch.as_tensor(scene.boxes, dtype=torch.float64), boxes)
    found = sum(any(iou[t, j] >= 0.5 and names[j] == CLASS_NAMES[label] for j in range(len(names)))
                for t, label in enumerate(scene.labels))
    assert found >= 0.75 * len(scene.labels), (found, len(scene.labels), result["detections"])


def test_inspect_returns_every_sampling_point_of_the_chosen_query(client):
    _, result = _detect(client, EXAMPLES / "shapes-90210-8.png")
    slot = result["detections"][0]["query_slot"]
    cfg = app.VARIANTS["dino-tiny"]
    m, l, p = cfg.num_heads, cfg.num_feature_levels, cfg.dec_points
    for layer in range(1, cfg.dec_layers + 1):
        overlay, points, mass = _inspect(client, slot, layer)
        assert points["query_slot"] == slot and points["layer"] == layer
        assert points["shape"] == [m, l, p]
        assert np.array(points["points_xy"]).shape == (m, l, p, 2)
        assert np.array(points["weights"]).shape == (m, l, p)
        assert len(points["reference_box_xyxy"]) == 4
        assert len(mass["data"]) == m + 1
    assert Path(overlay).is_file()
    _, one, _ = _inspect(client, slot, 2, head="2", level="3", color_by="head")
    assert one["shape"] == [1, 1, p] and one["heads"] == [2] and one["levels"] == [3]


def test_inspect_with_the_official_size_config(client):
    """An untrained dino-4scale-r50 (the released models' structure) at a small input size."""
    _, result = _detect(client, EXAMPLES / "coffee.png", model="untrained:dino-4scale-r50", threshold=0.0,
                        max_detections=5, max_input=128)
    slot = result["detections"][0]["query_slot"]
    for layer in range(1, 7):
        _, points, _ = _inspect(client, slot, layer)
        assert points["shape"] == [8, 4, 4]
        assert np.array(points["points_xy"]).shape == (8, 4, 4, 2)


def test_inspect_needs_a_result_in_the_session(client):
    with pytest.raises(AppError, match="run Detect"):
        _inspect(client, 0, 1)


@pytest.mark.parametrize("options, message", [
    ({"threshold": 5}, "threshold"),
    ({"threshold": "abc"}, "threshold"),
    ({"max_detections": 0}, "Max detections"),
    ({"max_input": 10}, "Max input side"),
    ({"model": "no-such-model"}, "model choice|choices"),
    ({"model": "custom", "checkpoint": "/nonexistent/ck.pth"}, "No checkpoint"),
])
def test_bad_detect_options_are_errors(client, options, message):
    with pytest.raises(AppError, match=message):
        _detect(client, EXAMPLES / "chelsea.png", **options)


def test_bad_inspect_values_are_errors(client):
    _, result = _detect(client, EXAMPLES / "chelsea.png")
    slot = result["detections"][0]["query_slot"]
    for args in [(slot, 99), (10_000, 1), (slot, 1, "9"), (slot, 1, "all", "0"), (slot, 1, "all", "all", "size")]:
        with pytest.raises(AppError):
            _inspect(client, *args)
    _, points, _ = _inspect(client, slot, 1)  # still serving this session
    assert points["query_slot"] == slot


@pytest.mark.parametrize("content, message", [
    (b"this is text, not a picture", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image|corrupt"),
    (_png_header_only(100_000, 100_000), "too large"),
])
def test_unusable_files_are_errors(client, tmp_path, content, message):
    path = tmp_path / "upload.png"
    path.write_bytes(content)
    with pytest.raises(AppError, match=message):
        _detect(client, path)


def test_tiny_and_odd_images(client, tmp_path):
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (5, 5), (255, 0, 0)).save(tiny)
    with pytest.raises(AppError, match="at least 8 pixels"):
        _detect(client, tiny)
    thin = tmp_path / "thin.png"
    Image.new("RGB", (2000, 9), (255, 0, 0)).save(thin)
    with pytest.raises(AppError, match="aspect ratio"):
        _detect(client, thin)
    gray16 = tmp_path / "gray16.png"
    Image.fromarray(np.full((40, 60), 40000, np.uint16)).save(gray16)
    _, result = _detect(client, gray16)
    assert result["image"]["width"] == 60 and result["image"]["height"] == 40
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    Image.new("RGB", (60, 40), (0, 128, 255)).save(rotated, exif=exif.tobytes())
    _, result = _detect(client, rotated)
    assert result["image"]["width"] == 40 and result["image"]["height"] == 60
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (50, 30), (0, 255, 255, 0)).save(cmyk)
    _, result = _detect(client, cmyk)
    assert result["image"]["width"] == 50


def test_checkpoint_that_does_not_fit_the_variant(client, tmp_path):
    path = tmp_path / "tiny.pth"
    save_checkpoint(build_model(get_config("dino-tiny")), path)
    with pytest.raises(AppError, match="does not fit"):
        _detect(client, EXAMPLES / "chelsea.png", model="custom", checkpoint=str(path), variant="dino-4scale-r50")
    not_a_checkpoint = tmp_path / "junk.pth"
    not_a_checkpoint.write_text(json.dumps({"a": 1}))
    with pytest.raises(AppError, match="Cannot use this checkpoint"):
        _detect(client, EXAMPLES / "chelsea.png", model="custom", checkpoint=str(not_a_checkpoint))
    _, result = _detect(client, EXAMPLES / "chelsea.png")  # the app keeps serving
    assert result["detections"]


def test_checkpoint_box_opens_only_the_allowed_folders(client, tmp_path, monkeypatch):
    allowed, elsewhere = tmp_path / "allowed", tmp_path / "elsewhere"
    allowed.mkdir()
    elsewhere.mkdir()
    for folder in (allowed, elsewhere):
        save_checkpoint(build_model(get_config("dino-tiny")), folder / "tiny.pth")
    monkeypatch.setenv(app.CHECKPOINT_DIRS_VARIABLE, str(allowed))
    for outside in (elsewhere / "tiny.pth", allowed / ".." / "elsewhere" / "tiny.pth", "/etc/passwd"):
        with pytest.raises(AppError, match="only from"):
            _detect(client, EXAMPLES / "chelsea.png", model="custom", checkpoint=str(outside))
    _, result = _detect(client, EXAMPLES / "chelsea.png", model="custom", checkpoint=str(allowed / "tiny.pth"))
    assert result["image"]["width"] > 0


def test_checkpoint_folders_default_to_weights_on_a_space(monkeypatch):
    monkeypatch.delenv(app.CHECKPOINT_DIRS_VARIABLE, raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert app.checkpoint_dirs() is None
    monkeypatch.setenv("SPACE_ID", "someone/dino-explorer")
    assert app.checkpoint_dirs() == [app.WEIGHTS_DIR.resolve()]
    monkeypatch.setenv(app.CHECKPOINT_DIRS_VARIABLE, "any")
    assert app.checkpoint_dirs() is None


def test_json_download_is_coco_results_with_image_size_and_model_id():
    model, cfg = load("untrained:dino-tiny")
    image = np.asarray(Image.open(EXAMPLES / "chelsea.png").convert("RGB"))
    result = app.run(model, cfg, image, model_id="untrained:dino-tiny")
    app._FILE_NAMES[result] = "000000039769.jpg"
    view = app.detection_view(result, 0.0, 5)
    payload = json.loads(Path(app._download(result, view, None)).read_text())
    assert payload["model_id"] == "untrained:dino-tiny"
    assert payload["image"] == {"id": 39769, "file_name": "000000039769.jpg", "width": 451, "height": 300}
    assert len(payload["results"]) == 5
    for entry, box in zip(payload["results"], view.boxes):
        assert set(entry) == {"image_id", "category_id", "bbox", "score"} and entry["image_id"] == 39769
        x, y, w, h = entry["bbox"]
        np.testing.assert_allclose([x, y, x + w, y + h], box, atol=0.02)
