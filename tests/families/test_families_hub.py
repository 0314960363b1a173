"""`hf:ORG/NAME` ids download like the zoo: from a local http.server standing in for the Hub
(HF_ENDPOINT), through huggingface_hub's cache, only what from_pretrained needs, with progress;
public mode opens only listed ids."""
from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, free_port
from family_models import save_tiny
from hub_stand_in import COMMIT, answer_as_hub

from dino_demo.families import hub
from dino_demo.sources.download import DownloadError, Policy

REPO = "tiny-org/deformable-detr"


@pytest.fixture(scope="module")
def hub_server(tmp_path_factory):
    folder = save_tiny("deformable-detr-two-stage", tmp_path_factory.mktemp("hub") / "model")
    (folder / "pytorch_model.bin").write_bytes(b"never to be fetched")
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    requested: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, body: bool) -> None:
            prefix = f"/{REPO}/resolve/main/"
            name = self.path[len(prefix):] if self.path.startswith(prefix) else None
            requested.append(f"{self.command} {name}")
            answer_as_hub(self, files.get(name), body, missing_header=True)

        def do_HEAD(self):
            self._answer(False)

        def do_GET(self):
            self._answer(True)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requested
    server.shutdown()


def _detect(url: str, home: Path, out: Path, picture: Path, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_ENDPOINT": url,
                   "HF_HOME": str(home), "HF_HUB_DISABLE_XET": "1", **env}
    for name in ("HF_HUB_OFFLINE", "DINO_DEMO_OFFLINE", "SPACE_ID", "DINO_DEMO_PUBLIC"):
        if name not in env:
            environment.pop(name, None)
    return subprocess.run([sys.executable, "-m", "dino_demo", "detect", str(picture), "--model", f"hf:{REPO}",
                           "--threshold", "0.0", "--save-internals", "--out", str(out)],
                          cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_hub_id_downloads_once_and_runs(hub_server, tmp_path):
    from PIL import Image

    url, requested = hub_server
    picture = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(picture)
    done = _detect(url, tmp_path / "hf", tmp_path / "out", picture)
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert document["model"]["id"] == f"hf:{REPO}" and document["images"][0]["detections"]
    fetched = {r.split(" ", 1)[1] for r in requested if r.startswith("GET")}
    assert {"config.json", "preprocessor_config.json", "model.safetensors"} <= fetched
    assert "pytorch_model.bin" not in fetched                      # pickles are never fetched
    snapshot = tmp_path / "hf" / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT
    assert (snapshot / "model.safetensors").is_file()
    requested.clear()                                              # offline: the cache alone serves it
    again = _detect(url, tmp_path / "hf", tmp_path / "out2", picture, HF_HUB_OFFLINE="1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert not requested


def test_hub_ids_are_parsed_and_public_mode_opens_only_listed_ones(monkeypatch):
    assert hub.parse("hf:SenseTime/deformable-detr") == ("SenseTime/deformable-detr", "main")
    assert hub.parse("hf:a/b@v1.0") == ("a/b", "v1.0")
    for bad in ("hf:a", "hf:../x/y", "hf:a/b/c", "SenseTime/deformable-detr", "hf:a/b@../x"):
        with pytest.raises(ValueError):
            hub.parse(bad)
    public = Policy(public=True)
    assert hub.allowed("SenseTime/deformable-detr", public)
    assert not hub.allowed("someone/else", public)
    assert hub.allowed("someone/else", Policy(public=False))
    monkeypatch.setenv(hub.ALLOWED_VARIABLE, "someone/")
    assert hub.allowed("someone/else", public)
    monkeypatch.delenv(hub.ALLOWED_VARIABLE)
    with pytest.raises(DownloadError, match="only the listed"):
        hub.download("hf:someone/else", policy=public)


def test_zoo_command_lists_hub_entries(capsys):
    from dino_demo.cli.zoo import main

    assert main([]) == 0
    listed = capsys.readouterr().out
    for entry in hub.ENTRIES:
        assert entry.source_id in listed
    assert "Grounding DINO" in listed and "D-FINE" in listed


def test_download_asks_for_what_from_pretrained_needs_with_progress(monkeypatch, tmp_path):
    """Sharded safetensors through their index; optional files may be missing; the progress
    callback reaches every file's download."""
    available = {"config.json": "{}", "preprocessor_config.json": "{}", "vocab.txt": "a",
                 hub.WEIGHTS_INDEX: json.dumps({"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}),
                 "model-1.safetensors": "", "model-2.safetensors": ""}
    asked = []

    def fake_fetch(repo_id, name, *, revision, progress, policy):
        asked.append((repo_id, name, revision, progress))
        if name not in available:
            raise DownloadError("404")
        path = tmp_path / name
        path.write_text(available[name])
        return path

    monkeypatch.setattr(hub, "fetch_hub", fake_fetch)
    progress = lambda done, total: None  # noqa: E731
    assert hub.download("hf:org/model@v2", progress=progress, policy=Policy()) == tmp_path
    names = [name for _, name, _, _ in asked]
    assert {"model-1.safetensors", "model-2.safetensors", "vocab.txt"} <= set(names)
    assert not any(name.endswith(".bin") for name in names)
    assert all(repo == "org/model" and revision == "v2" and p is progress for repo, _, revision, p in asked)
    available[hub.WEIGHTS_INDEX] = json.dumps({"weight_map": {"a": "../../etc/passwd"}})
    with pytest.raises(DownloadError, match="safetensors"):
        hub.download("hf:org/model", policy=Policy())


def test_a_hub_failure_names_the_model(monkeypatch, tmp_path, capsys):
    """Offline or unreachable, a Hub model's error says which model: "hf:ORG/NAME: ... unreachable"
    from `hub.download`, through the load path and on the command line."""
    from huggingface_hub import constants

    from dino_demo.cli import main
    from dino_demo.families.load import load
    from dino_demo.sources.download import Unreachable

    closed = free_port()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed}")
    for name in ("HF_HUB_OFFLINE", "DINO_DEMO_OFFLINE", "SPACE_ID", "DINO_DEMO_PUBLIC"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(Unreachable, match=r"^hf:tiny-org/nowhere@v1: 127\.0\.0\.1 is unreachable") as raised:
        hub.download("hf:tiny-org/nowhere@v1", policy=Policy(retry_after_s=0))
    assert raised.value.host == "127.0.0.1"  # the type and its attributes are kept
    with pytest.raises(DownloadError, match=r"^hf:tiny-org/elsewhere: 127\.0\.0\.1 is unreachable"):
        load("hf:tiny-org/elsewhere")
    with pytest.raises(DownloadError, match=r"^hf:tiny-org/elsewhere: .*failed moments ago"):  # said at once
        load("hf:tiny-org/elsewhere")
    monkeypatch.setenv("DINO_DEMO_OFFLINE", "1")
    with pytest.raises(DownloadError, match=r"^hf:tiny-org/third: downloads are switched off"):
        hub.download("hf:tiny-org/third")
    picture = tmp_path / "p.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(picture)
    assert main(["detect", str(picture), "--model", "hf:tiny-org/third", "--out", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err.startswith("error: hf:tiny-org/third: downloads are switched off")
