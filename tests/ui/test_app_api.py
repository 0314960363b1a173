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

from dino_demo.sources.checkpoint import DEFAULT_CHECKPOINT, save_checkpoint  # noqa: E402
from dino_demo.model.config import VARIANTS, get_config  # noqa: E402
from dino_demo.model.detector import build_model  # noqa: E402
from dino_demo.paths import EXAMPLES_DIR as EXAMPLES  # noqa: E402
from dino_demo.paths import WEIGHTS_DIR  # noqa: E402
from dino_demo.ui import settings  # noqa: E402

import page_support  # noqa: E402

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


def _image(document):
    assert document["schema"] == "dino-explorer/detections/1"
    (image,) = document["images"]
    return image


def test_detect_on_a_photo(client):
    image_path, document = _detect(client, EXAMPLES / "chelsea.png")
    with Image.open(image_path) as drawn:
        assert drawn.size == (902, 600)  # small images are drawn enlarged x2
    image = _image(document)
    assert (image["file_name"], image["width"], image["height"]) == ("chelsea.png", 451, 300)
    assert document["model"]["id"] and document["model"]["variant"] in VARIANTS
    # The cap given (1333) above the model's own maximum changes nothing: the file records the one used.
    assert document["settings"] == {"threshold": 0.0, "max_detections": 20,
                                    "max_input_side": VARIANTS["dino-tiny"].max_size}
    detections = image["detections"]
    assert 0 < len(detections) <= 20
    for d in detections:
        assert set(d) == {"label", "category_id", "score", "box_xyxy", "bbox", "query_slot"}
        assert isinstance(d["query_slot"], int) and 0 <= d["query_slot"] < 900
    scores = [d["score"] for d in detections]
    assert scores == sorted(scores, reverse=True)
    threshold = scores[2] - 1e-4  # the JSON rounds scores to 5 decimals
    _, above = _detect(client, EXAMPLES / "chelsea.png", threshold=threshold)
    above = _image(above)["detections"]
    assert [d["score"] for d in above] == scores[:len(above)]
    assert all(d["score"] >= threshold for d in above) and len(above) >= 3


@needs_weights
def test_detect_finds_the_objects_of_a_synthetic_scene(client):
    from dino_demo.model.box_ops import box_iou
    from dino_demo.train.synthetic import CLASS_NAMES, SceneSpec, generate_scene

    scene = generate_scene(90210, 9, SceneSpec(size=256))
    _, result = _detect(client, EXAMPLES / "shapes-90210-9.png", threshold=0.3)
    detections = _image(result)["detections"]
    boxes = torch.tensor([d["box_xyxy"] for d in detections], dtype=torch.float64).reshape(-1, 4)
    names = [d["label"] for d in detections]
    iou, _ = box_iou(torch.as_tensor(scene.boxes, dtype=torch.float64), boxes)
    found = sum(any(iou[t, j] >= 0.5 and names[j] == CLASS_NAMES[label] for j in range(len(names)))
                for t, label in enumerate(scene.labels))
    assert found >= 0.75 * len(scene.labels), (found, len(scene.labels), detections)


def test_inspect_returns_every_sampling_point_of_the_chosen_query(client):
    _, result = _detect(client, EXAMPLES / "shapes-90210-8.png")
    slot = _image(result)["detections"][0]["query_slot"]
    cfg = VARIANTS["dino-tiny"]
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
    slot = _image(result)["detections"][0]["query_slot"]
    for layer in range(1, 7):
        _, points, _ = _inspect(client, slot, layer)
        assert points["shape"] == [8, 4, 4]
        assert np.array(points["points_xy"]).shape == (8, 4, 4, 2)


def test_inspect_needs_a_result_in_the_session(client):
    with pytest.raises(AppError, match="press Detect"):
        _inspect(client, 0, 1)


