"""Checkpoint files: official layout, prefixes, broken and hostile files, URLs."""
import argparse
import functools
import hashlib
import http.server
import pickle
import threading

import pytest
import torch

from dino_demo.sources.checkpoint import CheckpointError, load_model, save_checkpoint
from dino_demo.sources.download import DownloadError
from dino_demo.model.config import get_config
from dino_demo.model.detector import build_model


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model(get_config("dino-tiny")).eval()


def official_layout(model, prefix=""):
    return {"model": {prefix + k: v for k, v in model.state_dict().items()},
            "args": argparse.Namespace(num_classes=model.cfg.num_classes, lr=1e-4, return_interm_indices=[1, 2, 3]),
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
            "lr_scheduler": {"step_size": 11}, "epoch": 11}


def assert_same_weights(a, b):
    for key, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[key], value), key


@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_layout_loads_with_variant(tmp_path, tiny, prefix):
    path = tmp_path / "ck.pth"
    torch.save(official_layout(tiny, prefix), path)
    model, cfg = load_model(path, variant="dino-tiny")
    assert cfg.name == "dino-tiny" and not model.training
    assert_same_weights(tiny, model)


def test_own_checkpoint_round_trip_in_half_precision(tmp_path, tiny):
    path = tmp_path / "own.pth"
    save_checkpoint(tiny, path, half=True, epoch=3)
    model, cfg = load_model(path)
    assert cfg == tiny.cfg
    for key, value in tiny.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value.half().to(value.dtype), rtol=0, atol=0)


def test_truncated_file_is_a_clear_error(tmp_path, tiny):
    path = tmp_path / "ck.pth"
    torch.save(official_layout(tiny), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated|not a readable"):
        load_model(path, variant="dino-tiny")


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_model(path)
    torch.save({"epoch": 3}, path)
    with pytest.raises(CheckpointError, match="no tensors"):
        load_model(path)
    torch.save({"model": {"weight": torch.zeros(3)}}, path)
    with pytest.raises(CheckpointError, match="not a DINO checkpoint"):
        load_model(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pth")


class Exploit:
    def __reduce__(self):
        return (open, (str(Exploit.marker), "w"))


def test_malicious_pickle_does_not_execute(tmp_path):
    Exploit.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "payload": Exploit()}, path, pickle_protocol=2)
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps(Exploit()))
    for candidate in (path, plain):
        with pytest.raises(CheckpointError, match="refused|not a readable"):
            load_model(candidate)
    assert not Exploit.marker.exists()


# A child process loads the file, so that its peak memory is the load's own.
_PEAK_RSS = """
import resource, sys
from dino_demo.sources.checkpoint import CheckpointError, load_model
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_model(sys.argv[1])
    outcome = "loaded"
except CheckpointError as error:
    outcome = "refused: " + str(error).splitlines()[0]
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024, outcome)
"""


def _peak_load_mib(path) -> tuple[int, str]:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    growth, outcome = done.stdout.strip().split(" ", 1)
    return int(growth), outcome


@pytest.mark.parametrize("changes", [{"ffn_dim": 200_000}, {"hidden_dim": 4096, "num_heads": 32},
                                     {"num_queries": 10**7}, {"class_names": ["x" * 10_000] * 8},
                                     {"category_ids": ["x"] * 8}])
def test_a_stored_config_out_of_bounds_is_refused(tmp_path, tiny, changes):
    path = tmp_path / "hostile.pth"
    save_checkpoint(tiny, path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["config"].update(changes)
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="stored config is invalid"):
        load_model(path)


