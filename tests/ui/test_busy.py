"""Under load: the page config is built once and served to many visitors at once
(ui.static_answers), the queue holds a bounded number of waiting events, uploads and joins beyond
it are refused at once (ui.admission), and a model run that cannot get its slot says "busy, try
again" (ui.busy)."""
from __future__ import annotations

import socket
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import gradio as gr
import httpx
import pytest
from conftest import free_port

from dino_demo.ui import busy


def test_the_page_config_is_built_once_for_many_visitors(monkeypatch):
    """Twenty visitors at once: Gradio copies its config for one of them only; every answer is
    the same bytes."""
    from gradio import utils

    from dino_demo.ui import launch

    with gr.Blocks() as demo:
        box = gr.Textbox()
        gr.Button().click(lambda x: x, box, box)
    demo.queue()
    copies = []
    original = utils.safe_deepcopy

    def counting(value):
        if value is demo.config:
            copies.append(1)
        return original(value)

    monkeypatch.setattr(utils, "safe_deepcopy", counting)
    port = free_port()
    launch(demo, server_port=port, prevent_thread_lock=True)
    try:
        url = f"http://127.0.0.1:{port}/config"
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda _: urllib.request.urlopen(url, timeout=60).read(), range(20)))
        assert len(set(answers)) == 1 and len(copies) == 1
        other = urllib.request.urlopen(f"http://127.0.0.1:{port}/config?deep_link=x", timeout=60).read()
        assert other and len(copies) == 2  # another form of request is another answer
    finally:
        demo.close()


def test_a_model_run_waits_for_its_slot_a_bounded_time():
    slot = threading.BoundedSemaphore(1)
    with busy.model_turn(slot, 0.05):
        with pytest.raises(ValueError, match="busy .* try again"):
            with busy.model_turn(slot, 0.05):
                pass
    with busy.model_turn(slot, 0.05):  # released again
        pass


def test_the_queue_holds_a_bounded_number_of_waiting_events(monkeypatch):
    monkeypatch.delenv(busy.QUEUE_VARIABLE, raising=False)
    assert busy.queue_size() == 16
    monkeypatch.setenv(busy.QUEUE_VARIABLE, "4")
    assert busy.queue_size() == 4
    from dino_demo.ui.layout import build_app
    from dino_demo.ui.settings import AppSettings

    app = build_app(AppSettings(device="cpu", model_concurrency=1))
    try:
        assert app.demo._queue.max_size == 4
    finally:
        app.sweeper.stop()


def _held_page(release: threading.Event) -> gr.Blocks:
    """A page whose one event holds its single slot until `release` is set."""
    with gr.Blocks() as demo:
        box = gr.Textbox()
        gr.Button().click(lambda x: release.wait(120) and x, box, box, api_name="hold", concurrency_limit=1)
    return demo


def _join(url: str, session: str) -> str:
    """POST one queue join as gradio_client does (with a generous time limit): its status code
    and detail, or the name of the error it raised."""
    body = {"data": ["x"], "fn_index": 0, "session_hash": session, "event_data": None, "trigger_id": None}
    try:
        answer = httpx.post(f"{url}/gradio_api/queue/join", json=body, timeout=15)
    except httpx.HTTPError as error:
        return type(error).__name__
    return f"{answer.status_code} {answer.json().get('detail', '')}"


def test_every_join_is_answered_while_new_sessions_state_is_built(monkeypatch):
    """Ten visitors join at once while a run holds the slot, and Gradio's copy of the page for
    each new session is slow (three seconds here, as a large page on a loaded machine): each is
    answered, admitted or refused as busy, none left to time out on the client's side."""
    from gradio.state_holder import SessionState

    from dino_demo.ui import launch

    original = SessionState.__init__

    def slow(self, blocks):
        time.sleep(3.0)
        original(self, blocks)

    release = threading.Event()
    demo = _held_page(release).queue(max_size=6)
    port = free_port()
    launch(demo, server_port=port, prevent_thread_lock=True, quiet=True)
    monkeypatch.setattr(SessionState, "__init__", slow)
    try:
        url = f"http://127.0.0.1:{port}"
        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(lambda _: _join(url, uuid.uuid4().hex[:10]), range(10)))
        admitted = [a for a in answers if a.startswith("200")]
        refused = [a for a in answers if a.startswith("503")]
        assert len(admitted) + len(refused) == 10, answers
        assert 1 <= len(admitted) <= 7 and refused, answers  # one running, at most six waiting
        assert all(busy.BUSY_MESSAGE in a for a in refused), refused
    finally:
        release.set()
        demo.close()


def _upload_started(port: int) -> socket.socket:
    """A connection that has sent an upload's headers and the start of its body, and waits."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection.sendall(b"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
                       b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n\r\n")
    return connection


def _upload(url: str) -> httpx.Response:
    return httpx.post(f"{url}/gradio_api/upload", files=[("files", ("a.txt", b"abc"))], timeout=30)


def test_uploads_beyond_the_bound_are_refused_at_once(monkeypatch):
    """With the queue's size (here 2) uploads being received, another is refused with the busy
    message (its body read, so that the client gets the answer); once they end, uploads pass."""
    from dino_demo.ui import launch

    monkeypatch.setenv(busy.QUEUE_VARIABLE, "2")
    release = threading.Event()
    demo = _held_page(release).queue()
    port = free_port()
    launch(demo, server_port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}"
    held = [_upload_started(port), _upload_started(port)]
    try:
        deadline = time.monotonic() + 30
        answer = _upload(url)
        while answer.status_code == 200 and time.monotonic() < deadline:  # the held two not yet counted
            time.sleep(0.2)
            answer = _upload(url)
        assert answer.status_code == 503 and answer.json() == {"detail": busy.BUSY_MESSAGE}
        for connection in held:
            connection.close()
        deadline = time.monotonic() + 30
        answer = _upload(url)
        while answer.status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.2)
            answer = _upload(url)
        assert answer.status_code == 200
    finally:
        for connection in held:
            connection.close()
        release.set()
        demo.close()


def test_an_oversized_queue_join_is_refused_before_it_is_read_whole():
    """A join is a few hundred bytes of JSON: one of several MiB is cut short with 413."""
    from dino_demo.ui import admission, launch

    release = threading.Event()
    demo = _held_page(release).queue()
    port = free_port()
    launch(demo, server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        body = b'{"session_hash": "' + b"x" * (admission.JOIN_BODY_LIMIT * 3) + b'"}'
        answer = httpx.post(f"http://127.0.0.1:{port}/gradio_api/queue/join", content=body,
                            headers={"content-type": "application/json"}, timeout=60)
        assert answer.status_code == 413, answer.text
        assert "too large" in answer.json()["detail"]
    finally:
        release.set()
        demo.close()