@pytest.mark.parametrize("options, message", [
    ({"threshold": 5}, "threshold"),
    ({"threshold": "abc"}, "threshold"),
    ({"max_detections": 0}, "Max detections"),
    ({"max_input": 10}, "Max input side"),
    ({"model": "no-such-model"}, "model choice|choices"),
    ({"model": "custom", "checkpoint": "/nonexistent/ck.pth"}, "only from"),
    ({"model": "custom", "checkpoint": str(WEIGHTS_DIR / "no-such-file.pth")}, "No checkpoint file at 'no-such-file.pth'"),
    ({"variant": "dino-9scale"}, "Unknown variant"),
])
def test_bad_detect_options_are_errors(client, options, message):
    with pytest.raises(AppError, match=message):
        _detect(client, EXAMPLES / "chelsea.png", **options)


def test_bad_inspect_values_are_errors(client):
    _, result = _detect(client, EXAMPLES / "chelsea.png")
    slot = _image(result)["detections"][0]["query_slot"]
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
    assert (_image(result)["width"], _image(result)["height"]) == (60, 40)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    Image.new("RGB", (60, 40), (0, 128, 255)).save(rotated, exif=exif.tobytes())
    _, result = _detect(client, rotated)
    assert (_image(result)["width"], _image(result)["height"]) == (40, 60)
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (50, 30), (0, 255, 255, 0)).save(cmyk)
    _, result = _detect(client, cmyk)
    assert _image(result)["width"] == 50


def test_checkpoint_that_does_not_fit_the_variant(client, tmp_path, monkeypatch):
    monkeypatch.setenv(settings.CHECKPOINT_DIRS_VARIABLE, str(tmp_path))
    path = tmp_path / "tiny.pth"
    save_checkpoint(build_model(get_config("dino-tiny")), path)
    with pytest.raises(AppError, match="does not fit"):
        _detect(client, EXAMPLES / "chelsea.png", model="custom", checkpoint=str(path), variant="dino-4scale-r50")
    not_a_checkpoint = tmp_path / "junk.pth"
    not_a_checkpoint.write_text(json.dumps({"a": 1}))
    with pytest.raises(AppError, match="Cannot use this checkpoint"):
        _detect(client, EXAMPLES / "chelsea.png", model="custom", checkpoint=str(not_a_checkpoint))
    _, result = _detect(client, EXAMPLES / "chelsea.png")  # the app keeps serving
    assert _image(result)["detections"]


def test_checkpoint_box_opens_only_the_allowed_folders(client, tmp_path, monkeypatch):
    allowed, elsewhere = tmp_path / "allowed", tmp_path / "elsewhere"
    allowed.mkdir()
    elsewhere.mkdir()
    for folder in (allowed, elsewhere):
        save_checkpoint(build_model(get_config("dino-tiny")), folder / "tiny.pth")
    (allowed / "link.pth").symlink_to(elsewhere / "tiny.pth")
    (allowed / "passwd.pth").symlink_to("/etc/passwd")
    monkeypatch.setenv(settings.CHECKPOINT_DIRS_VARIABLE, str(allowed))
    messages = set()
    for outside in (elsewhere / "tiny.pth", elsewhere / "missing.pth", allowed / ".." / "elsewhere" / "tiny.pth",
                    "/etc/passwd", allowed / "link.pth", allowed / "passwd.pth"):
        with pytest.raises(AppError, match="only from") as refused:
            _detect(client, EXAMPLES / "chelsea.png", model="custom", checkpoint=str(outside))
        messages.add(str(refused.value))
        assert str(tmp_path) not in str(refused.value)  # no server paths shown
    assert len(messages) == 1  # the same answer whether or not the file exists
    _, result = _detect(client, EXAMPLES / "chelsea.png", model="custom", checkpoint=str(allowed / "tiny.pth"))
    assert _image(result)["width"] > 0


def test_the_model_list_offers_no_link_out_of_the_allowed_folders(tmp_path, monkeypatch):
    from dino_demo.ui import choices

    weights = tmp_path / "weights"
    weights.mkdir()
    save_checkpoint(build_model(get_config("dino-tiny")), weights / "mine.pth")
    (weights / "escape.pth").symlink_to("/etc/passwd")
    monkeypatch.setattr(choices, "WEIGHTS_DIR", weights)
    monkeypatch.setattr(choices, "PROJECT_ROOT", tmp_path)
    monkeypatch.setenv(settings.CHECKPOINT_DIRS_VARIABLE, str(weights))
    values = [value for _, value in choices.model_choices()]
    assert "weights/mine.pth" in values and "weights/escape.pth" not in values
    with pytest.raises(ValueError, match="Unknown model choice"):
        choices.resolve("weights/escape.pth", "", None)
    assert choices.resolve("weights/mine.pth", "", None).source == str((weights / "mine.pth").resolve())


