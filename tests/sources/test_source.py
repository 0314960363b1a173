"""Model sources: one typed value parsed in one place (sources/source.py), one dispatch (sources/loader.py)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dino_demo.sources.source import SHIPPED_CHECKPOINT, Source, SourceKind

from conftest import ROOT

PACKAGE = ROOT / "dino_demo"


@pytest.mark.parametrize("text, kind, value, revision, name", [
    ("shipped", SourceKind.SHIPPED, "", None, "dino-tiny (shipped)"),
    ("SHIPPED", SourceKind.SHIPPED, "", None, "dino-tiny (shipped)"),
    ("zoo:dino-4scale-r50", SourceKind.ZOO, "dino-4scale-r50", None, "dino-4scale-r50"),
    ("untrained:dino-tiny", SourceKind.UNTRAINED, "dino-tiny", None, "untrained:dino-tiny"),
    ("https://host.example/a/ck.pth", SourceKind.URL, "https://host.example/a/ck.pth", None,
     "https://host.example/a/ck.pth"),
    ("HTTPS://host.example/ck.pth", SourceKind.URL, "HTTPS://host.example/ck.pth", None, "HTTPS://host.example/ck.pth"),
    ("Http://host.example/ck.pth", SourceKind.URL, "Http://host.example/ck.pth", None, "Http://host.example/ck.pth"),
    ("hf:IDEA-Research/dino-4scale", SourceKind.HUB, "IDEA-Research/dino-4scale", None, "hf:IDEA-Research/dino-4scale"),
    ("hf:org/model.v2@0123abc", SourceKind.HUB, "org/model.v2", "0123abc", "hf:org/model.v2@0123abc"),
    ("runs/mine/best.pth", SourceKind.FILE, "runs/mine/best.pth", None, "best.pth"),
    ("~/checkpoints/x.pth", SourceKind.FILE, "~/checkpoints/x.pth", None, "x.pth"),
])
def test_parse_and_round_trip(text, kind, value, revision, name):
    source = Source.parse(text)
    assert (source.kind, source.value, source.revision, source.name) == (kind, value, revision, name)
    assert Source.parse(str(source)) == source and Source.parse(source) is source
    assert str(source) == (text if kind not in (SourceKind.SHIPPED,) else "shipped")


def test_local_paths_files_and_folders(tmp_path):
    folder = tmp_path / "saved"
    folder.mkdir()
    assert Source.parse(str(folder)).kind is SourceKind.FOLDER and Source.parse(folder).kind is SourceKind.FOLDER
    assert Source.parse(tmp_path / "ck.pth") == Source(SourceKind.FILE, str(tmp_path / "ck.pth"))
    assert Source.parse("~/x.pth").path == Path.home() / "x.pth"
    assert Source.parse("shipped").path == SHIPPED_CHECKPOINT and SHIPPED_CHECKPOINT.is_absolute()
    with pytest.raises(ValueError, match="not a file on this machine"):
        Source.parse("zoo:dino-4scale-r50").path


@pytest.mark.parametrize("text, message", [
    ("", "no model source given"),
    ("   ", "no model source given"),
    ("zoo:nope", "unknown model zoo id 'nope'"),
    ("untrained:dino-99scale", "unknown variant 'dino-99scale'"),
    ("hf:not-a-repo", "not a Hugging Face Hub model id"),
    ("hf:a/../b", "not a Hugging Face Hub model id"),
    ("hf:org/name@bad rev", "not a Hub revision"),
    ("ftp://host/x.pth", "only http\\(s\\) URLs"),
    ("file:///etc/passwd", "only http\\(s\\) URLs"),
])
def test_parse_refuses(text, message):
    with pytest.raises(ValueError, match=message):
        Source.parse(text)


def test_bare_zoo_ids_where_accepted(tmp_path, monkeypatch):
    assert Source.parse("dino-4scale-r50").kind is SourceKind.FILE  # a path unless asked
    assert Source.parse("dino-4scale-r50", bare_zoo=True) == Source(SourceKind.ZOO, "dino-4scale-r50")
    assert Source.zoo("dino-4scale-r50") == Source.zoo("zoo:dino-4scale-r50")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dino-4scale-r50").write_bytes(b"")  # a file of that name wins
    assert Source.parse("dino-4scale-r50", bare_zoo=True).kind is SourceKind.FILE


def test_the_type_is_checked():
    with pytest.raises(ValueError, match="only hf: sources have a revision"):
        Source(SourceKind.ZOO, "dino-4scale-r50", "main")
    with pytest.raises(ValueError, match="needs one"):
        Source(SourceKind.FILE, "")
    with pytest.raises(AttributeError):
        Source.parse("shipped").value = "x"  # frozen


@pytest.mark.parametrize("text", ["hf:IDEA-Research/dino@main", "hf:org/name"])
def test_commands_that_need_dino_refuse_transformers_models(text):
    from dino_demo.sources.loader import build

    with pytest.raises(ValueError, match="^transformers-format models: .*needs a DINO checkpoint"):
        build(text)


def test_hub_models_go_to_the_families_loader(monkeypatch):
    from dino_demo.explore.models import load
    from dino_demo.sources.download import DownloadError

    monkeypatch.setenv("DINO_DEMO_OFFLINE", "1")  # reaches the Hub download, which is switched off
    with pytest.raises(DownloadError, match="downloads are switched off"):
        load("hf:org/name@main")
    with pytest.raises(ValueError, match="no variant to force"):
        load("hf:org/name", "dino-tiny")


def test_a_save_pretrained_folder_is_a_transformers_model(tmp_path):
    from dino_demo.explore.models import load

    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="bert"):  # the families loader read it: not a detector it knows
        load(str(tmp_path))
    (tmp_path / "config.json").unlink()
    with pytest.raises(ValueError, match="folder without config.json"):
        load(tmp_path)


def test_the_shipped_model_loads_from_any_directory(tmp_path):
    """The README's library snippet: `load("shipped")` from a directory that is not the project's."""
    code = ("from dino_demo.explore.models import load\n"
            "from dino_demo.sources.checkpoint import default_model, load_model\n"
            "detector = load('shipped')\n"
            "model, cfg = detector.model, detector.config\n"
            "assert cfg.name == 'dino-tiny'\n"
            "assert load_model('shipped')[1] == cfg == default_model()[1]\n"
            "print('ok')\n")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_sources_are_parsed_in_one_place():
    """Only sources/source.py reads the prefixes; the rest of the library asks a Source."""
    pattern = re.compile(r"""(startswith|removeprefix)\(\s*\(?["'](zoo:|untrained:|hf:|https?://)|"://" in """)
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if p.name != "source.py" and pattern.search(p.read_text())]
    # The page's modules are the UI's (they will ask a Source with the typed page state).
    assert {o for o in offenders if not o.startswith("ui/")} <= {"sources/download.py"}, offenders
