import pytest

from dino_demo import get_config
from dino_demo.io.labels import (
    COCO_CATEGORIES,
    COCO_NAMES,
    NOT_AVAILABLE,
    category_ids,
    class_names,
    label_name,
)

COCO_GAPS = {0, 12, 26, 29, 30, 45, 66, 68, 69, 71, 83}


def test_coco_names_cover_the_91_ids_with_gaps():
    assert len(COCO_NAMES) == 91
    assert len(COCO_CATEGORIES) == 80
    assert {i for i, name in enumerate(COCO_NAMES) if name == NOT_AVAILABLE} == COCO_GAPS
    assert len(set(COCO_CATEGORIES.values())) == 80


def test_coco_ids_match_the_official_category_ids():
    expected = {1: "person", 3: "car", 17: "cat", 18: "dog", 44: "bottle", 47: "cup", 62: "chair",
                67: "dining table", 72: "tv", 84: "book", 90: "toothbrush"}
    for category_id, name in expected.items():
        assert COCO_NAMES[category_id] == name


def test_class_names_per_variant():
    assert class_names(get_config("dino-4scale-r50")) is COCO_NAMES
    tiny = get_config("dino-tiny")
    assert class_names(tiny) == tiny.class_names
    assert class_names(tiny.replace(class_names=(), num_classes=3)) == ("class 0", "class 1", "class 2")


def test_category_ids_per_variant():
    assert category_ids(get_config("dino-5scale-swinl")) == tuple(range(91))
    assert category_ids(get_config("dino-tiny")) == tuple(range(1, 9))


def test_label_name_outside_the_map():
    assert label_name(COCO_NAMES, 17) == "cat"
    assert label_name(COCO_NAMES, 91) == "class 91"
    assert label_name(("a",), -1) == "class -1"


def test_a_finetuned_config_carries_its_data_sets_category_ids():
    tiny = get_config("dino-tiny")
    mine = tiny.replace(num_classes=3, class_names=("round", "polygon", "spiky"), category_ids=(5, 17, 42))
    assert category_ids(mine) == (5, 17, 42) and class_names(mine) == ("round", "polygon", "spiky")
    for wrong in ((5, 17), (5, 5, 42)):
        with pytest.raises(ValueError, match="category_ids"):
            mine.replace(category_ids=wrong)