def test_untrained_large_variants_are_off_on_a_space(monkeypatch):
    from dino_demo.ui import choices

    monkeypatch.delenv(settings.UNTRAINED_VARIANTS_VARIABLE, raising=False)
    monkeypatch.setenv("SPACE_ID", "someone/dino-explorer")
    values = [value for _, value in choices.model_choices()]
    assert "untrained:dino-4scale-r50" in values and "untrained:dino-5scale-swinl" not in values
    with pytest.raises(ValueError, match="untrained models of"):
        choices.resolve("untrained:dino-5scale-swinl", "", None)
    monkeypatch.setenv(settings.UNTRAINED_VARIANTS_VARIABLE, "all")
    assert choices.resolve("untrained:dino-5scale-swinl", "", None).config.name == "dino-5scale-swinl"
    monkeypatch.setenv(settings.UNTRAINED_VARIANTS_VARIABLE, "none")
    assert not [v for _, v in choices.model_choices() if v.startswith("untrained:")]


def test_checkpoint_folders_default_to_weights_and_the_download_cache(monkeypatch):
    from dino_demo.paths import cache_dir

    monkeypatch.delenv(settings.CHECKPOINT_DIRS_VARIABLE, raising=False)
    assert settings.checkpoint_dirs() == (WEIGHTS_DIR.resolve(), cache_dir("checkpoints").resolve())
    monkeypatch.setenv(settings.CHECKPOINT_DIRS_VARIABLE, "any")
    assert settings.checkpoint_dirs() is None


# -- the page's own events, without a browser ------------------------------------------------------

class _Request:
    def __init__(self, session_hash):
        self.session_hash = session_hash


@pytest.fixture(scope="module")
def services():
    """The app's services, the page's handlers called with them as the page calls them (no server needed)."""
    from dino_demo.ui.services import Services

    return Services.make(settings.AppSettings(device="cpu", model_concurrency=1))


def _event(session=None, *, point=None, token=None, detect=None, session_hash="abc", **controls):
    """A page event: the controls by view name (the others at their defaults)."""
    from dino_demo.ui.events import PageEvent
    from dino_demo.ui.inputs import PageControls

    return PageEvent(session, PageControls.parse(controls), token, point, detect or {}, _Request(session_hash))


def _page_detect(services, session=None, image=EXAMPLES / "chelsea.png", threshold=0.0, session_hash="abc"):
    """The Detect button's callback, as the page calls it."""
    detect = {"image_in": str(image), "model_choice": MODEL, "checkpoint": "", "variant": "auto", "max_input": 1333}
    return page_support.detect(services, _event(session, detect=detect, session_hash=session_hash, threshold=threshold,
                                  max_detections=20))


def _redraw(services, method, session, **controls):
    """A re-drawing event of the page (through the one guard, `Results.redraw`)."""
    return page_support.redraw(services, method, _event(session, **controls))


def test_one_detect_click_is_one_event_that_returns_every_view(served, services):
    config = served.config
    detect_button = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "detect-button")
    on_click = [d for d in config["dependencies"] if (detect_button, "click") in map(tuple, d["targets"])]
    assert len(on_click) == 1
    chained = [d for d in config["dependencies"] if d.get("trigger_after") == on_click[0]["id"]]
    assert chained == []  # no .then(): one round trip draws everything
    names = [d["api_name"] for d in config["dependencies"] if d.get("api_visibility") == "public"]
    assert sorted(names) == ["detect", "encoder", "inspect", "internals"] and len(set(names)) == len(names)

    views = _page_detect(services)
    assert {"det_image", "det_json", "table", "download_json", "download_coco", "query", "slot", "notice",
            "proposal_image", "sampling_image", "points_json", "mass", "refine_image", "refine_table", "runtime",
            "layer", "head", "level", "top_n", "session", "query_info", "layer_grid", "heatmap_image",
            "download_internals", "enc_image", "enc_layer", "token_level", "candidates"} <= set(views)
    cfg = VARIANTS["dino-tiny"] if SHIPPED else VARIANTS["dino-tiny"]
    assert views["layer"].maximum == cfg.dec_layers  # controls sized from the model
    assert views["head"].choices[-1][0] == str(cfg.num_heads) and views["top_n"].maximum == cfg.num_queries


