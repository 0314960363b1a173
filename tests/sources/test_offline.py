"""No network: a zoo or Hub model, or a URL, fails within seconds with one short line naming the
host (not after a download library's retries with its raw multi-line error). Only 127.0.0.1."""
import socket
import time

import pytest

from dino_demo.sources import download, zoo
from dino_demo.sources.download import DownloadError, Unreachable

HUB_ENTRY = zoo.ZooEntry("test-hub", "dino-tiny on the Hub, for tests", "dino-tiny", "official", "official",
                         ("https://huggingface.co/nobody/nothing/resolve/main/test-hub.pth",), 7, 0.0, 12, "none", "tests")


@pytest.fixture(autouse=True)
def online(monkeypatch, tmp_path):
    for name in ("DINO_DEMO_OFFLINE", "HF_HUB_OFFLINE", "SPACE_ID", "DINO_DEMO_PUBLIC", "DINO_DEMO_ALLOWED_HOSTS",
                 "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(zoo, "folder", lambda: tmp_path / "zoo")
    monkeypatch.setattr(zoo, "ENTRIES", (*zoo.ENTRIES, HUB_ENTRY))
    monkeypatch.setattr(zoo, "_BY_ID", {**zoo._BY_ID, HUB_ENTRY.id: HUB_ENTRY})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


@pytest.fixture()
def refused_port():
    """A local port nothing listens on: connections to it are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def silent_port():
    """A local port whose listener never accepts, with its queue full: a connection gets no answer."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(8):  # fill the accept queue; later connection attempts hang
        client = socket.socket()
        client.setblocking(False)
        client.connect_ex(("127.0.0.1", port))
        fillers.append(client)
    time.sleep(0.2)
    yield port
    for client in fillers:
        client.close()
    server.close()


def hub_at(monkeypatch, port):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")


def test_a_zoo_model_on_the_hub_fails_fast_when_the_hub_is_unreachable(monkeypatch, refused_port):
    hub_at(monkeypatch, refused_port)
    start = time.monotonic()
    with pytest.raises(DownloadError) as failure:
        zoo.resolve(HUB_ENTRY.id)
    assert time.monotonic() - start < 3
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith("127.0.0.1 is unreachable (connection refused): this machine looks offline")
    assert f"to use test-hub without a network, download {HUB_ENTRY.urls[0]} yourself" in message


def test_a_host_that_does_not_answer_fails_within_the_connect_timeout(monkeypatch, silent_port):
    monkeypatch.setattr(download, "CONNECT_TIMEOUT_S", 0.5)
    with socket.socket() as probe_socket:  # the queue is full: this very connection must hang
        probe_socket.settimeout(0.3)
        with pytest.raises(OSError):
            probe_socket.connect(("127.0.0.1", silent_port))
    hub_at(monkeypatch, silent_port)
    start = time.monotonic()
    with pytest.raises(Unreachable, match=r"^127\.0\.0\.1 is unreachable \(no answer within 0\.5 s\)"):
        download.fetch_hub("nobody/nothing", "test-hub.pth")
    assert time.monotonic() - start < 3


def test_a_plain_url_fails_fast_with_the_same_line(tmp_path, refused_port):
    from dino_demo.sources.checkpoint import load_model

    start = time.monotonic()
    with pytest.raises(Unreachable, match=r"^127\.0\.0\.1 is unreachable \(connection refused\)") as failure:
        load_model(f"http://127.0.0.1:{refused_port}/model.pth", cache_dir=tmp_path / "cache")
    assert time.monotonic() - start < 3 and failure.value.host == "127.0.0.1"


def test_a_host_whose_name_does_not_resolve():
    with pytest.raises(Unreachable, match=r"^nowhere\.invalid is unreachable \(its name does not resolve"):
        download.probe("https://nowhere.invalid/file.pth")


def test_the_command_line_prints_one_line(monkeypatch, refused_port, tmp_path, capsys):
    from dino_demo.cli import main

    from conftest import ROOT

    hub_at(monkeypatch, refused_port)
    start = time.monotonic()
    status = main(["detect", str(ROOT / "examples" / "shapes-90210-0.png"), "--model", "test-hub",
                   "--out", str(tmp_path / "out")])
    assert status == 1 and time.monotonic() - start < 5
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: 127.0.0.1 is unreachable (connection refused)")
