"""The Encoder tab: an encoder token picked by a click, typed as row and column, or taken from the
selected query's seed, and where it looks in one encoder layer (sampling points, attention mass,
heatmaps). Its attention comes from the app's model cache (`PageModels.encoder_attention`: cached,
else one pass through the encoder).

`build(ui, config)` makes the components, `wire(page)` connects them; `EncoderTab`'s handlers are
methods of `(event, stored)` over the app's models.
"""
from __future__ import annotations

import gradio as gr

from ..explore import encoder, panels
from ..runtime.result import InferenceResult
from ..explore.stored import StoredResult
from . import inputs
from .events import PageEvent, Views
from .inputs import ControlError, PageControls
from .model_cache import PageModels
from .widgets import attention_controls, caption, indices, picture, picture_and_controls


def build(ui, config) -> None:
    with gr.Tab("Encoder", id="encoder"):
        with picture_and_controls(ui, "enc_image", "Click anywhere to pick the encoder token of the chosen level "
                                  "under the cursor (its cell in white): where it looks in one encoder layer."):
            ui["token_level"] = gr.Radio(indices(config.num_feature_levels, with_all=False), value="1",
                                         label="Token level", elem_id="token-level")
            with gr.Row():
                ui["token_row"] = gr.Number(None, label="Row (Enter)", precision=0, min_width=80,
                                            elem_id="token-row")
                ui["token_col"] = gr.Number(None, label="Column (Enter)", precision=0, min_width=80,
                                            elem_id="token-col")
            ui["seed_token"] = gr.Button("Token that seeded the selected query", size="sm", elem_id="seed-token")
            attention_controls(ui, "enc_", config.enc_layers, "Encoder layer", config.num_heads,
                               config.num_feature_levels)
        ui["token_info"] = gr.Markdown("", elem_id="token-info")
        ui["enc_mass"] = gr.Dataframe(label="Attention mass per head and level", interactive=False)
        caption("The token's attention spread onto each level's grid.")
        ui["enc_heatmap"] = picture("enc-heatmap")
        with gr.Accordion("Sampling points JSON", open=False):
            ui["enc_points"] = gr.JSON(label="Encoder sampling points")


def wire(page) -> None:
    ui, tab = page.ui, EncoderTab(page.services.models)
    page.when([ui.enc_image.select], tab.click_encoder, selected=True)
    page.when([ui.token_row.submit, ui.token_col.submit], tab.select_token)
    page.when([ui.token_level.input], tab.change_token_level)
    page.when([ui.seed_token.click], tab.seed_token)
    page.when([ui.enc_layer.release, ui.enc_head.input, ui.enc_level.input, ui.enc_color.input, ui.enc_extras.input],
              tab.inspect_encoder)


class EncoderTab:
    """The tab's handlers over the app's models (`models`: where a token's attention comes from)."""

    def __init__(self, models: PageModels):
        self.models = models

    def click_encoder(self, event: PageEvent, stored: StoredResult) -> Views:
        """A click on the encoder image picks the token of the chosen level under the cursor."""
        result = stored.result
        x, y = event.point
        height, width = stored.canvas.shape[:2]
        if not (0 <= x < width and 0 <= y < height):  # the legend below the picture
            return {}
        token = encoder.token_at(result, _token_level(event.controls, result), x / stored.scale, y / stored.scale)
        return self.views(stored, token, event.controls)

    def select_token(self, event: PageEvent, stored: StoredResult) -> Views:
        """A token typed as row and column (Enter): a position outside the level's grid is refused
        once, the boxes going back to the token shown."""
        try:
            return self.typed_token(event, stored)
        except ValueError as err:
            raise ControlError("token_row", str(err)) from None

    def typed_token(self, event: PageEvent, stored: StoredResult) -> Views:
        controls, result = event.controls, stored.result
        if controls.token_row is None or controls.token_col is None:
            raise ValueError("Enter the token's row and column.")
        token = encoder.token(result, _token_level(controls, result), controls.token_row, controls.token_col)
        return self.views(stored, token, controls)

    def change_token_level(self, event: PageEvent, stored: StoredResult) -> Views:
        """The token level changed: the token of the new level under the centre of the current one."""
        if event.token is None:
            return {}
        result = stored.result
        x0, y0, x1, y1 = encoder.cell_box(result, event.token)
        token = encoder.token_at(result, _token_level(event.controls, result), (x0 + x1) / 2, (y0 + y1) / 2)
        return self.views(stored, token, event.controls)

    def seed_token(self, event: PageEvent, stored: StoredResult) -> Views:
        """The encoder token that seeded the selected query."""
        result = stored.result
        if event.controls.slot is None:
            return {}
        lineage = panels.query_lineage(result, inputs.query_slot(event.controls.slot, result.num_queries))
        return self.views(stored, encoder.token(result, lineage.level, *lineage.cell), event.controls)

    def inspect_encoder(self, event: PageEvent, stored: StoredResult) -> Views:
        """Encoder layer, head, level or colour changed: re-draw the picked token's attention."""
        if event.token is None:
            return {}
        return self.views(stored, event.token, event.controls)

    def views(self, stored: StoredResult, token: encoder.EncoderToken, controls: PageControls) -> Views:
        """The tab's views of `token`."""
        m, l, _ = stored.result.attention_shape
        options = controls.encoder.options(layers=stored.encoder_layers, heads=m, levels=l, layer_name="Encoder layer")
        attention = self.models.encoder_attention(stored, token)
        overlay, points, mass, heat = panels.encoder_panels(stored, attention, options)
        return {"enc_image": overlay, "enc_points": points, "enc_mass": mass, "enc_heatmap": heat,
                "token_info": panels.token_markdown(stored, token), "token_level": str(token.level + 1),
                "token_row": token.cell[0], "token_col": token.cell[1], "enc_token": token}


def new_result_views(stored: StoredResult) -> Views:
    """The tab's views of a new result: no token yet, controls sized for the model."""
    m, l, _ = stored.result.attention_shape
    return {"enc_image": panels.encoder_prompt(stored), "enc_heatmap": None, "enc_points": None, "enc_mass": None,
            "token_info": "", "enc_token": None, "token_row": None, "token_col": None,
            **encoder_ranges(stored.encoder_layers, m, l)}


def encoder_ranges(layers: int, heads: int, levels: int) -> Views:
    """The encoder controls sized for a model (one without a deformable encoder has 0 layers here:
    its encoder view says why)."""
    return {"enc_layer": gr.Slider(minimum=1, maximum=max(layers, 2), value=max(layers, 1), step=1),
            "enc_head": gr.Radio(choices=indices(heads), value=inputs.ALL),
            "enc_level": gr.Radio(choices=indices(levels), value=inputs.ALL),
            "token_level": gr.Radio(choices=indices(levels, with_all=False), value="1")}


def _token_level(controls: PageControls, result: InferenceResult) -> int:
    levels = result.attention_shape[1]
    if controls.token_level >= levels:
        raise ControlError("token_level",
                           f"Token level must be between 1 and {levels}, got {controls.token_level + 1}.")
    return controls.token_level
