"""Data sets are bounded by what they list (images, annotations, categories), JSON by its depth
before parsing, and every message is one line without a server path (dino_demo.io.set_limits),
on the page's Data set and Why? tabs and in `analyze` on a public server."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dino_demo.io import set_limits
from dino_demo.ui import analysis_tab, choices, region_tab


class _NoModel:
    """An explorer whose model must never be reached."""

    runs = 0

    class models:  # noqa: N801 - mirrors Explorer.models
        @staticmethod
        def get(*args, **kwargs):
            _NoModel.runs += 1
            raise AssertionError("the model was reached")


def _picture(path: Path, size=(40, 30)) -> Path:
    Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(path)
    return path


def _coco(images, annotations=(), categories=({"id": 1, "name": "cat"},)) -> dict:
    return {"images": list(images), "annotations": list(annotations), "categories": list(categories)}


def _write(path: Path, document) -> str:
    path.write_text(json.dumps(document))
    return str(path)


def _one_line(error: pytest.ExceptionInfo, *paths: Path) -> str:
    message = str(error.value)
    assert "\n" not in message and not any(str(p) in message for p in paths) and "dino-set-" not in message
    return message


MODEL = choices.ModelChoice("shipped", None, "shipped", None)


def test_one_image_listed_many_times_runs_no_model(tmp_path):
    """Each listed entry is a model run: 200 entries naming one upload are refused before the model."""
    picture = _picture(tmp_path / "a.png")
    entries = [{"id": i, "file_name": "a.png", "width": 40, "height": 30} for i in range(200)]
    uploads = analysis_tab.Uploads.of([_write(tmp_path / "set.json", _coco(entries)), str(picture)])
    with pytest.raises(ValueError, match="lists 200 images; at most 50") as refused:
        analysis_tab.run_set(_NoModel, uploads, MODEL, 0.3)
    _one_line(refused, tmp_path)
    assert _NoModel.runs == 0


def test_annotations_are_bounded_per_image_and_per_set(tmp_path):
    crowded = _coco([{"id": 1, "file_name": "a.png"}],
                    [{"id": n, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]} for n in range(1001)])
    with pytest.raises(ValueError, match="1001 annotations on image 1; at most 1000"):
        analysis_tab.Uploads.of([_write(tmp_path / "crowded.json", crowded)])
    with pytest.raises(ValueError, match="at most 1000 per image"):
        region_tab.read_truth(_write(tmp_path / "crowded.json", crowded), None)
    many = _coco([{"id": i, "file_name": f"{i}.png"} for i in range(20)],
                 [{"id": n, "image_id": n % 20, "category_id": 1, "bbox": [0, 0, 1, 1]} for n in range(10_001)])
    with pytest.raises(ValueError, match="10001 annotations; at most 10000"):
        set_limits.check_listed(many, "many.json")
    categories = [{"id": i, "name": str(i)} for i in range(2001)]
    with pytest.raises(ValueError, match="2001 categories"):
        set_limits.check_listed(_coco([], categories=categories), "labels.json")


def test_deep_json_is_refused_before_parsing(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + ', "annotations": []}')
    for read in (lambda: analysis_tab.Uploads.of([str(deep)]), lambda: region_tab.read_truth(str(deep), None)):
        with pytest.raises(ValueError, match="nests deeper than 32 levels") as refused:
            read()
        _one_line(refused, tmp_path)
    from dino_demo.train.data import read_coco

    with pytest.raises(ValueError, match="nests too deeply"):
        read_coco(deep)


def test_an_image_entry_without_id_is_named(tmp_path):
    listed = _coco([{"id": 1, "file_name": "a.png"}, {"file_name": "b.png"}])
    with pytest.raises(ValueError, match="image entry 1 has no 'id'") as refused:
        analysis_tab.Uploads.of([_write(tmp_path / "set.json", listed)])
    _one_line(refused, tmp_path)
    with pytest.raises(ValueError, match="image entry 1 has no 'id'"):
        region_tab.read_truth(_write(tmp_path / "set.json", listed), None)


def test_a_size_mismatch_names_the_upload_not_the_server_folder(tmp_path):
    picture = _picture(tmp_path / "a.png", (40, 30))
    listed = _coco([{"id": 1, "file_name": "a.png", "width": 64, "height": 64}])
    uploads = analysis_tab.Uploads.of([_write(tmp_path / "set.json", listed), str(picture)])
    with pytest.raises(ValueError, match="a.png is 40x30 but the annotation file says 64x64") as refused:
        analysis_tab.run_set(_NoModel, uploads, MODEL, 0.3)
    _one_line(refused, tmp_path)


def test_analyze_in_public_mode_is_bounded_by_what_the_set_lists(tmp_path, monkeypatch):
    from dino_demo.cli.analyze import main

    (tmp_path / "images").mkdir()
    listed = _coco([{"id": i, "file_name": f"{i}.png"} for i in range(51)])
    annotations = _write(tmp_path / "val.json", listed)
    arguments = ["--images", str(tmp_path / "images"), "--annotations", annotations, "--out", str(tmp_path / "out")]
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setenv("DINO_DEMO_PUBLIC", "1")
    with pytest.raises(ValueError, match="val.json lists 51 images; at most 50") as refused:
        main(arguments)
    _one_line(refused, tmp_path)
    monkeypatch.delenv("DINO_DEMO_PUBLIC")
    with pytest.raises(ValueError, match="are not in"):  # not public: the set's own checks
        main(arguments)
