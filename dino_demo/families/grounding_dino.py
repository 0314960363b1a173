"""Grounding DINO and MM Grounding DINO: open-vocabulary detection of what a text prompt names.

The class logits are per prompt token ([.., T]): the contrastive head of each decoder layer
(`class_embed[l]`, with the text encoder's output) scores every query against every token. The
common arrays carry per-phrase logits (the max over a phrase's tokens, phrases split at ".");
`FamilyDetails.token_logits` keeps the per-token ones for the token-scores view. Detections and
their phrase labels are the processor's own `post_process_grounded_object_detection`.
"""
from __future__ import annotations

import torch

from .base import Family, refined_boxes, selection_from_topk

MAX_PROMPT_CHARS = 1000
SEPARATORS = ("[CLS]", "[SEP]", ".", "?")
TEXT_THRESHOLD = 0.25


def normalize_prompt(prompt: str | None, max_tokens: int, tokenizer) -> str:
    """The prompt as Grounding DINO expects it (lower case, phrases ending in "."); ValueError for
    an empty one, one over MAX_PROMPT_CHARS characters or one of more tokens than the model reads."""
    text = " ".join(str(prompt or "").split()).lower()
    if not text:
        raise ValueError('this model detects what a text prompt names: give one, e.g. "cat . remote control ."')
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"the prompt has {len(text)} characters; at most {MAX_PROMPT_CHARS} are accepted")
    if not text.endswith("."):
        text += " ."
    count = len(tokenizer(text)["input_ids"])
    if count > max_tokens:
        raise ValueError(f"the prompt is {count} tokens long; this model reads at most {max_tokens}")
    return text


def phrase_spans(input_ids: torch.Tensor, tokenizer) -> tuple[tuple[int, ...], ...]:
    """Token indices of each phrase of a prompt ([T] ids): the runs between separator tokens."""
    separators = set(tokenizer.convert_tokens_to_ids(list(SEPARATORS)))
    spans, current = [], []
    for index, token in enumerate(input_ids.tolist()):
        if token in separators:
            if current:
                spans.append(tuple(current))
            current = []
        else:
            current.append(index)
    if current:
        spans.append(tuple(current))
    return tuple(spans)


def token_predictions(model, outputs, inputs):
    """(token logits [K, B, Q, T], boxes [K, B, Q, 4]) after every decoder layer, as the forward of
    `GroundingDinoForObjectDetection` computes them."""
    hidden = outputs.intermediate_hidden_states
    references = [outputs.init_reference_points] + list(outputs.intermediate_reference_points.unbind(1))[:-1]
    text = outputs.encoder_last_hidden_state_text
    mask = inputs["attention_mask"].bool()
    tokens = inputs["input_ids"].shape[1]
    logits, boxes = [], []
    for layer in range(hidden.shape[1]):
        logits.append(model.class_embed[layer](vision_hidden_state=hidden[:, layer], text_hidden_state=text,
                                               text_token_mask=mask)[..., :tokens])
        boxes.append(refined_boxes(model.bbox_embed[layer](hidden[:, layer]), references[layer], eps=1e-5))
    return torch.stack(logits), torch.stack(boxes)


def phrase_logits(token_logits: torch.Tensor, spans: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """[..., T] token logits -> [..., phrases] the max over each phrase's tokens."""
    if not spans:
        return token_logits[..., :0]
    return torch.stack([token_logits[..., list(span)].max(-1).values for span in spans], -1)


def predictions(model, outputs, recorder, inputs):
    """Per-token logits [K, B, Q, T] and boxes (`inference` turns tokens into phrases)."""
    return token_predictions(model, outputs, inputs)


def selection(model, outputs, spatial_shapes, level_start_index):
    if not model.config.two_stage:
        return None
    scores = outputs.enc_outputs_class.max(-1)[0]
    topk = torch.topk(scores, model.config.num_queries, dim=1)[1]
    memory = outputs.encoder_last_hidden_state_vision
    mask = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)
    _, proposals = model.model.generate_encoder_output_proposals(memory, ~mask,
                                                                 [tuple(s) for s in spatial_shapes.tolist()])
    return selection_from_topk(topk, scores, outputs.enc_outputs_class, outputs.enc_outputs_coord_logits,
                               proposals.sigmoid(), spatial_shapes, level_start_index)


FAMILY = Family(
    name="Grounding DINO", model_types=("grounding-dino",), model_class="GroundingDinoForObjectDetection",
    predictions=predictions, selection=selection, text_prompt=True, deformable_encoder=True,
    two_stage=lambda config: bool(config.two_stage))
MM_FAMILY = Family(
    name="MM Grounding DINO", model_types=("mm-grounding-dino",), model_class="MMGroundingDinoForObjectDetection",
    predictions=predictions, selection=selection, text_prompt=True, deformable_encoder=True,
    two_stage=lambda config: bool(config.two_stage))
