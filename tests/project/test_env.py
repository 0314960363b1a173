"""Environment settings: one prefix, read in one module, old names accepted with a warning."""
import logging
import re
from pathlib import Path

import pytest

from dino_demo import env
from dino_demo.ui import settings

PACKAGE = Path(__file__).resolve().parents[2] / "dino_demo"


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(env, "_warned", set())
    for new, old in env.OLD_NAMES.items():
        monkeypatch.delenv(new, raising=False)
        monkeypatch.delenv(old, raising=False)


def test_every_project_variable_has_the_one_prefix():
    assert all(new.startswith(env.PREFIX) and not old.startswith(env.PREFIX) for new, old in env.OLD_NAMES.items())
    names = set()
    for path in PACKAGE.rglob("*.py"):
        names |= set(re.findall(r"\bDINO_[A-Z_]+\b", path.read_text()))
    old_names = set(env.OLD_NAMES.values())
    stray = {n for n in names if not n.startswith(env.PREFIX) and n not in old_names and n != "DINO_"}
    assert not stray, f"variables without the {env.PREFIX} prefix: {sorted(stray)}"


def test_only_env_reads_the_environment():
    """Other modules ask env.py; ops/extension.py only sets (and restores) the compiler's variables."""
    reads = re.compile(r"os\.environ\.get\(|os\.getenv\(|in os\.environ\b")
    readers = {str(p.relative_to(PACKAGE)): reads.findall(p.read_text()) for p in PACKAGE.rglob("*.py")
               if p.name != "env.py"}
    readers = {name: found for name, found in readers.items() if found}
    assert readers == {"ops/extension.py": ["os.environ.get("]}  # `_env` saving the value it restores
    assert "previous = os.environ.get(key)" in (PACKAGE / "ops" / "extension.py").read_text()


def test_old_name_still_works_with_a_warning_naming_the_new_one(monkeypatch, caplog):
    monkeypatch.setenv("DINO_MODEL_CONCURRENCY", "3")
    monkeypatch.setenv("DINO_DEVICE", "cpu")
    with caplog.at_level(logging.WARNING, logger="dino_demo.env"), \
            pytest.warns(DeprecationWarning, match="DINO_MODEL_CONCURRENCY is deprecated: set DINO_DEMO_MODEL_CONCURRENCY"):
        app = settings.AppSettings.from_env()
    assert app.model_concurrency == 3 and app.device == "cpu"
    assert "set DINO_DEMO_DEVICE instead" in caplog.text


def test_new_name_wins_over_the_old_one(monkeypatch, recwarn):
    monkeypatch.setenv("DINO_DEMO_RESULT_BUDGET_MB", "64")
    monkeypatch.setenv("DINO_RESULT_BUDGET_MB", "1024")
    assert settings.AppSettings.from_env().result_budget_mb == 64
    assert not [w for w in recwarn if w.category is DeprecationWarning]


def test_old_checkpoint_dirs_name_is_read(monkeypatch, tmp_path):
    monkeypatch.setenv("DINO_CHECKPOINT_DIRS", str(tmp_path))
    with pytest.warns(DeprecationWarning):
        assert settings.checkpoint_dirs() == (tmp_path.resolve(),)
    assert settings.CHECKPOINT_DIRS_VARIABLE == "DINO_DEMO_CHECKPOINT_DIRS"


@pytest.mark.parametrize("variable, value, getter", [
    ("DINO_DEMO_MODEL_CONCURRENCY", "two", lambda: settings.AppSettings.from_env()),
    ("DINO_DEMO_MODEL_CONCURRENCY", "0", lambda: settings.AppSettings.from_env()),
    ("DINO_DEMO_PRECISION", "float8", lambda: settings.AppSettings.from_env()),
    ("DINO_DEMO_PUBLIC", "perhaps", lambda: __import__("dino_demo.sources.download").sources.download.Policy.from_env()),
    ("DINO_DEMO_OP", "fast", lambda: __import__("dino_demo.ops").ops.backend("cpu")),
])
def test_one_message_for_a_bad_value(monkeypatch, variable, value, getter):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=rf"^{variable} must be .*, got '{value}'$"):
        getter()


def test_flags(monkeypatch):
    for value, on in (("1", True), ("Yes", True), ("on", True), ("", False), ("0", False), ("off", False)):
        monkeypatch.setenv("DINO_DEMO_OFFLINE", value)
        assert env.flag("DINO_DEMO_OFFLINE") is on


def test_another_tools_flag_is_read_as_that_tool_reads_it(monkeypatch):
    from dino_demo.sources import download

    monkeypatch.delenv("DINO_DEMO_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "maybe")
    assert download.offline() is False
    monkeypatch.setenv("HF_HUB_OFFLINE", "ON")
    assert download.offline() is True