def test_downloads_are_detections_json_and_a_list_pycocotools_loads(services):
    from pycocotools.coco import COCO

    views = _page_detect(services, session_hash="downloads")
    document = json.loads(Path(views["download_json"]).read_text())
    assert document == views["det_json"] and document["schema"] == "dino-explorer/detections/1"
    results = json.loads(Path(views["download_coco"]).read_text())
    image = document["images"][0]
    assert len(results) == len(image["detections"]) > 0
    ground_truth = COCO()
    ground_truth.dataset = {"images": [{"id": image["image_id"], "width": image["width"], "height": image["height"]}],
                            "annotations": [], "categories": [{"id": c, "name": str(c)} for c in range(1, 92)]}
    ground_truth.createIndex()
    loaded = ground_truth.loadRes(results)  # the bare list, as it is
    assert len(loaded.getAnnIds()) == len(results)


def test_a_closed_session_leaves_nothing_behind(services, tmp_path):
    upload = tmp_path / "upload.png"  # not an example: its result belongs to this session alone
    Image.open(EXAMPLES / "chelsea.png").crop((0, 0, 300, 200)).save(upload)
    views = _page_detect(services, session_hash="leaving", image=upload)
    session = views["session"]
    folder = Path(views["download_json"]).parent
    assert folder.is_dir() and services.results.store.peek(session.result_key) is not None
    services.sessions.unload(_Request("leaving"))  # the tab closed
    assert not folder.exists() and services.results.store.peek(session.result_key) is None
    views = _page_detect(services, session=session, session_hash="leaving", image=upload)
    services.sessions.close(views["session"])  # Gradio deleted the state
    assert not folder.exists() and services.results.store.peek(session.result_key) is None


def test_results_beyond_the_budget_expire_with_a_clear_message():
    from dino_demo.ui.services import Services
    from dino_demo.ui.settings import AppSettings

    services = Services.make(AppSettings(device="cpu", model_concurrency=1), result_budget_bytes=1)
    first = _page_detect(services, session_hash="first")["session"]
    second = _page_detect(services, session_hash="second", image=EXAMPLES / "coffee.png")["session"]
    assert len(services.results.store) == 1  # the budget keeps only the newest
    with pytest.raises(ValueError, match="press Detect"):
        _redraw(services, "inspect", first, slot=0, layer=1)
    assert _redraw(services, "inspect", second, slot=0, layer=1)["points_json"]["query_slot"] == 0


def test_app_module_has_a_demo_for_reload_mode():
    import importlib

    import gradio as gr

    module = importlib.import_module("app")
    assert isinstance(module.demo, gr.Blocks) and not hasattr(module.demo, "services")


def test_drawn_images_are_written_once_and_whole(tmp_path):
    """Two sessions drawing the same picture must not serve each other a half-written file."""
    import os

    from dino_demo.ui.files import save_drawn_image

    picture = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    first = save_drawn_image(picture, tmp_path, "jpeg")
    stamp = os.stat(first).st_mtime_ns
    second = save_drawn_image(picture.copy(), tmp_path, "jpeg")
    assert first == second and os.stat(second).st_mtime_ns == stamp  # not rewritten
    with Image.open(first) as drawn:
        assert drawn.size == (60, 40)
    assert not list(Path(first).parent.glob("*.tmp"))


