"""Images larger than the loader's 4096-pixel limit run downscaled, but their boxes come back in the
pixels of the image as given (detections.json, the one results format)."""
import json

import numpy as np
import pytest
from PIL import Image

from dino_demo.io.images import MAX_SIDE, load_image


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("large")
    rng = np.random.default_rng(4)
    coarse = rng.integers(0, 256, (33, 257, 3), dtype=np.uint8)  # blocks of 32 px: compresses well
    big = np.kron(coarse, np.ones((32, 32, 1), dtype=np.uint8))[:1040, :2 * MAX_SIDE + 16]  # 8208 x 1040
    Image.fromarray(big).save(folder / "big.png")
    loaded = load_image(folder / "big.png", max_side=MAX_SIDE)
    assert loaded.array.shape[1] == MAX_SIDE and loaded.file_size == big.shape[:2]
    Image.fromarray(loaded.array).save(folder / "small.png")  # exactly what the model runs on
    return folder, big.shape[:2], loaded.array.shape[:2]


def test_boxes_are_in_the_pixels_of_the_image_as_given(pictures):
    from dino_demo.cli.detect import main

    folder, (big_h, big_w), (small_h, small_w) = pictures
    for name in ("big", "small"):
        assert main([str(folder / f"{name}.png"), "--checkpoint", "untrained:dino-tiny", "--threshold", "0",
                     "--max-detections", "5", "--out", str(folder / name)]) == 0
    big, small = (json.loads((folder / name / "detections.json").read_text())["images"][0] for name in ("big", "small"))
    assert (big["width"], big["height"]) == (big_w, big_h) and (small["width"], small["height"]) == (small_w, small_h)
    assert big["input_size"] == small["input_size"]
    scale = np.array([big_w / small_w, big_h / small_h] * 2)
    assert len(big["detections"]) == len(small["detections"]) == 5
    for b, s in zip(big["detections"], small["detections"]):
        assert b["query_slot"] == s["query_slot"] and b["score"] == s["score"]
        np.testing.assert_allclose(b["box_xyxy"], np.array(s["box_xyxy"]) * scale, atol=0.05)
        assert b["bbox"][2] == pytest.approx(b["box_xyxy"][2] - b["box_xyxy"][0], abs=0.02)
    assert max(d["box_xyxy"][2] for d in big["detections"]) > small_w  # not the downscaled image's pixels


def test_the_inference_result_remembers_the_size_as_given(pictures):
    from dino_demo.runtime.dino import run
    from dino_demo.explore.models import load
    from dino_demo.explore.draw.data import detection_view
    from dino_demo.io.results import image_record

    folder, (big_h, big_w), _ = pictures
    loaded = load_image(folder / "big.png", max_side=MAX_SIDE)
    assert "boxes are given in the 8208x1040 pixels" in loaded.notes[-1]
    detector = load("untrained:dino-tiny")
    model, cfg = detector.model, detector.config
    result = run(model, cfg, loaded.array, internals=False, source_size=loaded.file_size)
    assert result.given_size == (big_h, big_w) and result.source_scale == (big_w / MAX_SIDE, big_h / loaded.array.shape[0])
    record = image_record(result, detection_view(result, 0.0, 3), image_id=1)
    assert (record["width"], record["height"]) == (big_w, big_h)
    boxes = np.array([d["box_xyxy"] for d in record["detections"]])
    np.testing.assert_allclose(boxes, detection_view(result, 0.0, 3).boxes * np.array(result.source_scale * 2), atol=0.01)
    same = run(model, cfg, loaded.array, internals=False, source_size=loaded.array.shape[:2])
    assert same.source_size is None and same.source_scale == (1.0, 1.0)
