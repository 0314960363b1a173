"""`python app.py` as a process: it serves, and a SIGTERM (a stopped container or Space) shuts it
down cleanly, its temporary files removed."""
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import free_port

from dino_demo.paths import PROJECT_ROOT


@pytest.mark.slow
def test_sigterm_removes_the_apps_temporary_files(tmp_path):
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "TMPDIR": str(tmp_path),
           "GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "DINO_DEMO_OP": "reference"}
    process = subprocess.Popen([sys.executable, "app.py"], cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"the app did not start: {process.stderr.read()[-2000:]}") from None
                time.sleep(0.5)
        assert list(tmp_path.glob("dino-explorer-*")), "the app keeps its files in a folder of its own"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert not list(tmp_path.glob("dino-explorer-*"))