def test_a_zoo_model_is_downloaded_once_and_detects(client, local_zoo):
    from dino_demo.ui import choices

    labels = dict((value, label) for label, value in choices.model_choices())
    assert labels[local_zoo.source_id].endswith("downloaded once")
    assert any(value.startswith("zoo:dino-4scale-r50") for value in labels)
    _, document = _detect(client, EXAMPLES / "shapes-90210-9.png", model=local_zoo.source_id, threshold=0.3)
    assert document["model"] == {"id": local_zoo.name, "variant": "dino-tiny"}
    assert _image(document)["detections"]
    labels = dict((value, label) for label, value in choices.model_choices())
    assert labels[local_zoo.source_id].endswith("on this machine")
    assert choices.default_choice() == local_zoo.source_id  # a zoo model on the machine is the default


def test_the_default_model_can_be_named(monkeypatch):
    from dino_demo.ui import choices

    monkeypatch.setenv(choices.DEFAULT_MODEL_VARIABLE, "zoo:mmdet-dino-4scale-r50")
    assert choices.default_choice() == "zoo:mmdet-dino-4scale-r50"
    monkeypatch.setenv(choices.DEFAULT_MODEL_VARIABLE, "zoo:no-such-model")
    with pytest.raises(ValueError, match="unknown model zoo id"):
        choices.default_choice()


def test_a_public_app_refuses_urls_that_point_inward(client, local_zoo, monkeypatch):
    """In public mode the URL box cannot reach the server's own network: plain http is refused, and
    an https URL to an inward address (an open port, a closed one, the cloud metadata address) gets
    one and the same answer, so that visitors cannot scan the server's ports."""
    monkeypatch.setenv("DINO_DEMO_PUBLIC", "1")
    monkeypatch.setenv("DINO_DEMO_ALLOWED_HOSTS", "*")  # any host: the address check alone must refuse
    port = local_zoo.urls[0].split(":")[2].split("/")[0]

    def refusal(address):
        with pytest.raises(AppError) as refused:
            _detect(client, EXAMPLES / "chelsea.png", model="custom", checkpoint=address)
        return str(refused.value)

    assert "only https" in refusal(local_zoo.urls[0])
    inward = {refusal(address) for address in (f"https://127.0.0.1:{port}/tiny-zoo.pth", "https://localhost:9/x.pth",
                                              "https://169.254.169.254/latest/meta-data", "https://[::1]:22/x")}
    assert len(inward) == 1, inward
    (message,) = inward
    assert port not in message and "Errno" not in message and "refused" not in message.lower()


def _encoder(client, level, row, col, layer, head="all", lvl="all", color_by="level"):
    return client.predict(level, row, col, layer, head, lvl, color_by, api_name="/encoder")


def test_encoder_endpoint_gives_a_tokens_attention_in_every_layer(client):
    _detect(client, EXAMPLES / "shapes-90210-8.png")
    cfg = VARIANTS["dino-tiny"]
    m, l, p = cfg.num_heads, cfg.num_feature_levels, cfg.enc_points
    for layer in range(1, cfg.enc_layers + 1):
        overlay, points, mass = _encoder(client, 2, 3, 4, layer)
        assert points["token_level"] == 2 and points["token_cell"] == [3, 4] and points["encoder_layer"] == layer
        assert points["shape"] == [m, l, p] and np.array(points["points_xy"]).shape == (m, l, p, 2)
        assert len(mass["data"]) == m + 1
    assert Path(overlay).is_file()
    _, one, _ = _encoder(client, 1, 0, 0, 1, head="3", lvl="2", color_by="head")
    assert one["shape"] == [1, 1, p] and one["heads"] == [3] and one["levels"] == [2]
    for bad in [(9, 0, 0, 1), (1, 10_000, 0, 1), (1, 0, -1, 1), (1, 0, 0, 99), (1, 0, 0, 1, "9")]:
        with pytest.raises(AppError):
            _encoder(client, *bad)


def test_internals_endpoint_returns_the_sessions_arrays(client):
    from dino_demo.io.internals import read_internals

    _, document = _detect(client, EXAMPLES / "chelsea.png")
    index, arrays = read_internals(client.predict(api_name="/internals"))
    assert index["image"]["source"] == "chelsea.png" and arrays["image_size"].tolist() == [300, 451]
    slots = arrays["detection_query_slots"].tolist()
    assert [d["query_slot"] for d in _image(document)["detections"]] == slots[:len(_image(document)["detections"])]


