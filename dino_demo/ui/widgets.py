"""Small component makers every tab uses: a caption, a drawn picture, a slider that commits on
Enter, a Radio's "all"/"1".."n" choices, and a picture with a narrow column of controls beside it."""
from __future__ import annotations

import contextlib

import gradio as gr

from ..explore.options import POINT_COLORS
from . import inputs


def caption(text: str) -> gr.Markdown:
    return gr.Markdown(text, elem_classes=["caption"])


def picture(elem_id: str, **kwargs) -> gr.Image:
    """A picture the page draws: no floating label over it (a caption goes above), as tall as the
    window allows."""
    kwargs.setdefault("format", "jpeg")
    return gr.Image(interactive=False, show_label=False, elem_id=elem_id, elem_classes=["view-image"],
                    buttons=["download", "fullscreen"], **kwargs)


def indices(count: int, *, with_all: bool = True) -> list[str]:
    """A Radio's choices: "all" and "1".."count"."""
    return ([inputs.ALL] if with_all else []) + [str(i) for i in range(1, count + 1)]


def slider(name: str, lo: int, hi: int, value, label: str) -> gr.Slider:
    return gr.Slider(lo, hi, value=value, step=1, label=label, elem_id=name.replace("_", "-"),
                     elem_classes=["commit-on-enter"])


@contextlib.contextmanager
def picture_and_controls(ui, name: str, text: str):
    """A view `ui[name]` with its caption `text`, and a narrow column beside it for the controls
    made in the `with` block."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            caption(text)
            ui[name] = picture(name.replace("_", "-"))
        with gr.Column(scale=1, min_width=230):
            yield


def attention_controls(ui, prefix: str, layers: int, layer_label: str, heads: int, levels: int) -> None:
    """Layer, colour, head, level and extras of one attention view (`prefix` "" for the decoder's
    sampling points, "enc_" for the encoder's)."""
    elem = prefix.replace("_", "-")
    ui[f"{prefix}layer"] = slider(f"{prefix}layer", 1, layers, layers, layer_label)
    color = "point_color" if not prefix else "enc_color"
    ui[color] = gr.Radio(list(POINT_COLORS), value=POINT_COLORS[0], label="Colour by",
                         elem_id=f"{elem or 'sampling-'}color")
    ui[f"{prefix}head"] = gr.Radio(indices(heads), value=inputs.ALL, label="Head", elem_id=f"{elem}head")
    ui[f"{prefix}level"] = gr.Radio(indices(levels), value=inputs.ALL, label="Level", elem_id=f"{elem}level")
    extras = "point_extras" if not prefix else "enc_extras"
    ui[extras] = gr.CheckboxGroup(list(inputs.POINT_EXTRAS), label="Show", elem_id=f"{elem or 'sampling-'}extras")
