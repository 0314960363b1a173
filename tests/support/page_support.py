"""What the page tests share: the page's handlers by name (as each part of the page connects them)
and a Detect called directly, without Gradio."""
from __future__ import annotations

from dino_demo.ui import detections_tab, encoder_tab, query_tab, selection
from dino_demo.ui.detect import Detect


def handler(services, name: str):
    """The re-drawing handler `name` (a function of `(event, stored)`) of the part of the page that
    owns it."""
    for part in (selection, detections_tab, query_tab):
        if hasattr(part, name):
            return getattr(part, name)
    return getattr(encoder_tab.EncoderTab(services.models), name)


def redraw(services, name: str, event):
    """Handler `name` run through the one guard, as the page's events run it."""
    return services.results.redraw(handler(services, name), event)


def detect(services, event, progress=None):
    """The Detect button's handler."""
    return Detect(services).detect(event) if progress is None else Detect(services).detect(event, progress)