def test_input_errors_are_one_log_line_not_a_traceback(client, capfd, caplog):
    _detect(client, EXAMPLES / "chelsea.png")
    capfd.readouterr()
    for call in (lambda: _inspect(client, 0, 1, "9"), lambda: _inspect(client, -1, 1),
                 lambda: _encoder(client, 1, 0, 0, 99), lambda: _detect(client, EXAMPLES / "chelsea.png", threshold=7)):
        with pytest.raises(AppError):
            call()
    assert "Traceback" not in capfd.readouterr().err


class _Select:
    def __init__(self, index):
        self.index = index


def test_selecting_from_the_table_the_proposals_and_the_boxes_under_the_cursor(services):
    views = _page_detect(services, session_hash="selecting", threshold=0.05)
    session, document = views["session"], views["det_json"]
    detections = _image(document)["detections"]
    stored = services.results.stored(session)
    options = {"threshold": 0.05, "max_detections": 20, "layer": 3, "heat_layer": 3}
    rows = list(dict.fromkeys(d["query_slot"] for d in detections))  # one table row per query
    row = _redraw(services, "select_table_row", session, point=[1, 2], **options)
    assert row["slot"] == rows[1]
    assert "slot" in row["query_info"] and row["layer_grid"].ndim == 3
    # A point inside several detections: all of them offered, the smallest selected.
    x0, y0, x1, y1 = detections[0]["box_xyxy"]
    inside = [d for d in detections if d["box_xyxy"][0] <= (x0 + x1) / 2 <= d["box_xyxy"][2]
              and d["box_xyxy"][1] <= (y0 + y1) / 2 <= d["box_xyxy"][3]]
    clicked = _redraw(services, "click_detections", session,
                      point=[(x0 + x1) / 2 * stored.scale, (y0 + y1) / 2 * stored.scale], **options)
    offered = {value for _, value in clicked["candidates"].choices}
    assert offered == {d["query_slot"] for d in inside}
    smallest = min(inside, key=lambda d: d["bbox"][2] * d["bbox"][3])
    assert clicked["slot"] == smallest["query_slot"]
    # A click on a proposal selects the query slot it seeded.
    from dino_demo.explore.draw.data import proposal_view, query_lineage

    proposals = proposal_view(stored.result, 100)
    box = proposals.boxes[0]
    picked = _redraw(services, "click_proposals", session,
                     point=[(box[0] + box[2]) / 2 * stored.scale, (box[1] + box[3]) / 2 * stored.scale], **options)
    lineage = query_lineage(stored.result, picked["slot"])
    x, y = (box[:2] + box[2:]) / 2
    assert lineage.anchor_box[0] <= x <= lineage.anchor_box[2] and lineage.anchor_box[1] <= y <= lineage.anchor_box[3]
    assert f"Query slot {picked['slot']}" in picked["query_info"]


def test_the_encoder_tab_picks_tokens_by_click_level_and_seed(services):
    views = _page_detect(services, session_hash="encoder-tab")
    session, stored = views["session"], services.results.stored(views["session"])
    controls = {"enc_layer": 3}
    clicked = _redraw(services, "click_encoder", session, point=[10 * stored.scale, 20 * stored.scale],
                      token_level="1", **controls)
    token = clicked["enc_token"]
    assert token.level == 0 and "Encoder token" in clicked["token_info"] and clicked["enc_heatmap"].ndim == 3
    coarser = page_support.redraw(services, "change_token_level", _event(session, token=token, token_level="3", **controls))
    assert coarser["enc_token"].level == 2 and coarser["token_level"] == "3"
    seeded = _redraw(services, "seed_token", session, slot=views["slot"].value, **controls)
    assert f"query slot {views['slot'].value}" in seeded["token_info"]
    again = page_support.redraw(services, "inspect_encoder", _event(session, token=seeded["enc_token"], enc_layer=1,
                                                             enc_head="2", enc_color="head",
                                                             enc_extras=["offset vectors", "zoom in"]))
    assert again["enc_points"]["heads"] == [2] and again["enc_points"]["encoder_layer"] == 1


