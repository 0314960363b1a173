"""A transformers folder cannot make a load exhaust memory: config sizes, processor sizes and
tokenizer files are bounded before any parameter is built (dino_demo.families.bounds), and the
public Hub allow-list names revisions as well as repositories."""
from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import transformers as T
from conftest import ROOT
from family_models import FAMILY_NAMES, configs, save_tiny

from dino_demo.families import bounds, hub
from dino_demo.paths import EXAMPLES_DIR
from dino_demo.sources.download import DownloadError, Policy

MAX_PEAK_MIB = 1536


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {name: save_tiny(name, root / name) for name in ("deformable-detr", "grounding-dino", "rt-detr")}


def _crafted(source: Path, target: Path, config=None, processor=None, processor_file="preprocessor_config.json",
             empty_weights: bool = True) -> Path:
    """A copy of a tiny folder with config.json / the processor's file edited; its weights an
    empty (valid) safetensors file, so that every parameter would come from the config."""
    target.mkdir(parents=True)
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    if empty_weights:
        from safetensors.torch import save_file

        save_file({}, str(target / "model.safetensors"))
    if config:
        data = json.loads((target / "config.json").read_text())
        config(data)
        (target / "config.json").write_text(json.dumps(data))
    if processor:
        data = json.loads((target / processor_file).read_text())
        processor(data.get("image_processor", data))
        (target / processor_file).write_text(json.dumps(data))
    return target


def _set(**fields):
    return lambda data: data.update(fields)


def _labels(data):
    data["id2label"] = {"0": "cat", "60000000": "dog"}
    data.pop("label2id", None)


