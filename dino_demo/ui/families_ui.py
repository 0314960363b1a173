"""The page's pieces for `transformers` detectors (dino_demo.families): the text prompt box of
Grounding DINO, the prompt tokens a selected query matched (token scores), and one line per view
that does not apply to the model. Components are made by `build_prompt` / `build_token_scores`
inside the layout; the handlers are plain functions of a result."""
from __future__ import annotations

import gradio as gr
import numpy as np

from ..runtime.result import InferenceResult
from ..explore.draw.data import unavailable
from ..families.grounding_dino import MAX_PROMPT_CHARS
from ..families import FAMILIES
from ..families.hub import ENTRIES

CUSTOM = "custom"  # choices.CUSTOM (choices imports this module)

VIEWS = ("proposals", "encoder", "token scores")


def build_prompt(ui, default_model: str) -> None:
    """The prompt box (for text-prompted models; other models ignore an empty one), shown where
    the model choice may take one (`prompt_applies`)."""
    ui["prompt"] = gr.Textbox(label="Text prompt (Grounding DINO: what to detect, phrases ending in '.')",
                              placeholder="cat . remote control .", max_length=MAX_PROMPT_CHARS, lines=1,
                              elem_id="prompt", visible=prompt_applies(default_model))


def prompt_applies(choice: str) -> bool:
    """Whether the model menu's `choice` may read a prompt: a listed text-prompted Hub model, or
    the box (a folder or an hf: id typed there may be one)."""
    if choice == CUSTOM:
        return True
    prompted = {family.name for family in FAMILIES if family.text_prompt}
    return any(entry.source_id == choice and entry.family in prompted for entry in ENTRIES)


def build_token_scores(ui) -> None:
    """Which prompt tokens the selected query matched, and which views do not apply here."""
    ui["token_scores"] = gr.Markdown("", elem_id="token-scores")


def parse_prompt(prompt) -> str:
    """The prompt box's value, bounded (the model's tokenizer checks its token count)."""
    text = " ".join(str(prompt or "").split())
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"The prompt has {len(text)} characters; at most {MAX_PROMPT_CHARS} are accepted.")
    return text


def require_dino(detector, model_id: str, what: str) -> None:
    """ValueError unless `detector` (a `runtime.Detector`) offers DINO's own code (denoising, the
    forward pass): `what` (a view of DINO's own ideas) runs it."""
    if not detector.offers.denoising:
        raise ValueError(f"{what} runs DINO's own code; {model_id} is a transformers detector "
                         f"({detector.config.family}): pick a DINO model for it.")


def hub_choices() -> list[tuple[str, str]]:
    """(label, value) of the listed Hub models for the model list."""
    return [(f"{e.repo_id} · {e.family}" + (f" · COCO {e.box_ap:.1f} AP" if e.box_ap is not None else "")
             + f" · {e.size_mb / 1024:.1f} GB, downloaded once", e.source_id) for e in ENTRIES]


def token_scores_markdown(result: InferenceResult, slot: int | None, top: int = 12) -> str:
    """For a Grounding DINO result: the probability of query `slot` on each prompt token after the
    last decoder layer, best first (the detection's phrase is made of the tokens above the
    processor's text threshold). For other models: the views that do not apply, one line each."""
    notes = [f"- **{view}**: {reason}" for view in VIEWS if (reason := unavailable(result, view))]
    details = result.family
    if details is None or details.token_logits is None or slot is None:
        return "\n".join(notes)
    probabilities = 1 / (1 + np.exp(-details.token_logits[-1, int(slot)].double().numpy()))
    order = np.argsort(-probabilities, kind="stable")[:top]
    cells = " · ".join(f"`{details.tokens[i]}` {probabilities[i]:.2f}" for i in order
                       if np.isfinite(probabilities[i]))
    return f"**Prompt tokens matched by query slot {slot}** (last layer): {cells}\n" + "\n".join(notes)
