import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OFFICIAL = FIXTURES / "official_dino"

# Under pytest-xdist (`-n 2`) each worker takes one thread: two processes of two threads each on
# two cores would spin against each other.
_THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else torch.get_num_threads()
torch.set_num_threads(int(os.environ.get("DINO_DEMO_TEST_THREADS", _THREADS)))

# Without a GPU, tests/ops/test_ops_triton.py checks the Triton kernels on CPU tensors in Triton's
# interpreter. Triton reads TRITON_INTERPRET when it is imported, and test modules import it
# indirectly at collection (torchvision imports torch._dynamo, which imports triton), so it is set
# here, before any test module is imported. Nothing else in the suite runs Triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` are skipped when no GPU is visible."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no GPU visible")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def official_dir() -> Path:
    return OFFICIAL


def npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz file, read into memory (the file closed)."""
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def free_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served():
    """The app served on a free 127.0.0.1 port for one test module."""
    from dino_demo.ui import build_demo, launch

    demo = launch(build_demo(), "127.0.0.1", free_port(), prevent_thread_lock=True, quiet=True)
    yield demo
    demo.close()


@pytest.fixture(scope="module")
def url(served):
    return served.local_url


@pytest.fixture
def local_zoo(monkeypatch, tmp_path):
    """A zoo entry whose file (the shipped dino-tiny weights, or a random dino-tiny) is served by a
    local http.server on 127.0.0.1, slowly enough (about 2 s) that a download shows its progress."""
    import functools
    import http.server
    import shutil
    import threading
    import time

    from dino_demo.sources import zoo
    from dino_demo.sources.checkpoint import DEFAULT_CHECKPOINT, save_checkpoint

    served = tmp_path / "served"
    served.mkdir()
    if DEFAULT_CHECKPOINT.is_file():
        shutil.copy(DEFAULT_CHECKPOINT, served / "tiny-zoo.pth")
    else:
        from dino_demo.model.config import get_config
        from dino_demo.model.detector import build_model

        save_checkpoint(build_model(get_config("dino-tiny")), served / "tiny-zoo.pth")

    class Slow(http.server.SimpleHTTPRequestHandler):
        def copyfile(self, source, destination):
            while chunk := source.read(256 * 1024):
                destination.write(chunk)
                time.sleep(0.07)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Slow, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    entry = zoo.ZooEntry("local-tiny", "DINO-tiny from the local server", "dino-tiny", "official", "official",
                         (f"http://127.0.0.1:{server.server_address[1]}/tiny-zoo.pth",), 7, 0.0, 1, "test", "tests")
    monkeypatch.setattr(zoo, "ENTRIES", (*zoo.ENTRIES, entry))
    monkeypatch.setattr(zoo, "_BY_ID", {**zoo._BY_ID, entry.id: entry})
    monkeypatch.setattr(zoo, "folder", lambda: tmp_path / "zoo")
    for variable in ("SPACE_ID", "DINO_DEMO_PUBLIC", "DINO_DEMO_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    yield entry
    server.shutdown()
    server.server_close()


# A COCO-format data set of synthetic scenes whose eight shapes are merged into three categories
# with non-contiguous ids, declared out of order: class index 0 = round (5), 1 = polygon (17),
# 2 = spiky (42). Every image has exactly two objects.
SHAPE_GROUPS = {"spiky": (42, ("star", "cross")), "round": (5, ("circle", "ring", "ellipse")),
                "polygon": (17, ("square", "triangle", "hexagon"))}


def write_shapes_coco(folder: Path, seed: int, count: int, size: int = 64, odd_annotations: bool = False) -> Path:
    """Write `count` scenes and `folder/annotations.json`; with `odd_annotations`, image 1 also
    gets a crowd box and a box without width, which training must ignore."""
    import json

    from PIL import Image

    from dino_demo.train.synthetic import CLASS_NAMES, SceneSpec, generate_scene

    category_of = {name: cid for cid, names in SHAPE_GROUPS.values() for name in names}
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations, index = [], [], 0
    while len(images) < count:
        scene = generate_scene(seed, index, SceneSpec(size=size, min_objects=2, max_objects=2))
        index += 1
        if len(scene.labels) != 2:
            continue
        image_id = 100 + len(images)
        name = f"{image_id}.png"
        Image.fromarray(scene.image).save(folder / name)
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for (x0, y0, x1, y1), label in zip(scene.boxes.tolist(), scene.labels.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0,
                                "category_id": category_of[CLASS_NAMES[label]], "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "area": (x1 - x0) * (y1 - y0)})
    if odd_annotations:
        first = images[0]["id"]
        annotations += [{"id": 900, "image_id": first, "category_id": 5, "bbox": [2, 2, 30, 30], "iscrowd": 1},
                        {"id": 901, "image_id": first, "category_id": 17, "bbox": [10, 10, 0, 8], "iscrowd": 0}]
    categories = [{"id": cid, "name": name} for name, (cid, _) in SHAPE_GROUPS.items()]
    path = folder / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


@pytest.fixture(scope="session")
def shapes_coco(tmp_path_factory) -> dict[str, str]:
    """Training (6 images, with a crowd and a degenerate annotation) and validation (2 images)
    sets, as the four file options of `python -m dino_demo train`."""
    root = tmp_path_factory.mktemp("shapes-coco")
    train = write_shapes_coco(root / "train", seed=21, count=6, odd_annotations=True)
    val = write_shapes_coco(root / "val", seed=22, count=2)
    return {"train_images": str(train.parent), "train_annotations": str(train),
            "val_images": str(val.parent), "val_annotations": str(val)}