# name -> (tiny family, config edit, processor edit, processor file, field the message names)
CRAFTED = {
    "queries": ("deformable-detr", _set(num_queries=100_000_000), None, None, "num_queries"),
    "encoder_layers": ("deformable-detr", _set(encoder_layers=200_000), None, None, "encoder_layers"),
    "labels": ("deformable-detr", _labels, None, None, "id2label"),
    "d_model": ("rt-detr", _set(d_model=1_000_000), None, None, "d_model"),
    "backbone": ("rt-detr", lambda d: d["backbone_config"].update(hidden_sizes=[8, 16, 16, 100_000]), None, None,
                 "backbone_config.hidden_sizes"),
    "text": ("grounding-dino", _set(max_text_len=5_000_000), None, None, "max_text_len"),
    "edges": ("deformable-detr", None, lambda p: p["size"].update(shortest_edge=60_000, longest_edge=60_000),
              "preprocessor_config.json", "size.shortest_edge"),
    "fixed": ("rt-detr", None, lambda p: p.update(size={"height": 40_000, "width": 40_000}),
              "preprocessor_config.json", "size.height"),
    "max_size": ("deformable-detr", None, lambda p: p.update(max_size=50_000), "preprocessor_config.json",
                 "max_size"),
    "nested": ("grounding-dino", None, lambda p: p["size"].update(longest_edge=70_000), "processor_config.json",
               "size.longest_edge"),
    "unknown_field": ("rt-detr", _set(some_new_width=10 ** 9), None, None, "some_new_width"),
    # every field within its bound, together too much: the memory estimate refuses it
    "combined": ("deformable-detr", _set(num_queries=3000, decoder_layers=24, d_model=2048, encoder_layers=24,
                                         encoder_ffn_dim=8192, decoder_ffn_dim=8192), None, None, "GiB"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_sizes_are_refused_naming_the_field(case, tiny_folders, tmp_path):
    family, config, processor, processor_file, field = CRAFTED[case]
    folder = _crafted(tiny_folders[family], tmp_path / "crafted", config, processor, processor_file)
    with pytest.raises(ValueError) as refused:
        bounds.check_folder(folder, "crafted", bounds.ModelLimits())
    message = str(refused.value)
    assert field in message and "\n" not in message and str(tmp_path) not in message


def test_tokenizer_files_are_bounded_in_bytes(tiny_folders, tmp_path):
    folder = _crafted(tiny_folders["grounding-dino"], tmp_path / "vocab")
    with (folder / "vocab.txt").open("r+b") as file:  # 192 MB, sparse: quick to make
        file.truncate(192 * 1024 ** 2)
    with pytest.raises(ValueError, match="vocab.txt is larger than 16 MiB"):
        bounds.check_folder(folder, "vocab", bounds.ModelLimits())


def test_deep_json_is_refused_before_parsing(tiny_folders, tmp_path):
    folder = _crafted(tiny_folders["rt-detr"], tmp_path / "deep")
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    assert bounds.json_depth(b'{"a": "[[[[", "b": [[1], {"c": []}]}') == 4
    with pytest.raises(ValueError, match="nested deeper"):
        bounds.check_folder(folder, "deep", bounds.ModelLimits())


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_the_estimate_follows_the_parameters_transformers_builds(name):
    """Within a small factor of the parameters the model really has (built on the meta device),
    never below; the families' tiny test models and the published defaults pass the limits."""
    config, class_name, _ = configs()[name]
    with torch.device("meta"):
        model = getattr(T, class_name)(config)
    real = sum(p.numel() for p in model.parameters())
    data = json.loads(config.to_json_string())
    estimated = bounds.estimate(data, 800, 1333)
    assert real * 0.9 <= estimated.parameters <= real * 3, (estimated.parameters, real)
    bounds.check_config(data, name, bounds.ModelLimits())


@pytest.mark.parametrize("config", [
    T.GroundingDinoConfig(backbone_config=T.SwinConfig(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32],
                                                       window_size=12, out_features=["stage2", "stage3", "stage4"])),
    T.RTDetrConfig(), T.DFineConfig(), T.LwDetrConfig(), T.RfDetrConfig(),
    T.DeformableDetrConfig(use_timm_backbone=False, two_stage=True, with_box_refine=True,
                           backbone_config=T.ResNetConfig(out_features=["stage2", "stage3", "stage4"])),
], ids=["grounding-dino-base", "rt-detr-r50", "d-fine", "lw-detr", "rf-detr", "deformable-detr-two-stage"])
def test_published_sizes_pass(config):
    """The largest published configurations, at 800 x 1333, are within the default limits."""
    data = json.loads(config.to_json_string())
    bounds.check_config(data, "published", bounds.ModelLimits())
    assert bounds.estimate(data, 800, 1333).total < bounds.ModelLimits().memory_bytes


def test_large_models_need_the_flag_and_never_in_public_mode(tiny_folders, tmp_path, monkeypatch):
    for variable in ("SPACE_ID", "DINO_DEMO_PUBLIC", bounds.LARGE_VARIABLE):
        monkeypatch.delenv(variable, raising=False)
    folder = _crafted(tiny_folders["deformable-detr"], tmp_path / "large", _set(num_queries=5000))
    with pytest.raises(ValueError, match="num_queries"):
        bounds.check_folder(folder, "large")
    monkeypatch.setenv(bounds.LARGE_VARIABLE, "1")
    assert bounds.check_folder(folder, "large").parameters > 0
    monkeypatch.setenv("DINO_DEMO_PUBLIC", "1")
    with pytest.raises(ValueError, match="num_queries"):
        bounds.check_folder(folder, "large")
    monkeypatch.delenv("DINO_DEMO_PUBLIC")
    never = _crafted(tiny_folders["deformable-detr"], tmp_path / "never", _set(num_queries=100_000_000))
    with pytest.raises(ValueError, match="num_queries"):
        bounds.check_folder(never, "never")


# A child's own peak: /proc/self/status VmHWM belongs to the process's address space, made anew at
# exec. (ru_maxrss, from getrusage or wait4, keeps the parent's peak across fork and exec, so a
# child of a large test process would report the parent's size.)
PEAK = """
def _peak_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) // 1024
"""

# Runs `python -m MODULE ARGS...` and writes its peak into $PEAK_FILE as it exits (SystemExit too).
MODULE_WITH_PEAK = PEAK + """
import atexit, os, runpy, sys
atexit.register(lambda: open(os.environ["PEAK_FILE"], "w").write(str(_peak_mib())))
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def _peak_run(arguments: list[str], tmp_path: Path, timeout: float = 300) -> tuple[int, str, float]:
    """(exit status, stderr, peak resident MiB) of `python -m MODULE ARGS...` (`arguments`) in a
    child process: its own peak (VmHWM)."""
    if arguments[0] != "-m":
        raise ValueError("_peak_run runs a module: ['-m', MODULE, ...]")
    peak_file = tmp_path / "peak.txt"
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PEAK_FILE": str(peak_file)}
    for name in ("SPACE_ID", "DINO_DEMO_PUBLIC", bounds.LARGE_VARIABLE):
        environment.pop(name, None)
    done = subprocess.run([sys.executable, "-c", MODULE_WITH_PEAK, *arguments[1:]], cwd=ROOT, env=environment,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=timeout)
    return done.returncode, done.stderr, float(peak_file.read_text())


LOAD_ALL = PEAK + """
import sys
from dino_demo.families.load import load
refused = 0
for folder in sys.argv[1:]:
    try:
        load(folder)
    except ValueError as error:
        refused += 1
        print(str(error), file=sys.stderr)
print(refused, _peak_mib(), file=sys.stderr)
"""


@pytest.mark.slow
def test_crafted_folders_are_refused_before_memory_is_spent(tiny_folders, tmp_path):
    """Every crafted folder is refused by the loader itself, in one child process whose peak stays
    far below what one of them would take (25 GB for 100 M queries)."""
    folders = [str(_crafted(tiny_folders[family], tmp_path / case, config, processor, file))
               for case, (family, config, processor, file, _) in CRAFTED.items()]
    done = subprocess.run([sys.executable, "-c", LOAD_ALL, *folders], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    refused, peak_mib = map(int, done.stderr.strip().splitlines()[-1].split())
    assert refused == len(folders), done.stderr[-3000:]
    assert peak_mib < MAX_PEAK_MIB, peak_mib


@pytest.mark.slow
@pytest.mark.parametrize("case", ["queries", "bad_weights"])
def test_detect_on_a_crafted_folder_exits_with_one_line(case, tiny_folders, tmp_path):
    if case == "bad_weights":
        folder = _crafted(tiny_folders["rt-detr"], tmp_path / "bad", empty_weights=False)
        (folder / "model.safetensors").write_bytes(b"\xff" * 64)
    else:
        family, config, processor, file, _ = CRAFTED[case]
        folder = _crafted(tiny_folders[family], tmp_path / case, config, processor, file)
    code, stderr, peak_mib = _peak_run(["-m", "dino_demo", "detect", str(EXAMPLES_DIR / "chelsea.png"),
                                        "--checkpoint", str(folder), "--out", str(tmp_path / "out")], tmp_path)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error:"), stderr[-2000:]
    assert "Traceback" not in stderr and str(tmp_path) not in lines[0]
    assert peak_mib < MAX_PEAK_MIB, peak_mib


def test_a_bad_safetensors_file_is_one_line_for_the_page(tiny_folders, tmp_path):
    from dino_demo.families.load import load

    folder = _crafted(tiny_folders["rt-detr"], tmp_path / "bad", empty_weights=False)
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="not a loadable RT-DETR folder") as refused:
        load(folder)
    assert "\n" not in str(refused.value) and str(tmp_path) not in str(refused.value)


# -- Hub revisions ---------------------------------------------------------------------------------

def test_public_mode_opens_the_default_branch_or_listed_revisions_only(monkeypatch):
    monkeypatch.delenv(hub.ALLOWED_VARIABLE, raising=False)
    public = Policy(public=True)
    assert hub.allowed("SenseTime/deformable-detr", public)
    assert hub.allowed("SenseTime/deformable-detr", public, "main")
    for revision in ("refs/pr/1", "other-branch", "v1.0", "0123456789abcdef0123456789abcdef01234567"):
        assert not hub.allowed("SenseTime/deformable-detr", public, revision)
        assert hub.allowed("SenseTime/deformable-detr", Policy(public=False), revision)
    monkeypatch.setattr(hub, "_BY_ID", {**hub._BY_ID, "a/b": hub.HubEntry("a/b", "RT-DETR", 1, 1, "x", None,
                                                                            revisions=("c" * 40,))})
    assert hub.allowed("a/b", public, "c" * 40) and not hub.allowed("a/b", public, "d" * 40)
    monkeypatch.setenv(hub.ALLOWED_VARIABLE, "someone/,other/model@v2")
    assert hub.allowed("someone/x", public) and not hub.allowed("someone/x", public, "refs/pr/3")
    assert hub.allowed("other/model", public, "v2") and not hub.allowed("other/model", public)


@pytest.fixture
def recording_hub(monkeypatch, tmp_path):
    """HF_ENDPOINT pointed at a local server that records every request (and answers 404)."""
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            requests.append(self.path)
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    import huggingface_hub.constants as constants

    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    yield requests
    server.shutdown()


@pytest.mark.slow
def test_detect_refuses_a_pull_request_revision_without_contacting_the_hub(recording_hub, monkeypatch):
    import gradio as gr

    from dino_demo.ui.api import ApiEndpoints
    from dino_demo.ui.services import Services
    from dino_demo.ui.settings import AppSettings

    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setenv("DINO_DEMO_PUBLIC", "1")
    monkeypatch.delenv(hub.ALLOWED_VARIABLE, raising=False)

    class Request:
        session_hash = "revision"

    services = Services.make(AppSettings(device="cpu", model_concurrency=1))
    with pytest.raises((ValueError, gr.Error)) as refused:
        ApiEndpoints(services).detect(None, image=str(EXAMPLES_DIR / "chelsea.png"), model_choice="custom",
                                      checkpoint="hf:SenseTime/deformable-detr@refs/pr/1", request=Request(),
                                      progress=lambda *a, **k: None)
    assert "default branch or a listed commit" in str(refused.value)
    assert recording_hub == []
    with pytest.raises(DownloadError, match="default branch"):
        hub.download("hf:SenseTime/deformable-detr@refs/pr/1", policy=Policy(public=True))
    assert recording_hub == []
