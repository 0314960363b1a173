"""Class names and COCO category ids.

The released DINO models predict COCO's 91 category ids directly (ids 1..90 with eleven ids COCO
never used, plus 0), so class id == COCO category id and the gaps read "N/A". The project's own
models carry their names in `DINOConfig.class_names` and number their COCO categories 1..N in
that order (class index + 1), as their data sets do, unless `DINOConfig.category_ids` gives each
class its data set's own id (models fine-tuned on COCO-format data).
"""
from __future__ import annotations

from ..model.config import DINOConfig

NOT_AVAILABLE = "N/A"

# The 80 COCO 2017 detection categories by their official category id.
COCO_CATEGORIES: dict[int, str] = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train",
    8: "truck", 9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign",
    14: "parking meter", 15: "bench", 16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep",
    21: "cow", 22: "elephant", 23: "bear", 24: "zebra", 25: "giraffe", 27: "backpack",
    28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase", 34: "frisbee", 35: "skis",
    36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat", 40: "baseball glove",
    41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle", 46: "wine glass",
    47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza",
    60: "donut", 61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed",
    67: "dining table", 70: "toilet", 72: "tv", 73: "laptop", 74: "mouse", 75: "remote",
    76: "keyboard", 77: "cell phone", 78: "microwave", 79: "oven", 80: "toaster", 81: "sink",
    82: "refrigerator", 84: "book", 85: "clock", 86: "vase", 87: "scissors", 88: "teddy bear",
    89: "hair drier", 90: "toothbrush",
}

# Indexed by class id 0..90, as the 91 outputs of the released models.
COCO_NAMES: tuple[str, ...] = tuple(COCO_CATEGORIES.get(i, NOT_AVAILABLE) for i in range(91))


def class_names(cfg: DINOConfig) -> tuple[str, ...]:
    """Names indexed by class id for a model built from `cfg`."""
    if cfg.class_names:
        return cfg.class_names
    if cfg.num_classes == len(COCO_NAMES):
        return COCO_NAMES
    return tuple(f"class {i}" for i in range(cfg.num_classes))


def label_name(names: tuple[str, ...], label: int) -> str:
    """Name of class id `label`, or "class <id>" when `names` does not cover it."""
    return names[label] if 0 <= label < len(names) else f"class {label}"


def category_ids(cfg: DINOConfig) -> tuple[int, ...]:
    """COCO category id of each class id of a model built from `cfg`."""
    if cfg.category_ids:
        return cfg.category_ids
    offset = 1 if cfg.class_names else 0
    return tuple(i + offset for i in range(cfg.num_classes))
