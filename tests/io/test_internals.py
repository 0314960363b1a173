"""internals.npz: written from a result, read back with numpy alone, equal to the result."""
import json
import zipfile

import numpy as np
import pytest

from dino_demo.runtime.dino import run
from dino_demo.explore.models import load
from dino_demo.io.internals import MEANINGS, SCHEMA, read_internals, write_internals


@pytest.fixture(scope="module")
def result():
    detector = load("untrained:dino-tiny")
    model, cfg = detector.model, detector.config
    image = np.random.default_rng(2).integers(0, 256, (70, 110, 3), dtype=np.uint8)
    return run(model, cfg, image, model_id="test-model")


def test_the_file_round_trips_and_equals_the_result(result, tmp_path):
    path = write_internals(result, tmp_path / "r.internals.npz", source="photo.png")
    with np.load(path, allow_pickle=False) as file:  # numpy alone, no pickles
        index = json.loads(str(file["index"]))
        arrays = {name: file[name] for name in file.files if name != "index"}
    assert index["schema"] == SCHEMA and index["model"] == {"id": "test-model", "variant": "dino-tiny"}
    assert index["image"] == {"source": "photo.png", "height": 70, "width": 110}
    assert set(arrays) == set(MEANINGS) == set(index["arrays"])
    for name, array in arrays.items():
        entry = index["arrays"][name]
        assert entry["shape"] == list(array.shape) and entry["dtype"] == str(array.dtype) and entry["meaning"]
    out, selection, det = result.output, result.output.selection, result.detections
    expected = {
        "decoder_sampling_locations": out.sampling_locations[:, 0], "decoder_attention_weights": out.attention_weights[:, 0],
        "decoder_references": out.references[:, 0], "decoder_boxes": out.boxes[:, 0], "decoder_logits": out.logits[:, 0],
        "encoder_topk_indices": selection.topk_indices[0], "encoder_levels": selection.levels[0],
        "encoder_cells": selection.cells[0], "encoder_proposals": selection.proposals[0],
        "encoder_boxes": selection.boxes[0], "encoder_logits": selection.logits[0],
        "detection_scores": det.scores, "detection_labels": det.labels, "detection_boxes_xyxy": det.boxes,
        "detection_query_slots": det.query_slot, "spatial_shapes": out.spatial_shapes,
        "level_start_index": out.level_start_index, "valid_ratios": out.valid_ratios[0],
    }
    for name, tensor in expected.items():
        np.testing.assert_array_equal(arrays[name], tensor.numpy(), err_msg=name)
        assert arrays[name].dtype == tensor.numpy().dtype, name
    assert arrays["image_size"].tolist() == [70, 110]
    assert arrays["class_names"].tolist()[:2] == ["circle", "square"]
    k, q, m, l, p = (index["sizes"][key] for key in ("K decoder layers", "Q queries", "M heads", "L levels", "P points"))
    assert arrays["decoder_sampling_locations"].shape == (k, q, m, l, p, 2)
    read_index, read_arrays = read_internals(path)
    assert read_index == index and set(read_arrays) == set(arrays)


def test_other_files_are_refused(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, a=np.zeros(2))
    with pytest.raises(ValueError, match="no internals index"):
        read_internals(path)
    np.savez(path, index=np.array(json.dumps({"schema": "something/else"})))
    with pytest.raises(ValueError, match="not a"):
        read_internals(path)


def test_a_result_without_internals_has_none_to_write(tmp_path):
    detector = load("untrained:dino-tiny")
    model, cfg = detector.model, detector.config
    bare = run(model, cfg, np.zeros((40, 40, 3), np.uint8), internals=False)
    with pytest.raises(ValueError, match="internals"):
        write_internals(bare, tmp_path / "x.npz")


def test_detect_command_saves_internals(tmp_path):
    from PIL import Image

    from dino_demo.cli.detect import main

    image = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    assert main([str(image), "--checkpoint", "untrained:dino-tiny", "--threshold", "0", "--save-internals",
                 "--out", str(out)]) == 0
    entry = json.loads((out / "detections.json").read_text())["images"][0]
    assert entry["internals"] == "scene.internals.npz"
    index, arrays = read_internals(out / entry["internals"])
    assert index["image"]["source"] == str(image) and arrays["image_size"].tolist() == [48, 64]
    with zipfile.ZipFile(out / entry["internals"]) as archive:  # a plain .npz: one .npy per array
        assert "decoder_attention_weights.npy" in archive.namelist()
    # The arrays tie together: each detection's box is its query slot's final box, in pixels.
    cx, cy, w, h = arrays["decoder_boxes"][-1][arrays["detection_query_slots"]].astype(np.float64).T
    height, width = arrays["image_size"]
    xyxy = np.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], -1)
    np.testing.assert_allclose(arrays["detection_boxes_xyxy"], xyxy, atol=1e-3)
