"""The input column: the image, Detect, the model (with its checkpoint box, variant and prompt),
the shipped model's note, the examples and the detection settings. Its handlers: an image chosen
(refused at once when it is not one) and a model chosen (the controls that apply to it, the input
cap's slider sized and labelled for it).

`build(ui, ...)` makes the components, `wire(page)` connects them.
"""
from __future__ import annotations

import logging

import gradio as gr

from ..runtime import precision as precisions
from ..io.images import MAX_SIDE, load_image
from ..model.config import VARIANTS
from ..sources import zoo
from . import choices, families_ui, inputs
from .events import Views, failure_views, reply
from .inputs import ControlError
from .widgets import slider

log = logging.getLogger("dino_explorer")

SHIPPED_NOTE = ("The shipped model (`dino-tiny`) knows only eight synthetic shapes (circle, square, triangle, star, "
                "ring, cross, hexagon, ellipse): on photos it finds shapes, not objects. For COCO's 80 classes, use "
                "a model of the zoo (downloaded once):")
# The slider's label while the model's resize rule is not known (a checkpoint file or a Hub
# model: known once loaded).
MAX_INPUT_LABEL = "Max input side (px; the model's own resize applies below this cap)"


def build(ui, default_model: str, config, precision: str, device: str) -> None:
    """Image, Detect, model, the shipped model's note and the examples (all above the fold at
    1366x768), then the detection settings."""
    ui["image_in"] = gr.Image(label="Image", show_label=False, type="filepath", image_mode=None,
                              sources=["upload", "clipboard"], height=170, elem_id="image-in")
    ui["detect"] = gr.Button("Detect", variant="primary", elem_id="detect-button")
    ui["model_choice"] = gr.Dropdown(choices.model_choices(), value=default_model, label="Model",
                                     elem_id="model-choice")
    ui["checkpoint"] = gr.Textbox(label="Checkpoint path or URL", placeholder="https://…/checkpoint.pth",
                                  elem_id="checkpoint", visible=False)
    families_ui.build_prompt(ui, default_model)
    with gr.Column(visible=default_model == choices.SHIPPED, elem_id="shipped-note") as ui["shipped_note"]:
        gr.Markdown(SHIPPED_NOTE)
        ui["coco_model"] = gr.Button(f"Use {zoo.get(choices.COCO_MODEL).name}", size="sm", elem_id="coco-model")
    ui["examples_slot"] = gr.Column(elem_id="examples")
    with gr.Accordion("Detection settings", open=True):
        ui["threshold"] = gr.Slider(0.0, 1.0, value=inputs.DEFAULTS["threshold"], step=0.01, label="Score threshold",
                                    elem_id="threshold", elem_classes=["commit-on-enter"])
        ui["max_detections"] = slider("max_detections", 1, inputs.MAX_DETECTIONS, inputs.DEFAULTS["max_detections"],
                                      "Max detections")
        ui["variant"] = gr.Dropdown([choices.AUTO_VARIANT, *VARIANTS], value=choices.AUTO_VARIANT,
                                    label="Variant of the checkpoint",
                                    visible=not choices.variant_is_fixed(default_model))
        ui["max_input"] = slider("max_input", 32, config.max_size, config.max_size, max_input_label(config))
        ui["precision"] = precision_choice(precision, device)


def precision_choice(default: str, device: str) -> gr.Radio:
    """The precision of the model runs; its note says whether this device has native bfloat16."""
    note = precisions.support(device).note("bfloat16")
    return gr.Radio(list(precisions.PRECISIONS), value=default, label="Precision", info=note, elem_id="precision")


def wire(page) -> None:
    ui = page.ui
    ui.image_in.upload(lambda image: upload_reply(ui, image), ui.image_in, [ui.image_in, ui.status], api_visibility="private",
                       show_progress="hidden", preprocess=False)
    ui.model_choice.change(lambda choice: reply(ui, choose_model(choice)), [ui.model_choice],
                           [ui.checkpoint, ui.variant, ui.max_input, ui.shipped_note, ui.prompt],
                           api_visibility="private", queue=False)
    ui.coco_model.click(lambda: choices.COCO_MODEL, None, ui.model_choice, api_visibility="private", queue=False)


def upload_reply(ui, image) -> dict:
    """An image chosen: refused at once (input cleared, one status line) when it is not one."""
    try:
        return reply(ui, {**check_upload(image), "status": ""})
    except ValueError as err:
        log.info("upload: %s", err)
        return reply(ui, failure_views(err, {}))


def check_upload(image) -> Views:
    """An image chosen (uploaded or pasted): decoded at once by the library's own reader, so
    that a file that is not a usable image is refused now, not at Detect."""
    path, name = inputs.uploaded_file(image)
    if path is None:
        return {}
    try:
        load_image(path, max_side=MAX_SIDE)
    except ValueError as err:
        raise ControlError("image_in", f"Cannot use {name or 'this file'}: {err}.") from None
    return {}


def choose_model(model_choice) -> Views:
    """The model list changed: the path box only for a custom checkpoint, the variant choice for
    any checkpoint file, and the input-size slider labelled for the model (sized for it when its
    resize rule is known before loading)."""
    choice = str(model_choice or "")
    views: Views = {"checkpoint": gr.Textbox(visible=choice == choices.CUSTOM),
                    "variant": gr.Dropdown(visible=not choices.variant_is_fixed(choice)),
                    "shipped_note": gr.Column(visible=choice == choices.SHIPPED),
                    "prompt": gr.Textbox(visible=families_ui.prompt_applies(choice))}
    try:
        config = choices.resolve(choice, "-", None).config
    except ValueError:
        config = None
    if config is None:  # known once loaded: the official models' usual cap, never the previous model's rule
        views["max_input"] = gr.Slider(maximum=inputs.MAX_INPUT_SIDE, value=VARIANTS["dino-4scale-r50"].max_size,
                                       label=MAX_INPUT_LABEL)
    else:
        views["max_input"] = gr.Slider(maximum=config.max_size, value=config.max_size, label=max_input_label(config))
    return views


def max_input_label(config) -> str:
    """The input-size slider's label for a model's config."""
    return (f"Max input side (px; {config.name} resizes to {config.min_size} px short side, "
            f"at most {config.max_size} px long side, below this cap)")
