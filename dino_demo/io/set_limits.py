"""Bounds on a data set by what it lists, checked before any image is read or the model runs.

A COCO annotation file is small for what it asks: one uploaded image listed 200 times runs the
model 200 times, 400 000 tiny annotations (33 MB) make the matching of one image run for minutes,
and deeply nested JSON breaks the parser. `read_json` bounds a JSON file's bytes and nesting depth
before parsing it; `check_listed` bounds the images, annotations and categories a COCO file lists
and checks each image entry's `id` and `file_name`. Messages are one line naming the file as
the visitor named it, never a path on the server.

| bound | `SetLimits` field | default |
|---|---|---|
| JSON bytes | `json_bytes` | 32 MiB |
| JSON nesting depth | `depth` | 32 |
| images listed (each entry counts, duplicates too) | `images` | 50 |
| annotations listed | `annotations` | 10 000 |
| annotations on one image | `per_image` | 1000 (COCO's largest image has 90) |
| categories declared | `categories` | 2000 (LVIS: 1203) |

The page's Data set and Why? tabs apply them always, `python -m dino_demo analyze` in public mode
(`SPACE_ID` / `DINO_DEMO_PUBLIC`); every JSON read of a data set bounds its depth.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SetLimits:
    """See the module docstring."""

    images: int = 50
    annotations: int = 10_000
    per_image: int = 1000
    categories: int = 2000
    depth: int = 32
    json_bytes: int = 32 * 1024 ** 2

    @classmethod
    def reading(cls) -> "SetLimits":
        """For a file read for the ground truth of some of its images (not run): a validation set's
        annotation file (COCO val2017: 5000 images, 36 781 annotations) fits."""
        return cls(images=20_000, annotations=200_000)


def json_depth(data: bytes) -> int:
    """How deeply arrays and objects nest in JSON text `data` (brackets inside strings skipped),
    without parsing it: vectorised over the positions of quotes and brackets."""
    codes = np.frombuffer(data, dtype=np.uint8)
    quotes = np.flatnonzero(codes == ord('"'))
    slashes = np.flatnonzero(codes == ord("\\"))
    if slashes.size:   # a quote after an odd run of backslashes is part of its string
        breaks = np.flatnonzero(np.diff(slashes) != 1)
        starts = slashes[np.concatenate([[0], breaks + 1])]
        ends = slashes[np.concatenate([breaks, [slashes.size - 1]])]
        run = np.minimum(np.searchsorted(ends, quotes - 1), ends.size - 1)
        after_run = ends[run] == quotes - 1
        quotes = quotes[~(after_run & ((ends[run] - starts[run] + 1) % 2 == 1))]
    opening = np.flatnonzero((codes == ord("[")) | (codes == ord("{")))
    closing = np.flatnonzero((codes == ord("]")) | (codes == ord("}")))
    opening = opening[np.searchsorted(quotes, opening) % 2 == 0]
    closing = closing[np.searchsorted(quotes, closing) % 2 == 0]
    if not opening.size:
        return 0
    order = np.argsort(np.concatenate([opening, closing]), kind="stable")
    steps = np.concatenate([np.ones(opening.size, np.int64), -np.ones(closing.size, np.int64)])[order]
    return int(np.cumsum(steps).max())


def read_json(path: str | Path, name: str, limits: SetLimits = SetLimits()):
    """The JSON value of file `path` (`name`: how messages call it), its size and nesting depth
    checked before it is parsed; ValueError (one line) otherwise."""
    path = Path(path)
    if path.stat().st_size > limits.json_bytes:
        raise ValueError(f"{name} is larger than {limits.json_bytes // 1024 ** 2} MB.")
    data = path.read_bytes()
    if json_depth(data) > limits.depth:
        raise ValueError(f"{name} nests deeper than {limits.depth} levels: not a data set file.")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"{name} is not valid JSON.") from None


def check_listed(coco: dict, name: str, limits: SetLimits = SetLimits()) -> None:
    """ValueError (one line) when COCO file `coco` (`name` in messages) lists more images,
    annotations or categories than `limits`, or an image entry without an integer `id` or a
    `file_name`."""
    images, annotations, categories = (coco.get(key) or [] for key in ("images", "annotations", "categories"))
    for key, listed in (("images", images), ("annotations", annotations), ("categories", categories)):
        if not isinstance(listed, list):
            raise ValueError(f"{name}: '{key}' is not a list.")
    if len(images) > limits.images:
        raise ValueError(f"{name} lists {len(images)} images; at most {limits.images} per set here "
                         "(run `python -m dino_demo analyze` for larger sets).")
    if len(annotations) > limits.annotations:
        raise ValueError(f"{name} lists {len(annotations)} annotations; at most {limits.annotations} per set here.")
    if len(categories) > limits.categories:
        raise ValueError(f"{name} declares {len(categories)} categories; at most {limits.categories} here.")
    for n, entry in enumerate(images):
        if not isinstance(entry, dict) or "id" not in entry:
            raise ValueError(f"{name}: image entry {n} has no 'id' (every image needs an integer 'id' and a "
                             "'file_name').")
        if isinstance(entry["id"], bool) or not isinstance(entry["id"], int):
            raise ValueError(f"{name}: image entry {n} has id {str(entry['id'])[:40]!r}, not an integer.")
        if not isinstance(entry.get("file_name"), str):
            raise ValueError(f"{name}: image entry {n} (id {entry['id']}) has no 'file_name'.")
    per_image = Counter(a.get("image_id") for a in annotations if isinstance(a, dict))
    crowded = next(((image, count) for image, count in per_image.items() if count > limits.per_image), None)
    if crowded is not None:
        raise ValueError(f"{name} lists {crowded[1]} annotations on image {str(crowded[0])[:40]}; at most "
                         f"{limits.per_image} per image here.")