def test_a_tiny_file_asking_for_a_huge_model_allocates_nothing(tmp_path, tiny):
    """Within the bounds but not matching its own tensors (ffn_dim 8192 with 512-wide weights): the
    meta-device comparison refuses it before a module is built."""
    path = tmp_path / "hostile.pth"
    save_checkpoint(tiny, path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["config"].update(hidden_dim=1024, num_heads=32, ffn_dim=8192, enc_layers=12, dec_layers=12,
                                num_queries=3000)
    torch.save(checkpoint, path)
    growth, outcome = _peak_load_mib(path)
    assert outcome.startswith("refused") and "does not fit" in outcome
    assert growth < 64, f"peak memory grew by {growth} MiB for a refused {path.stat().st_size // 1024} KiB file"


def test_a_compressed_archive_is_refused_before_it_expands(tmp_path):
    import zipfile

    plain = tmp_path / "plain.pth"
    torch.save({"model": {"weight": torch.zeros(64 * 1024 * 1024 // 4)}}, plain)  # 64 MiB of zeros
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            target.writestr(entry.filename, source.read(entry.filename))
    assert bomb.stat().st_size < 1024 * 1024
    with pytest.raises(CheckpointError, match="compressed"):
        load_model(bomb)
    growth, outcome = _peak_load_mib(bomb)
    assert outcome.startswith("refused") and growth < 32


def test_a_tensor_bomb_is_refused_before_it_is_converted(tmp_path, tiny):
    """A 12000 x 12000 float16 view of a 2-byte storage (stride 0): a 2 KB file that widening to
    float32 would make 550 MiB. Refused from sizes, strides and storage sizes alone."""
    state = {k: v.half() for k, v in tiny.state_dict().items()}
    state["transformer.level_embed"] = torch.zeros(1, dtype=torch.float16).expand(12000, 12000)
    path = tmp_path / "bomb.pth"
    torch.save({"model": state}, path)
    growth, outcome = _peak_load_mib(path)
    assert outcome.startswith("refused") and "view of a storage of 2 bytes" in outcome, outcome
    assert growth < 64, f"peak memory grew by {growth} MiB for a {path.stat().st_size // 1024} KiB file"


def test_views_larger_than_the_file_and_odd_layouts_are_refused(tmp_path):
    from dino_demo.sources.checkpoint import check_tensors, model_from_checkpoint

    storage = torch.zeros(1000)
    aliases = {f"alias.{i}": storage for i in range(300)}  # 300 names of one 4 KB storage: 1.2 MB as float32
    with pytest.raises(CheckpointError, match="more than 0 MiB"):
        check_tensors({"model": aliases}, "aliases", max_bytes=100_000)
    check_tensors({"model": aliases}, "aliases", max_bytes=2_000_000)  # within the bound: fine
    with pytest.raises(CheckpointError, match="sparse"):
        check_tensors({"model": {"w": torch.eye(3).to_sparse()}})
    with pytest.raises(CheckpointError, match="view of a storage"):  # a dict handed over directly
        model_from_checkpoint({"model": {"w": torch.ones(1, dtype=torch.float16).expand(5000, 5000)}})
    with pytest.raises(CheckpointError, match="args.x is a"):  # found inside an argparse.Namespace too
        check_tensors({"args": argparse.Namespace(x=torch.zeros(1).expand(10, 10))})


@pytest.mark.slow
def test_wrong_num_classes_lists_mismatching_keys(tmp_path):
    """A 2-class checkpoint forced into the 91-class official variant."""
    two = build_model(get_config("dino-4scale-r50").replace(num_classes=2))
    path = tmp_path / "two_classes.pth"
    torch.save({"model": two.state_dict(), "args": argparse.Namespace(num_classes=2)}, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path, variant="dino-4scale-r50")
    message = str(info.value)
    assert "num_classes=91" in message and "wrong shape" in message
    assert "class_embed.0.weight: checkpoint (2, 256) vs model (91, 256)" in message
    # Without a forced variant, the number of classes is read from the file.
    model, cfg = load_model(path)
    assert cfg.num_classes == 2 and cfg.name == "dino-4scale-r50"


def test_wrong_variant(tmp_path, tiny):
    path = tmp_path / "tiny.pth"
    torch.save(official_layout(tiny), path)
    with pytest.raises(CheckpointError, match="does not fit variant 'dino-4scale-r50'"):
        load_model(path, variant="dino-4scale-r50")


@pytest.fixture()
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def cached_files(cache):
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith((".lock", ".sha256")))


@pytest.fixture()
def online(monkeypatch):
    for name in ("DINO_DEMO_OFFLINE", "HF_HUB_OFFLINE", "DINO_DEMO_PUBLIC", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)


def test_load_from_url_with_sha256(tmp_path, tiny, http_root, online):
    root, base = http_root
    save_checkpoint(tiny, root / "tiny.pth")
    digest = hashlib.sha256((root / "tiny.pth").read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    model, cfg = load_model(f"{base}/tiny.pth", cache_dir=cache, sha256=digest)
    assert_same_weights(tiny, model)
    assert len(cached_files(cache)) == 1
    (root / "tiny.pth").unlink()  # a second load comes from the cache
    assert load_model(f"{base}/tiny.pth", cache_dir=cache)[1] == cfg


def test_url_errors(tmp_path, tiny, http_root, online):
    root, base = http_root
    save_checkpoint(tiny, root / "tiny.pth")
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="sha256"):
        load_model(f"{base}/tiny.pth", cache_dir=cache, sha256="0" * 64)
    assert cached_files(cache) == []
    with pytest.raises(DownloadError, match="could not download .*404"):
        load_model(f"{base}/missing.pth", cache_dir=cache)
    assert cached_files(cache) == []
