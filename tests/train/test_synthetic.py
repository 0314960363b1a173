"""The synthetic shape data set: determinism, annotations, occlusion rule, COCO export."""
import json

import numpy as np
import pytest

from dino_demo import get_config
from dino_demo.train.synthetic import (
    CLASS_NAMES,
    MIN_VISIBLE_FRACTION,
    SceneSpec,
    category_id,
    generate_scene,
    label_of,
    visible_masks,
)
from dino_demo.cli.synthetic import main


def test_same_seed_same_scene_and_different_seeds_differ():
    a, b = generate_scene(3, 7), generate_scene(3, 7)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes)
    assert np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, generate_scene(4, 7).image)
    assert not np.array_equal(a.image, generate_scene(3, 8).image)


def test_boxes_tightly_enclose_the_visible_pixels():
    for index in range(20):
        scene = generate_scene(0, index, SceneSpec(size=128))
        assert scene.image.shape == (128, 128, 3) and scene.image.dtype == np.uint8
        assert len(scene.boxes) == len(scene.labels) == len(scene.masks) >= 1
        for box, mask in zip(scene.boxes, scene.masks):
            x0, y0, x1, y1 = box.astype(int)
            assert mask[y0:y1, x0:x1].sum() == mask.sum() > 0  # everything inside
            assert mask[y0, x0:x1].any() and mask[y1 - 1, x0:x1].any()  # every edge touches a pixel
            assert mask[y0:y1, x0].any() and mask[y0:y1, x1 - 1].any()


def test_visible_masks_do_not_overlap_and_objects_are_painted():
    for index in range(10):
        scene = generate_scene(1, index, SceneSpec(size=160, pixel_noise=0.0))
        assert (scene.masks.sum(axis=0) <= 1).all()
        for mask in scene.masks:
            # An object's pixels differ from the background next to them: its colour is uniform-ish.
            assert scene.image[mask].std(axis=0).max() < 40


def test_visible_masks_paint_later_objects_on_top():
    full = [np.zeros((10, 10), bool) for _ in range(3)]
    full[0][0:5, 0:5] = True
    full[1][0:5, 2:7] = True  # covers 3/5 of object 0
    full[2][8:10, 8:10] = True
    assert [v.sum() for v in visible_masks(full)] == [10, 25, 4]


def _scene_of(monkeypatch, masks):
    """A 64 px scene whose shapes are exactly `masks`, painted in order."""
    import dino_demo.train.synthetic as synthetic

    queue = list(masks)
    monkeypatch.setattr(synthetic, "_shape_mask", lambda label, size, rng: queue.pop(0).copy())
    return synthetic.generate_scene(0, 0, SceneSpec(size=64, min_objects=len(masks), max_objects=len(masks)))


def test_occlusion_removes_mostly_covered_objects(monkeypatch):
    bottom = np.zeros((64, 64), bool)
    bottom[10:30, 10:30] = True
    top = np.zeros((64, 64), bool)
    top[10:30, 10:19] = True  # leaves 11/20 = 55% of `bottom` visible, below the 60% rule
    scene = _scene_of(monkeypatch, [bottom, top])
    assert len(scene.labels) == 1
    assert scene.boxes.tolist() == [[10.0, 10.0, 19.0, 30.0]]
    assert np.array_equal(scene.masks[0], top)


def test_partly_covered_objects_get_the_box_of_their_visible_pixels(monkeypatch):
    bottom = np.zeros((64, 64), bool)
    bottom[10:30, 10:30] = True
    top = np.zeros((64, 64), bool)
    top[5:35, 25:40] = True  # covers the right quarter of `bottom`: 75% stays visible
    scene = _scene_of(monkeypatch, [bottom, top])
    assert scene.boxes.tolist() == [[10.0, 10.0, 25.0, 30.0], [25.0, 5.0, 40.0, 35.0]]
    assert scene.masks[0].sum() == 15 * 20
    assert MIN_VISIBLE_FRACTION <= 0.75


def test_class_names_and_category_ids_match_the_model():
    assert get_config("dino-tiny").class_names == CLASS_NAMES
    assert [category_id(i) for i in range(len(CLASS_NAMES))] == list(range(1, 9))
    assert all(label_of(category_id(i)) == i for i in range(len(CLASS_NAMES)))


def test_sizes_span_small_to_half_the_image():
    widths = []
    for index in range(60):
        scene = generate_scene(5, index, SceneSpec(size=320))
        widths += np.maximum(scene.boxes[:, 2] - scene.boxes[:, 0], scene.boxes[:, 3] - scene.boxes[:, 1]).tolist()
    assert min(widths) < 20 and max(widths) > 120 and max(widths) <= 160 + 1


def test_cli_writes_coco(tmp_path):
    main(["--seed", "9", "--count", "3", "--size", "96", "--out", str(tmp_path)])
    coco = json.loads((tmp_path / "annotations.json").read_text())
    assert [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])] == list(CLASS_NAMES)
    assert [im["id"] for im in coco["images"]] == [1, 2, 3]
    for image in coco["images"]:
        assert (tmp_path / image["file_name"]).exists() and image["width"] == image["height"] == 96
    scene = generate_scene(9, 0, SceneSpec(size=96))
    first = [a for a in coco["annotations"] if a["image_id"] == 1]
    assert [a["category_id"] for a in first] == (scene.labels + 1).tolist()
    x0, y0, x1, y1 = scene.boxes[0].tolist()
    assert first[0]["bbox"] == [x0, y0, x1 - x0, y1 - y0]
    assert first[0]["area"] == float(scene.masks[0].sum()) and first[0]["iscrowd"] == 0


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        SceneSpec(size=8)
    with pytest.raises(ValueError):
        generate_scene(-1, 0)
