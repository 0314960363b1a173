"""Downloads against a local HTTP server on 127.0.0.1 (a thread of the test process); no internet.

Public mode refuses 127.0.0.1 by design, so its success paths cannot be shown against a local
server: the public-mode tests assert refusals, and where a first hop must succeed (a redirect
inward, a slow-drip server), `_public_address` is replaced so that 127.0.0.1 plays the public
internet and 127.0.0.2 the inside.
"""
import hashlib
import http.server
import logging
import os
import re
import threading
import time
from pathlib import Path

import pytest
from conftest import free_port

from dino_demo.sources import download, zoo
from dino_demo.sources.download import GENERIC_FAILURE, DownloadError, Policy, enforce_quota, fetch_url

PAYLOAD = os.urandom(300_000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    routes: dict = {}
    hits: dict = {}

    def log_message(self, *args):
        pass

    def do_GET(self):
        Handler.hits[self.path] = Handler.hits.get(self.path, 0) + 1
        route = Handler.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        route(self)


def send(body: bytes, length: int | None = None, delay: float = 0.0, chunk: int = 65536, stop_after: int | None = None):
    def respond(handler):
        handler.send_response(200)
        if length is not None:
            handler.send_header("Content-Length", str(length))
        handler.end_headers()
        sent = 0
        for start in range(0, len(body), chunk):
            if stop_after is not None and sent >= stop_after:
                handler.close_connection = True
                return  # drop the connection midway
            handler.wfile.write(body[start:start + chunk])
            handler.wfile.flush()
            sent += chunk
            time.sleep(delay)
    return respond


def redirect(location: str):
    def respond(handler):
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return respond


@pytest.fixture()
def server():
    Handler.routes, Handler.hits = {}, {}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", Handler.routes
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def environment(monkeypatch, tmp_path):
    for name in ("DINO_DEMO_OFFLINE", "HF_HUB_OFFLINE", "DINO_DEMO_PUBLIC", "SPACE_ID", download.HOSTS_VARIABLE,
                 download.QUOTA_VARIABLE, download.DEADLINE_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    # The zoo's folder only: the cache also holds the compiled op, which must not be rebuilt here.
    monkeypatch.setattr(zoo, "folder", lambda: tmp_path / "cache" / "zoo")
    download.forget_failures()  # each test starts with no failure remembered


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_success_with_progress_and_recorded_hash(server, tmp_path):
    base, routes = server
    routes["/w.pth"] = send(PAYLOAD, len(PAYLOAD))
    calls = []
    path = fetch_url(f"{base}/w.pth", tmp_path / "w.pth", progress=lambda done, total: calls.append((done, total)))
    assert path.read_bytes() == PAYLOAD
    assert calls[-1] == (len(PAYLOAD), len(PAYLOAD)) and all(t == len(PAYLOAD) for _, t in calls)
    assert files(tmp_path) == ["w.pth", "w.pth.sha256"]
    assert download.recorded_sha256(path) == DIGEST
    fetch_url(f"{base}/w.pth", tmp_path / "w.pth")  # the second time from the cache
    assert Handler.hits["/w.pth"] == 1


def test_dropped_connection_leaves_nothing(server, tmp_path):
    base, routes = server
    routes["/drop.pth"] = send(PAYLOAD, len(PAYLOAD), stop_after=100_000)
    with pytest.raises(DownloadError, match=r"got \d+ of the 300000 bytes"):
        fetch_url(f"{base}/drop.pth", tmp_path / "drop.pth", progress=lambda *a: None)
    assert files(tmp_path) == []


def test_wrong_sha256_leaves_nothing(server, tmp_path):
    base, routes = server
    routes["/w.pth"] = send(PAYLOAD, len(PAYLOAD))
    with pytest.raises(DownloadError, match="does not match the expected 0000"):
        fetch_url(f"{base}/w.pth", tmp_path / "w.pth", sha256="0" * 64, progress=lambda *a: None)
    assert files(tmp_path) == []
    fetch_url(f"{base}/w.pth", tmp_path / "w.pth", sha256=DIGEST, sha256_prefix=DIGEST[:8], progress=lambda *a: None)
    with pytest.raises(DownloadError, match="does not start with the published"):
        fetch_url(f"{base}/w.pth", tmp_path / "v.pth", sha256_prefix="ffffffff", progress=lambda *a: None)


def test_404(server, tmp_path):
    base, _ = server
    with pytest.raises(DownloadError, match="could not download .*HTTP status 404"):
        fetch_url(f"{base}/missing.pth", tmp_path / "missing.pth")
    assert files(tmp_path) == []


def test_redirect_is_followed(server, tmp_path):
    base, routes = server
    routes["/w.pth"] = send(PAYLOAD, len(PAYLOAD))
    routes["/moved"] = redirect("/w.pth")
    assert fetch_url(f"{base}/moved", tmp_path / "w.pth", progress=lambda *a: None).read_bytes() == PAYLOAD
    routes["/loop"] = redirect("/loop")
    with pytest.raises(DownloadError, match="more than 5 redirects"):
        fetch_url(f"{base}/loop", tmp_path / "loop.pth")


def test_oversize_is_refused_with_or_without_content_length(server, tmp_path):
    base, routes = server
    routes["/big"] = send(PAYLOAD, len(PAYLOAD))
    routes["/big-unannounced"] = send(PAYLOAD, None)
    policy = Policy(max_bytes=100_000)
    with pytest.raises(DownloadError, match="Content-Length 300000 is over the limit"):
        fetch_url(f"{base}/big", tmp_path / "big", policy=policy, progress=lambda *a: None)
    with pytest.raises(DownloadError, match="more than 100000 bytes"):
        fetch_url(f"{base}/big-unannounced", tmp_path / "big2", policy=policy, progress=lambda *a: None)
    assert files(tmp_path) == []


def test_two_concurrent_requests_download_once(server, tmp_path):
    base, routes = server
    routes["/slow.pth"] = send(PAYLOAD, len(PAYLOAD), delay=0.05)
    results, errors = [], []

    def get():
        try:
            results.append(fetch_url(f"{base}/slow.pth", tmp_path / "slow.pth", progress=lambda *a: None))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=get) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2 and Handler.hits["/slow.pth"] == 1
    assert results[0].read_bytes() == PAYLOAD


def test_changed_cache_file_is_downloaded_again(server, tmp_path):
    base, routes = server
    routes["/w.pth"] = send(PAYLOAD, len(PAYLOAD))
    path = fetch_url(f"{base}/w.pth", tmp_path / "w.pth", progress=lambda *a: None)
    path.write_bytes(b"tampered")
    assert fetch_url(f"{base}/w.pth", tmp_path / "w.pth", progress=lambda *a: None).read_bytes() == PAYLOAD
    assert Handler.hits["/w.pth"] == 2


def test_offline_switch(server, tmp_path, monkeypatch):
    base, routes = server
    routes["/w.pth"] = send(PAYLOAD, len(PAYLOAD))
    fetch_url(f"{base}/w.pth", tmp_path / "w.pth", progress=lambda *a: None)
    monkeypatch.setenv("DINO_DEMO_OFFLINE", "1")
    assert fetch_url(f"{base}/w.pth", tmp_path / "w.pth").read_bytes() == PAYLOAD  # cached: fine
    with pytest.raises(DownloadError, match="switched off"):
        fetch_url(f"{base}/w.pth", tmp_path / "other.pth")


def test_unreachable_zoo_file_says_what_to_download_and_where(monkeypatch):
    port = free_port()
    entry = zoo.ZooEntry("test-entry", "test", "dino-tiny", "official", "official",
                         (f"http://127.0.0.1:{port}/weights/tiny-test.pth",), 7, 0.0, 1, "none", "tests")
    with pytest.raises(DownloadError) as info:
        zoo.resolve(entry, progress=lambda *a: None)
    message = str(info.value)
    assert f"http://127.0.0.1:{port}/weights/tiny-test.pth" in message
    assert str(zoo.local_path(entry)) in message and "without a network" in message


def test_stale_part_files_are_removed(server, tmp_path):
    base, routes = server
    routes["/w.pth"] = send(PAYLOAD, len(PAYLOAD))
    stale, fresh = tmp_path / "old.pth.part", tmp_path / "busy.pth.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    fetch_url(f"{base}/w.pth", tmp_path / "w.pth", policy=Policy(deadline_s=60), progress=lambda *a: None)
    assert not stale.exists() and fresh.exists()


def test_quota_evicts_least_recently_used(server, tmp_path):
    base, routes = server
    routes["/w.pth"] = send(PAYLOAD, len(PAYLOAD))
    for name, age in (("a.pth", 300), ("b.pth", 200), ("c.pth", 100)):
        (tmp_path / name).write_bytes(b"\0" * 200_000)
        t = time.time() - age
        os.utime(tmp_path / name, (t, t))
    download.verify_file(tmp_path / "a.pth")  # using a.pth makes it the most recent
    fetch_url(f"{base}/w.pth", tmp_path / "w.pth", policy=Policy(quota_bytes=800_000), progress=lambda *a: None)
    assert files(tmp_path) == ["a.pth", "a.pth.sha256", "c.pth", "w.pth", "w.pth.sha256"]
    with pytest.raises(DownloadError, match="larger than the download cache's quota"):
        enforce_quota([tmp_path], 1000, incoming_bytes=2000)


# -- public mode ----------------------------------------------------------------------------------
PUBLIC = Policy(public=True, allowed_hosts=None)


def test_public_mode_from_the_environment(monkeypatch):
    monkeypatch.setenv("SPACE_ID", "someone/dino-explorer")
    policy = Policy.from_env()
    assert policy.public and policy.quota_bytes == download.PUBLIC_QUOTA_BYTES
    assert policy.host_allowed("huggingface.co") and policy.host_allowed("cdn-lfs.hf.co")
    assert policy.host_allowed("release-assets.githubusercontent.com") and not policy.host_allowed("example.com")
    monkeypatch.delenv("SPACE_ID")
    monkeypatch.setenv("DINO_DEMO_PUBLIC", "1")
    monkeypatch.setenv(download.HOSTS_VARIABLE, "*")
    monkeypatch.setenv(download.QUOTA_VARIABLE, "0.5")
    policy = Policy.from_env()
    assert policy.public and policy.allowed_hosts is None and policy.quota_bytes == 512 * 1024**2
    monkeypatch.delenv("DINO_DEMO_PUBLIC")
    assert not Policy.from_env().public


def test_public_mode_refuses_http_credentials_and_other_hosts(tmp_path):
    with pytest.raises(DownloadError, match="only https"):
        fetch_url("http://example.com/w.pth", tmp_path / "w", policy=PUBLIC)
    with pytest.raises(DownloadError, match="user names or passwords"):
        fetch_url("https://user:secret@example.com/w.pth", tmp_path / "w", policy=PUBLIC)
    with pytest.raises(DownloadError, match="not allowed here"):
        fetch_url("https://example.com/w.pth", tmp_path / "w", policy=Policy(public=True, allowed_hosts=frozenset({"huggingface.co"})))


def test_public_mode_refuses_inward_addresses_with_one_generic_message(server, tmp_path, caplog):
    base, routes = server
    routes["/w.pth"] = send(PAYLOAD, len(PAYLOAD))
    port = base.rsplit(":", 1)[1]
    messages = []
    for url in (f"https://127.0.0.1:{port}/w.pth", f"https://[::1]:{port}/w.pth", f"https://10.1.2.3:{port}/w.pth",
                f"https://169.254.169.254/latest/meta-data", f"https://[::ffff:127.0.0.1]:{port}/w.pth"):
        with caplog.at_level(logging.WARNING, logger="dino_demo.sources.download"):
            with pytest.raises(DownloadError) as info:
                fetch_url(url, tmp_path / "w.pth", policy=PUBLIC)
        messages.append(str(info.value))
    assert set(messages) == {GENERIC_FAILURE}
    assert "non-public address 127.0.0.1" in caplog.text and "169.254.169.254" in caplog.text
    assert Handler.hits == {}  # refused before connecting
    assert files(tmp_path) == []


def test_public_mode_generic_message_for_every_network_failure(server, tmp_path, monkeypatch):
    """404 and a refused connection read the same to a visitor (no port-scan oracle)."""
    base, _ = server
    monkeypatch.setattr(download, "_public_address", lambda address: address == "127.0.0.1")
    policy = Policy(public=True, allow_http=True)
    with pytest.raises(DownloadError) as not_found:
        fetch_url(f"{base}/missing", tmp_path / "a", policy=policy)
    with pytest.raises(DownloadError) as refused:
        fetch_url("http://127.0.0.1:9/x", tmp_path / "b", policy=policy)
    assert str(not_found.value) == str(refused.value) == GENERIC_FAILURE


def test_public_mode_checks_every_redirect_hop(server, tmp_path, monkeypatch, caplog):
    base, routes = server
    port = base.rsplit(":", 1)[1]
    routes["/w.pth"] = send(PAYLOAD, len(PAYLOAD))
    routes["/inward"] = redirect(f"http://127.0.0.2:{port}/w.pth")
    routes["/outward"] = redirect("/w.pth")
    # Here 127.0.0.1 stands for the public internet and 127.0.0.2 for the inside.
    monkeypatch.setattr(download, "_public_address", lambda address: address == "127.0.0.1")
    policy = Policy(public=True, allow_http=True)
    assert fetch_url(f"{base}/outward", tmp_path / "ok.pth", policy=policy, progress=lambda *a: None).read_bytes() == PAYLOAD
    with caplog.at_level(logging.WARNING, logger="dino_demo.sources.download"):
        with pytest.raises(DownloadError, match=re.escape(GENERIC_FAILURE)):
            fetch_url(f"{base}/inward", tmp_path / "in.pth", policy=policy)
    assert "non-public address 127.0.0.2" in caplog.text
    assert Handler.hits["/inward"] == 1 and Handler.hits["/w.pth"] == 1


def test_public_mode_total_deadline_stops_a_slow_drip(server, tmp_path, monkeypatch):
    base, routes = server
    routes["/drip"] = send(PAYLOAD, len(PAYLOAD), delay=0.2, chunk=100)  # 500 bytes a second
    monkeypatch.setattr(download, "_public_address", lambda address: address == "127.0.0.1")
    start = time.monotonic()
    with pytest.raises(DownloadError, match=re.escape(GENERIC_FAILURE)):
        fetch_url(f"{base}/drip", tmp_path / "drip", policy=Policy(public=True, allow_http=True, deadline_s=1.5),
                  progress=lambda *a: None)
    assert time.monotonic() - start < 5
    assert files(tmp_path) == []


# -- a host that accepts connections and never answers ----------------------------------------------
@pytest.fixture()
def silent_host():
    """A socket on 127.0.0.1 that accepts every connection and never sends a byte."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.2)
    accepted, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1], accepted
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


@pytest.fixture()
def hub_at(tmp_path):
    """fetch_hub's keyword arguments for a local endpoint on `port`, with an empty cache."""
    download.forget_failures()
    yield lambda port: {"endpoint": f"http://127.0.0.1:{port}", "cache_dir": tmp_path / "hub"}
    download.forget_failures()


def test_a_silent_hub_is_given_up_at_the_deadline_whatever_the_library_retries(silent_host, hub_at):
    port, accepted = silent_host
    start = time.monotonic()
    with pytest.raises(DownloadError, match="deadline of 2 s"):
        download.fetch_hub("someone/model", "w.pth", progress=lambda *a: None, **hub_at(port),
                           policy=Policy(deadline_s=2.0, stall_s=60.0, retry_after_s=0))
    assert time.monotonic() - start < 4.0  # not the ~390 s of huggingface_hub's own timeouts and retries
    assert accepted  # it did connect: the silence is what was given up on


def test_a_stalled_hub_download_fails_fast_for_the_next_request(silent_host, hub_at):
    port, accepted = silent_host
    policy = Policy(deadline_s=600.0, stall_s=1.5, retry_after_s=30.0)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="no data for 2 s"):
        download.fetch_hub("someone/model", "w.pth", progress=lambda *a: None, policy=policy, **hub_at(port))
    assert time.monotonic() - start < 4.0
    connections = len(accepted)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="try again in (29|30) s"):
        download.fetch_hub("someone/model", "w.pth", progress=lambda *a: None, policy=policy, **hub_at(port))
    assert time.monotonic() - start < 0.5 and len(accepted) == connections  # no new connection
    # Once the failure is forgotten, the abandoned download still winding down is not doubled.
    download.forget_failures()
    start = time.monotonic()
    with pytest.raises(DownloadError, match="still running"):
        download.fetch_hub("someone/model", "w.pth", progress=lambda *a: None, policy=policy, **hub_at(port))
    assert time.monotonic() - start < 3.0


