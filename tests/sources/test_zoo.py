"""The model zoo as data, and zoo entries as model sources (offline: files are put in place by hand,
as a user without a network would)."""
import json
import re
import urllib.parse

import pytest
import torch

from dino_demo.sources import download, zoo
from dino_demo.sources.checkpoint import CheckpointError, load_model, save_checkpoint
from dino_demo.sources.download import DownloadError
from dino_demo.model.config import FLAVOURS, get_config
from dino_demo.model.detector import build_model

from conftest import ROOT

TEST_ENTRY = zoo.ZooEntry("test-tiny", "dino-tiny for tests", "dino-tiny", "official", "official",
                          ("https://huggingface.co/nobody/nothing/resolve/main/test-tiny.pth",), 7, 0.0, 1,
                          "none", "tests")


@pytest.fixture(autouse=True)
def environment(monkeypatch, tmp_path):
    # The zoo's folder only: the cache also holds the compiled op, which must not be rebuilt here.
    monkeypatch.setattr(zoo, "folder", lambda: tmp_path / "cache" / "zoo")
    monkeypatch.setenv("DINO_DEMO_OFFLINE", "1")  # nothing here may reach a network
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("DINO_DEMO_PUBLIC", raising=False)


@pytest.fixture()
def test_entry(monkeypatch):
    monkeypatch.setattr(zoo, "ENTRIES", (*zoo.ENTRIES, TEST_ENTRY))
    monkeypatch.setattr(zoo, "_BY_ID", {**zoo._BY_ID, TEST_ENTRY.id: TEST_ENTRY})
    return TEST_ENTRY


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model(get_config("dino-tiny")).eval()


def put_by_hand(entry, model):
    path = zoo.local_path(entry)
    save_checkpoint(model, path)
    return path


def test_entries_are_complete_and_consistent():
    ids = [e.id for e in zoo.ENTRIES]
    assert len(set(ids)) == len(ids) and len({e.file_name for e in zoo.ENTRIES}) == len(ids)
    public = download.Policy(public=True, allowed_hosts=frozenset(zoo.DOWNLOAD_HOSTS))
    for e in zoo.ENTRIES:
        assert all(u.startswith("https://") and public.host_allowed(urllib.parse.urlsplit(u).hostname) for u in e.urls)
        assert FLAVOURS[e.flavour] is not None and e.flavour.split("-")[0] == e.layout
        assert 40 < e.box_ap < 65 and e.epochs in (12, 24, 36) and e.size_mb > 100 and e.licence
        if e.layout == "mmdet":  # MMDetection's file names end in the first 8 hex digits of their sha256
            assert e.file_name.endswith(f"-{e.sha256_prefix}.pth")
        if e.urls[0].startswith("https://huggingface.co/"):
            assert zoo._HUB_URL.fullmatch(e.urls[0])
    wanted = {("dino-4scale-r50", 12), ("dino-5scale-r50", 12), ("dino-4scale-swinl", 36), ("dino-5scale-swinl", 36)}
    have = {(e.variant, e.epochs) for e in zoo.ENTRIES}
    assert wanted <= have
    for layout in ("official", "detrex", "mmdet"):
        assert {"dino-4scale-r50", "dino-5scale-swinl"} <= {e.variant for e in zoo.ENTRIES if e.layout == layout}
    with pytest.raises(ValueError, match="unknown model zoo id 'nope'"):
        zoo.get("nope")
    assert zoo.get("zoo:detrex-dino-4scale-r50").id == "detrex-dino-4scale-r50"


def test_status_and_a_file_put_in_place_by_hand(test_entry, tiny):
    assert not any(s.cached for s in zoo.status())
    path = put_by_hand(test_entry, tiny)
    found = {s.entry.id: s for s in zoo.status()}[test_entry.id]
    assert found.cached and found.path == path
    assert zoo.resolve(test_entry.id) == path  # offline: the hand-placed file, hash recorded
    assert download.recorded_sha256(path) == download.file_sha256(path)


def test_a_changed_file_is_never_loaded(test_entry, tiny):
    path = put_by_hand(test_entry, tiny)
    zoo.resolve(test_entry.id)
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DownloadError, match=re.escape(str(path))):
        zoo.resolve(test_entry.id)  # removed; offline, so it says where to put a good copy
    assert not path.exists()


def test_zoo_source_loads_a_model(test_entry, tiny):
    put_by_hand(test_entry, tiny)
    model, cfg = load_model("zoo:test-tiny")
    assert cfg.name == "dino-tiny"
    for key, value in tiny.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    from dino_demo.explore.models import ModelCache

    cached = ModelCache(capacity=1).get("zoo:test-tiny", progress=lambda done, total: None).model
    assert getattr(cached, "inference_only", False)


def test_zoo_entry_must_hold_its_variant(monkeypatch, tiny):
    wrong = zoo.ZooEntry("test-wrong", "wrong", "dino-4scale-r50", "official", "official",
                         ("https://huggingface.co/nobody/nothing/resolve/main/test-wrong.pth",), 188, 49.0, 12, "none", "tests")
    monkeypatch.setattr(zoo, "_BY_ID", {**zoo._BY_ID, wrong.id: wrong})
    put_by_hand(wrong, tiny)
    with pytest.raises(CheckpointError, match="holds a dino-tiny, not the dino-4scale-r50"):
        load_model("zoo:test-wrong")


@pytest.mark.slow  # two command-line runs
def test_detect_and_dump_take_a_zoo_model(test_entry, tiny, tmp_path):
    from dino_demo.cli import main

    put_by_hand(test_entry, tiny)
    image = ROOT / "examples" / "shapes-90210-0.png"
    assert main(["detect", str(image), "--model", "test-tiny", "--out", str(tmp_path / "out")]) == 0
    document = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert json.dumps(document).count("test-tiny") >= 1
    assert main(["dump", "--model", "test-tiny", "--images", str(image), "--out", str(tmp_path / "d.npz")]) == 0
    assert main(["detect", str(image), "--model", "nope", "--out", str(tmp_path / "o")]) == 1  # unknown id: one line


def test_zoo_command_lists_entries(capsys):
    from dino_demo.cli import main

    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    assert "detrex-dino-5scale-swinl" in out and "mmdet-dino-4scale-r50-improved" in out
