"""The Gradio page: `build_demo()` returns the queued gr.Blocks (`build_app()` with its services);
`launch()` serves it, with Gradio's MCP server when asked (`DINO_DEMO_MCP=1`, `python app.py --mcp`).

The page is put together in `layout` and connected in `wiring`; each part of it has a module with
its components (`build`), its connections (`wire`) and its handlers (plain functions of one parsed
`events.PageEvent`, returning the views they change): `input_panel`, `detect`, `selection`, one
module per tab group (`detections_tab`, `query_tab`, `encoder_tab`, `denoising_tab`, `steps_tab`,
`region_tab`, `analysis_tab`, `compare_tab`). The controls are parsed in `inputs`; the app-wide
services (`services`: `session.Sessions`, `model_cache.PageModels`, `results.Results` over the
`store.ResultStore`, with `cost_policy`) are made once per app. What the views draw is
framework-free, in `dino_demo.explore.panels`.
"""
from __future__ import annotations

import signal
import threading

import gradio as gr
from starlette.middleware import Middleware

from .. import env
from .admission import BusyGate
from .layout import App, build_app, build_demo
from .static_answers import StaticAnswers

MAX_UPLOAD = "50mb"


def launch(demo: gr.Blocks | None = None, server_name: str | None = None, server_port: int | None = None, *,
           mcp_server: bool | None = None, **kwargs) -> gr.Blocks:
    """Serve `demo` (built when not given) on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT
    (127.0.0.1:7860 by default); `mcp_server` (default `DINO_DEMO_MCP`) also serves the API
    endpoints as MCP tools at /gradio_api/mcp/."""
    demo = demo or build_demo()
    kwargs.setdefault("max_file_size", MAX_UPLOAD)
    app_kwargs = kwargs.setdefault("app_kwargs", {})
    # Overload refused at once (admission): uploads and queue joins beyond what the queue holds.
    app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), Middleware(BusyGate)]
    if not kwargs.get("auth"):  # the page config, built once (static_answers): many visitors at once
        app_kwargs["middleware"].append(Middleware(StaticAnswers))
    if not kwargs.get("prevent_thread_lock") and threading.current_thread() is threading.main_thread():
        # A stopped container or Space sends SIGTERM: shut down as on Ctrl-C, so that the app's
        # temporary files are removed on the way out.
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        demo.launch(
            server_name=server_name or env.text("GRADIO_SERVER_NAME") or "127.0.0.1",
            server_port=server_port or env.whole_number("GRADIO_SERVER_PORT", 7860),
            mcp_server=env.mcp_server() if mcp_server is None else mcp_server,
            **kwargs,
        )
    except KeyboardInterrupt:  # interrupted while starting, before Gradio's own handler took over
        demo.close()
    return demo


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


__all__ = ["App", "build_app", "build_demo", "launch"]