def test_a_failed_url_fails_fast_then_is_tried_again_after_the_wait(server, tmp_path, monkeypatch):
    base, routes = server
    policy = Policy(retry_after_s=0.5)
    with pytest.raises(DownloadError, match="404"):
        fetch_url(f"{base}/later.pth", tmp_path / "later.pth", policy=policy)
    routes["/later.pth"] = send(PAYLOAD, len(PAYLOAD))
    with pytest.raises(DownloadError, match="404.*try again in"):
        fetch_url(f"{base}/later.pth", tmp_path / "later.pth", policy=policy)
    assert Handler.hits["/later.pth"] == 1  # the second request never reached the server
    time.sleep(0.6)
    assert fetch_url(f"{base}/later.pth", tmp_path / "later.pth", policy=policy,
                     progress=lambda *a: None).read_bytes() == PAYLOAD


def test_the_retry_wait_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(download.RETRY_AFTER_VARIABLE, "0")
    assert Policy.from_env().retry_after_s == 0
    monkeypatch.setenv(download.RETRY_AFTER_VARIABLE, "45")
    assert Policy.from_env().retry_after_s == 45
    monkeypatch.delenv(download.RETRY_AFTER_VARIABLE)
    assert Policy.from_env().retry_after_s == download.DEFAULT_RETRY_AFTER_S
