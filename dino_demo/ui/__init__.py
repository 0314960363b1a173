"""The Gradio page: `build_demo()` returns the queued gr.Blocks; `launch()` serves it.

Layout and wiring are in `layout`, behaviour in `callbacks` (plain methods returning the views they
change), input checks in `inputs`, the model list in `choices`, per-session state in `session`,
the app-wide store of results in `store`.
"""
from __future__ import annotations

import os

import gradio as gr

from .layout import build_demo

MAX_UPLOAD = "50mb"


def launch(demo: gr.Blocks | None = None, server_name: str | None = None, server_port: int | None = None,
           **kwargs) -> gr.Blocks:
    """Serve `demo` (built when not given) on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT
    (127.0.0.1:7860 by default)."""
    demo = demo or build_demo()
    kwargs.setdefault("max_file_size", MAX_UPLOAD)
    demo.launch(
        server_name=server_name or os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=server_port or int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        **kwargs,
    )
    return demo


__all__ = ["build_demo", "launch"]
