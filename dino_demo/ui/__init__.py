"""The Gradio page: `build_demo()` returns the queued gr.Blocks; `launch()` serves it.

Layout and wiring are in `layout`, behaviour in `callbacks` (plain methods returning the views they
change), input checks in `inputs`, the model list in `choices`, per-session state in `session`,
the app-wide store of results in `store`.
"""
from __future__ import annotations

import signal
import threading

import gradio as gr

from .. import env
from .layout import build_demo

MAX_UPLOAD = "50mb"


def launch(demo: gr.Blocks | None = None, server_name: str | None = None, server_port: int | None = None,
           **kwargs) -> gr.Blocks:
    """Serve `demo` (built when not given) on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT
    (127.0.0.1:7860 by default)."""
    demo = demo or build_demo()
    kwargs.setdefault("max_file_size", MAX_UPLOAD)
    if not kwargs.get("prevent_thread_lock") and threading.current_thread() is threading.main_thread():
        # A stopped container or Space sends SIGTERM: shut down as on Ctrl-C, so that the app's
        # temporary files are removed on the way out.
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        demo.launch(
            server_name=server_name or env.text("GRADIO_SERVER_NAME") or "127.0.0.1",
            server_port=server_port or env.whole_number("GRADIO_SERVER_PORT", 7860),
            **kwargs,
        )
    except KeyboardInterrupt:  # interrupted while starting, before Gradio's own handler took over
        demo.close()
    return demo


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


__all__ = ["build_demo", "launch"]
