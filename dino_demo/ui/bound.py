"""Handlers of the analysis, region and compare tabs bound to their components: a handler returns
{view name: value}; `bind` maps names to the page's components, serves drawn pictures as files
written once, and turns a ValueError into a message on the page."""
from __future__ import annotations

import functools
import logging

import gradio as gr
import numpy as np

from .files import save_drawn_image

log = logging.getLogger("dino_explorer")


def bind(ui: dict, handler):
    @functools.wraps(handler)
    def call(*args, **kwargs):
        try:
            views = handler(*args, **kwargs)
        except ValueError as err:
            log.info("%s: %s", handler.__name__, err)
            raise gr.Error(str(err), print_exception=False) from None
        return {ui[name]: served(ui[name], value) for name, value in views.items()}
    return call


def served(component, value):
    """A drawn picture (an array, or a pair of arrays for an ImageSlider) as file paths."""
    if isinstance(component, gr.ImageSlider) and isinstance(value, tuple):
        return tuple(save_drawn_image(v, component.GRADIO_CACHE, "png") if isinstance(v, np.ndarray) else v
                     for v in value)
    if isinstance(component, gr.Image) and isinstance(value, np.ndarray):
        return save_drawn_image(value, component.GRADIO_CACHE, component.format or "webp")
    return value
