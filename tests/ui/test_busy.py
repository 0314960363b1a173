"""Under load: the page config is built once and served to many visitors at once
(ui.static_answers), the queue holds a bounded number of waiting events, and a model run that
cannot get its slot says "busy, try again" (ui.busy)."""
from __future__ import annotations

import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import gradio as gr
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
