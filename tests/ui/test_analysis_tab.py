"""The Why?, Data set and Compare tabs' handlers without a browser: their answers on a stored
result, and the bounds a public page needs (uploads, folders, boxes)."""
import json

import pytest

from dino_demo.explore.diagnosis import diagnose_image
from dino_demo.runtime.dino import run
from dino_demo.explore.models import load
from dino_demo.sources.checkpoint import DEFAULT_CHECKPOINT
from dino_demo.train.synthetic import SceneSpec, generate_scene
from dino_demo.ui import analysis_tab, region_tab
from dino_demo import env
from dino_demo.explore.stored import StoredResult

MODEL = str(DEFAULT_CHECKPOINT) if DEFAULT_CHECKPOINT.is_file() else "untrained:dino-tiny"


@pytest.fixture(scope="module")
def stored():
    detector = load(MODEL)
    model, cfg = detector.model, detector.config
    scene = generate_scene(4242, 0, SceneSpec(size=256))
    return StoredResult.of(run(model, cfg, scene.image), "000000.png"), scene


def test_ask_answers_with_tables_and_pictures(stored):
    stored, scene = stored
    x0, y0, x1, y1 = scene.boxes[0].tolist()
    name = stored.result.class_names[int(scene.labels[0])]
    views = region_tab.ask(stored, region_tab.RegionRequest.parse(stored, x0, y0, x1, y1, name, 0.3), None)
    assert "Verdict" in views["region_verdict"]
    assert list(views["region_queries"].columns[:3]) == ["slot", "IoU", f"{name} score"]
    assert len(views["region_proposals"]) == 5 and views["region_slot"] == int(views["region_queries"]["slot"][0])
    assert views["region_image"].ndim == 3 and views["region_layers"].ndim == 3
    assert len(views["region_class_scores"]) == len(stored.result.class_names)


def test_ground_truth_gives_false_alarms_and_the_missed_boxes(stored):
    stored, scene = stored
    coco = {"images": [{"id": 1, "file_name": "000000.png", "width": 256, "height": 256}],
            "annotations": [{"id": 10 + i, "image_id": 1, "category_id": int(c) + 1,
                             "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
                            for i, (b, c) in enumerate(zip(scene.boxes.tolist(), scene.labels))],
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(stored.result.class_names)]}
    truth = region_tab.truth_for(coco, "000000.png", stored.result.size)
    labels = [label for label, _ in region_tab.truth_choices(stored, truth, 0.3)]
    assert len(labels) == len(scene.boxes) and all(("found" in s) != ("MISSED" in s) for s in labels)
    alarms = region_tab.false_alarm_table(stored, truth, 0.3)
    for row in range(len(alarms)):
        assert "False alarm" in region_tab.explain_alarm(stored, truth, 0.3, row)["region_verdict"]
    # Asking about a false alarm's own box says it is one.
    image = diagnose_image(stored.result, truth.truth.boxes, truth.truth.categories, 0.3)
    for alarm in image.false_alarms:
        box = image.view.boxes[alarm.detection]
        request = region_tab.RegionRequest.parse(stored, *box, image.view.names[alarm.detection], 0.3)
        views = region_tab.ask(stored, request, truth)
        assert views["region_verdict"].startswith("**False alarm") and views["region_slot"] == alarm.query_slot
    with pytest.raises(ValueError, match="no image named"):
        region_tab.truth_for(coco, "other.png", stored.result.size)


@pytest.mark.parametrize("box", [("a", 0, 10, 10), (0, 0, 0, 10), (300, 300, 400, 400), (0, 0, 1e9, 10)])
def test_bad_boxes_are_refused(stored, box):
    stored, _ = stored
    with pytest.raises(ValueError):
        region_tab.RegionRequest.parse(stored, *box, region_tab.ANY_CLASS, 0.3)


def test_uploads_are_bounded_and_sorted(tmp_path, monkeypatch):
    images = []
    for i in range(analysis_tab.MAX_SET_IMAGES + 1):
        path = tmp_path / f"{i}.png"
        path.write_bytes(b"x")
        images.append(str(path))
    with pytest.raises(ValueError, match="At most"):
        analysis_tab.Uploads.of(images)
    (tmp_path / "a.json").write_text(json.dumps({"whatever": 1}))
    with pytest.raises(ValueError, match="neither"):
        analysis_tab.Uploads.of([str(tmp_path / "a.json")])
    (tmp_path / "b.txt").write_text("x")
    with pytest.raises(ValueError, match="upload .json files and images"):
        analysis_tab.Uploads.of([str(tmp_path / "b.txt")])
    # A server folder only under DINO_DEMO_DATA_DIRS.
    monkeypatch.delenv(env.DATA_DIRS_VARIABLE, raising=False)
    with pytest.raises(ValueError, match="no server folder"):
        analysis_tab._folder_images(str(tmp_path), analysis_tab.Uploads.of([]))
    monkeypatch.setenv(env.DATA_DIRS_VARIABLE, str(tmp_path / "allowed"))
    with pytest.raises(ValueError, match="no server folder"):
        analysis_tab._folder_images(str(tmp_path / "allowed" / ".."), analysis_tab.Uploads.of([]))
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "x.png").write_bytes(b"x")
    assert list(analysis_tab._folder_images(str(tmp_path / "allowed"), analysis_tab.Uploads.of([]))) == ["x.png"]