def test_encoder_redraws_of_a_known_token_never_ask_for_the_model(services, monkeypatch):
    """Changing layer, head, level or colour re-draws from the token's cached attention: the model
    is not asked for (it may have left the model cache; reloading it would hold up the page)."""
    views = _page_detect(services, session_hash="encoder-redraw")
    session = views["session"]
    token = _redraw(services, "seed_token", session, slot=views["slot"].value, enc_layer=3)["enc_token"]

    def no_model(*args, **kwargs):
        raise AssertionError("a re-draw asked for the model")

    monkeypatch.setattr(services.models, "load", no_model)
    for layer, head, level, color in ((1, "all", "all", "level"), (3, "2", "1", "head"), (2, "all", "2", "level")):
        redrawn = page_support.redraw(services, "inspect_encoder", _event(session, token=token, enc_layer=layer,
                                                                   enc_head=head, enc_level=level, enc_color=color))
        assert redrawn["enc_points"]["encoder_layer"] == layer


def test_redraws_leave_out_a_heatmap_they_cannot_change(services, monkeypatch):
    """Selecting a query does not change the heatmap of every detection, nor a new threshold the
    selected query's: those events neither draw nor send it (it is drawn only when it can change)."""
    from dino_demo.explore import panels

    views = _page_detect(services, session_hash="heatmap-redraws")
    session, slot = views["session"], views["slot"].value
    drawn = []
    monkeypatch.setattr(panels, "decoder_heatmaps", lambda *args: drawn.append(args[-1].source) or np.zeros((4, 4, 3)))
    selected, detections = "selected query", "detections above the threshold"
    query = {"layer": 1, "query": None}
    assert "heatmap_image" in _redraw(services, "choose_query", session, threshold=0.0, max_detections=20,
                                      heat_source=selected, **{**query, "query": slot})
    assert "heatmap_image" not in _redraw(services, "choose_query", session, threshold=0.0, max_detections=20,
                                          heat_source=detections, **{**query, "query": slot})
    redraw = {"threshold": 0.5, "max_detections": 20}
    assert "heatmap_image" not in _redraw(services, "change_detection_options", session, slot=slot,
                                          heat_source=selected, **redraw)
    assert "heatmap_image" in _redraw(services, "change_detection_options", session, slot=slot,
                                      heat_source=detections, **redraw)
    assert "heatmap_image" in _redraw(services, "change_detection_options", session, slot=None,
                                      heat_source=selected, **redraw)
    assert drawn == [selected, detections, selected]


def test_a_typed_slot_is_drawn_once(services):
    """Enter and then leaving the box send the same slot twice: the second changes nothing."""
    views = _page_detect(services, session_hash="typed-slot")
    session, shown = views["session"], views["slot"].value
    other = next(s for s in range(100) if s != shown)
    typed = _redraw(services, "type_slot", session, slot=other, query=shown, layer=1)
    assert typed["slot"] == other and "sampling_image" in typed
    assert _redraw(services, "type_slot", session, slot=float(other), query=other, layer=1) == {}
    with pytest.raises(ValueError):
        _redraw(services, "type_slot", session, slot="x", query=other, layer=1)


def test_the_notice_says_when_nothing_passes_and_when_the_reference_op_served(services, tmp_path):
    import dataclasses

    upload = tmp_path / "own.png"  # not an example: the result is this session's own
    Image.open(EXAMPLES / "coffee.png").crop((0, 0, 200, 160)).save(upload)
    session = _page_detect(services, session_hash="notice", image=upload)["session"]
    stored = services.results.stored(session)
    stored.result = dataclasses.replace(stored.result, backend=("reference", "the CPU kernel is still being built"))
    notice = _redraw(services, "change_detection_options", session, threshold=1.0, max_detections=20)["notice"]
    assert "No detection reaches the score threshold 1.00" in notice
    assert "pure-PyTorch reference" in notice and "still being built" in notice
    stored.result = dataclasses.replace(stored.result, backend=("reference", "disabled by DINO_DEMO_OP=reference"))
    assert "reference" not in _redraw(services, "change_detection_options", session, threshold=0.0,
                                      max_detections=20)["notice"]


