"""The page's cost policy for one model run: the input cap a Detect asks for, bounded on a public
server (`explore.cost.bounded_max_input`, with a warning when it is lower than asked), and the
model input's size and cost, logged before the model runs."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import gradio as gr

from ..explore import cost
from ..io.preprocess import model_input_size
from ..sources.download import Policy

log = logging.getLogger("dino_explorer")


@dataclass(frozen=True)
class RunSize:
    """max_input: the cap on the model input's longer side the run uses (px); input_size: the
    model input's (height, width); estimate: what the run costs (`explore.cost.RequestCost`)."""

    max_input: int
    input_size: tuple[int, int]
    estimate: cost.RequestCost


def run_size(cfg, model_id: str, requested: int, image_size: tuple[int, int]) -> RunSize:
    """The size of a run of `cfg` on an image of `image_size` (height, width) asked with the cap
    `requested`."""
    max_input = cost.bounded_max_input(cfg, requested, Policy.from_env().public)
    if max_input < min(requested, cfg.max_size):
        gr.Warning(f"This server caps the model input at {max_input} px (the usual maximum of {cfg.name}).")
    input_size = model_input_size(cfg, *image_size, max_input)
    estimate = cost.request_cost(cfg, input_size)
    log.info("detect with %s: %s", model_id, estimate.describe())
    return RunSize(max_input, input_size, estimate)
