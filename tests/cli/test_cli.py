"""The installed command line: `dino-demo` and `python -m dino_demo` from any directory."""
import importlib.metadata
import shutil
import subprocess
import sys

import pytest

from dino_demo.cli import COMMANDS, main


def test_usage_lists_every_command(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().err
    assert all(name in text for name in COMMANDS)
    assert main(["no-such-command"]) == 2


def test_a_user_error_is_one_line_and_status_1(tmp_path, capsys):
    bad = tmp_path / "junk.pth"
    bad.write_text("not a checkpoint")
    status = main(["detect", str(tmp_path / "missing.png"), "--checkpoint", str(bad), "--out", str(tmp_path / "o")])
    assert status == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_installed_commands_work_from_any_directory(tmp_path):
    try:
        importlib.metadata.distribution("dino-explorer")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the project is not installed (pip install -e .)")
    script = shutil.which("dino-demo")
    assert script, "pip install -e . should have put a dino-demo command on PATH"
    for command in ([script, "detect", "--help"], [sys.executable, "-m", "dino_demo", "detect", "--help"]):
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "--threshold" in done.stdout