def test_stalled_downloads_leave_detect_to_other_visitors(served, url, monkeypatch, tmp_path):
    """Four visitors ask for a zoo model whose host accepts connections and never answers: the
    loads take their own slots (two wait on the host, two are refused at once), another visitor's
    Detect runs meanwhile, and the next request for the failed file fails at once."""
    import socket
    import threading
    import time

    from dino_demo.sources import download, zoo

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # connections complete in the backlog and are never answered
    entry = zoo.ZooEntry("silent-host", "A host that never answers", "dino-tiny", "official", "official",
                         (f"http://127.0.0.1:{listener.getsockname()[1]}/w.pth",), 7, 0.0, 1, "test", "tests")
    monkeypatch.setattr(zoo, "ENTRIES", (*zoo.ENTRIES, entry))
    monkeypatch.setattr(zoo, "_BY_ID", {**zoo._BY_ID, entry.id: entry})
    monkeypatch.setattr(zoo, "folder", lambda: tmp_path / "zoo")
    monkeypatch.setenv("DINO_DEMO_DOWNLOAD_DEADLINE", "8")
    for variable in ("SPACE_ID", "DINO_DEMO_PUBLIC", "DINO_DEMO_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    download.forget_failures()
    image = tmp_path / "small.png"
    Image.open(EXAMPLES / "chelsea.png").crop((0, 0, 160, 120)).save(image)
    _detect(Client(url, verbose=False), image, max_input=256)  # the bystander's model is loaded
    outcomes = {}

    clients = [Client(url, verbose=False) for _ in range(6)]

    def stalled(i):
        start = time.perf_counter()
        try:
            _detect(clients[i], image, model=entry.source_id)
            outcomes[i] = ("detected", time.perf_counter() - start)
        except AppError as error:
            outcomes[i] = (str(error), time.perf_counter() - start)

    try:
        threads = [threading.Thread(target=stalled, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        start = time.perf_counter()
        _detect(clients[4], image, max_input=256)
        waited = time.perf_counter() - start
        for thread in threads:
            thread.join(60)
        assert waited < 5, f"a visitor waited {waited:.1f} s behind stalled downloads"
        busy = [t for message, t in outcomes.values() if "being downloaded for other visitors" in message]
        failed = [t for message, t in outcomes.values()
                  if any(said in message.lower() for said in ("download failed", "could not download", "could not get"))]
        assert len(busy) == 2 and max(busy) < 3, outcomes
        assert len(failed) == 2 and all(6 < t < 15 for t in failed), outcomes
        start = time.perf_counter()
        with pytest.raises(AppError, match="try again in"):
            _detect(clients[5], image, model=entry.source_id)
        assert time.perf_counter() - start < 3
    finally:
        listener.close()
        download.forget_failures()


def test_detect_takes_a_prompt_for_a_text_prompted_model(client, tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from family_models import save_tiny

    folder = save_tiny("grounding-dino", tmp_path / "grounding-dino")
    monkeypatch.setenv(settings.CHECKPOINT_DIRS_VARIABLE, str(tmp_path))
    _, result = client.predict(handle_file(str(EXAMPLES / "chelsea.png")), "custom", str(folder), "auto", 1333, 0.0,
                               5, "cat . remote control .", api_name="/detect")
    labels = {d["label"] for d in _image(result)["detections"]}
    words = {w for label in labels for w in label.replace(".", " ").split()}
    assert labels and words <= {"cat", "remote", "control", "[SEP]"}, labels  # phrases of the prompt (random weights)
    with pytest.raises(AppError, match="takes no prompt"):  # DINO has fixed classes
        client.predict(handle_file(str(EXAMPLES / "chelsea.png")), MODEL, "", "auto", 1333, 0.0, 5, "cat .",
                       api_name="/detect")
