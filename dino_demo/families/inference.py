"""Images through a `transformers` detector, with its internals captured: the same
`runtime.InferenceResult` that DINO's path returns, so that every view draws it.

The processor prepares the image (and the prompt), the model runs once with a `capture.Recorder`
active, and the result holds per decoder layer the references, sampling locations and weights the
attention was given, the class logits and boxes after each layer (`Family.predictions`), the
two-stage selection where the family has one, and detections post-processed by the one top-k of `model.postprocess`, as the family's processor does
(Grounding DINO: by the processor itself, with its phrase labels). Images run one
at a time (no padding: valid ratios are 1).
"""
from __future__ import annotations

import time

import numpy as np
import torch
from PIL import Image

from .. import ops
from ..model.outputs import Detections, DINOOutput, EncoderSelection
from ..model.postprocess import postprocess
from ..runtime.details import FamilyDetails
from ..runtime.result import (PRECISIONS, EncoderToken, InferenceResult, StageCallback, TokenAttention,
                              check_precision, to_cpu)
from . import grounding_dino
from .capture import Recorder, recording
from .load import FamilyModel
from .op import level_start

NO_TOKENS = "only Grounding DINO reads a text prompt: this model has fixed classes"


def run(handle: FamilyModel, image: np.ndarray, *, prompt: str | None = None, max_size: int | None = None,
        internals: bool = True, precision: str = "float32", model_id: str = "",
        on_stage: StageCallback | None = None, source_size: tuple[int, int] | None = None) -> InferenceResult:
    """Detect objects in one image ([H, W, 3] uint8 RGB) with a loaded family model.

    prompt: what to detect, for text-prompted families ("cat . remote control ."); refused for
        the others. max_size: cap on the longer side of the model input (processors that resize to
        a fixed size ignore it). internals: keep the decoder's attention and per-layer outputs.
        source_size: (H, W) of the image as given when `image` is a downscaled copy of it.
    """
    check_precision(precision)
    family, settings, model = handle.family, handle.settings, handle.model
    if prompt and not family.text_prompt:
        raise ValueError(f"{family.name} has fixed classes and takes no prompt")
    device = next(model.parameters()).device
    backend = ops.backend(device) if handle.our_op else ("transformers", "transformers' own attention code")
    timings: dict[str, float] = {}

    def stage(name: str, seconds: float) -> None:
        timings[name] = seconds
        if on_stage is not None:
            on_stage(name, seconds)

    start = time.perf_counter()
    inputs, text = _model_inputs(handle, image, prompt, max_size)
    inputs = {name: value.to(device) for name, value in inputs.items()}
    stage("preprocess", time.perf_counter() - start)
    half = PRECISIONS[precision]
    model_start = time.perf_counter()
    with torch.inference_mode(), _autocast(device, half), recording(Recorder()) as recorder:
        outputs = model(**inputs)
    stage("model", time.perf_counter() - model_start)

    post_start = time.perf_counter()
    height, width = image.shape[:2]
    details = FamilyDetails(family=family.name, model_type=settings.name, unavailable=dict(family.unavailable),
                            model_inputs={k: v.detach().cpu() for k, v in inputs.items()}, prompt=text)
    if not family.text_prompt:
        details.unavailable.setdefault("token scores", NO_TOKENS)
    with torch.inference_mode():
        if family.text_prompt:
            detections, names = _grounded_detections(handle, outputs, inputs, (height, width), details)
            categories = tuple(range(len(names)))
        else:
            detections = postprocess(outputs.logits.float(), outputs.pred_boxes.float(),
                                     torch.tensor([[height, width]], device=device), settings.num_select)[0]
            names, categories = _class_names(model.config)
        if internals:  # the heads re-applied per layer in the precision the forward ran in
            with _autocast(device, half):
                output = _internals(handle, outputs, recorder, inputs, details)
        else:
            output = None
    stage("postprocess", time.perf_counter() - post_start)
    stage("total", time.perf_counter() - start)

    padded = tuple(int(v) for v in inputs["pixel_values"].shape[-2:])
    mask = inputs.get("pixel_mask")
    input_size = (int(mask[0].any(1).sum()), int(mask[0].any(0).sum())) if mask is not None else padded
    return InferenceResult(
        image=image, image_size=(int(height), int(width)), input_size=input_size, padded_size=padded,
        detections=to_cpu(detections), output=output, timings=timings, backend=backend, device=str(device),
        class_names=names, category_ids=categories, variant=settings.name, model_id=model_id or handle.source,
        family=details, source_size=source_size, unavailable=details.unavailable, precision=precision)


def _autocast(device: torch.device, half: torch.dtype | None) -> torch.autocast:
    return torch.autocast(device.type, dtype=half, enabled=half is not None)


def _model_inputs(handle: FamilyModel, image: np.ndarray, prompt: str | None, max_size: int | None
                  ) -> tuple[dict[str, torch.Tensor], str]:
    settings, processor = handle.settings, handle.processor
    kwargs = {}
    if max_size is not None and not settings.fixed_size:
        cap = min(int(max_size), settings.max_size)
        kwargs["size"] = {"shortest_edge": min(settings.min_size, cap), "longest_edge": cap}
    picture = Image.fromarray(np.ascontiguousarray(image))
    if not handle.family.text_prompt:
        return dict(processor(images=picture, return_tensors="pt", **kwargs)), ""
    text = grounding_dino.normalize_prompt(prompt, int(handle.model.config.max_text_len), processor.tokenizer)
    inputs = processor(images=picture, text=text, return_tensors="pt", **kwargs)
    return {name: value for name, value in inputs.items() if isinstance(value, torch.Tensor)}, text


def _class_names(config) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Names from the config's id2label, category id = class id (transformers' COCO models keep
    COCO's category ids as class ids)."""
    labels = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    count = max(int(config.num_labels), max(labels, default=-1) + 1)
    return tuple(labels.get(i, f"class {i}") for i in range(count)), tuple(range(count))


def _grounded_detections(handle: FamilyModel, outputs, inputs, size: tuple[int, int], details: FamilyDetails
                         ) -> tuple[Detections, tuple[str, ...]]:
    """Every query's detection as the processor's `post_process_grounded_object_detection` gives it
    (score: best token; label: the phrase of the tokens above its text threshold), best first;
    class names: the prompt's phrases, then any other label the processor made."""
    processor = handle.processor
    ids = inputs["input_ids"]
    spans = grounding_dino.phrase_spans(ids[0], processor.tokenizer)
    phrases = tuple(processor.tokenizer.decode([int(ids[0, i]) for i in span]) for span in spans)
    details.tokens = tuple(processor.tokenizer.convert_ids_to_tokens(ids[0].tolist()))
    details.phrase_tokens = spans
    found = processor.post_process_grounded_object_detection(
        outputs, ids, threshold=0.0, text_threshold=grounding_dino.TEXT_THRESHOLD, target_sizes=[size])[0]
    probabilities = outputs.logits[0].float().sigmoid().max(-1).values
    slots = torch.nonzero(probabilities > 0.0).flatten()                       # the queries the processor kept
    names = list(phrases)
    labels = []
    for label in found["text_labels"]:
        if label not in names:
            names.append(label)
        labels.append(names.index(label))
    scores = found["scores"].float()
    order = torch.argsort(scores, descending=True, stable=True)
    detections = Detections(scores=scores[order], labels=torch.tensor(labels, dtype=torch.long)[order.cpu()],
                            boxes=found["boxes"].float()[order], query_slot=slots[order])
    return detections, tuple(names)


def _internals(handle: FamilyModel, outputs, recorder: Recorder, inputs, details: FamilyDetails) -> DINOOutput:
    family, model = handle.family, handle.model
    if not recorder.decoder_locations or recorder.level_shapes is None:
        raise RuntimeError(f"no deformable attention was recorded in {family.name}'s decoder")
    logits, boxes = (t.float() for t in family.predictions(model, outputs, recorder, inputs))
    device = boxes.device
    spatial_shapes, level_start_index = level_start(recorder.level_shapes, device)
    selection = family.selection(model, outputs, spatial_shapes, level_start_index)
    if family.text_prompt:
        details.token_logits = logits[:, 0].cpu()
        logits = grounding_dino.phrase_logits(logits, details.phrase_tokens)
        if selection is not None:
            selection.logits = grounding_dino.phrase_logits(selection.logits[..., :len(details.tokens)].float(),
                                                            details.phrase_tokens)
    if selection is None:
        details.unavailable.setdefault("proposals", f"this {family.name} model has no two-stage query selection: "
                                                    "its queries are learned embeddings, not encoder proposals")
    if not family.deformable_encoder:
        details.unavailable.setdefault("encoder", f"{family.name}'s encoder is not deformable")

    references = [_reference_box(r) for r in recorder.decoder_references]
    references.append(boxes[-1] if family.refines(model.config) else references[-1])
    locations, weights = torch.stack(recorder.decoder_locations).float(), torch.stack(recorder.decoder_weights).float()
    if recorder.points_per_level is not None:
        details.points_per_level = recorder.points_per_level
    else:
        details.points_per_level = (int(locations.shape[-2]),) * int(locations.shape[-3])
    details.decoder_point_levels = torch.repeat_interleave(torch.arange(len(details.points_per_level)),
                                                           torch.tensor(details.points_per_level))
    tokens = int(sum(h * w for h, w in recorder.level_shapes))
    memory = _memory(outputs, tokens)
    batch = boxes.shape[1]
    return to_cpu(DINOOutput(
        logits=logits, boxes=boxes, references=torch.stack(references).float(),
        decoder_features=outputs.last_hidden_state.float(), memory=memory.float(),
        spatial_shapes=spatial_shapes, level_start_index=level_start_index,
        valid_ratios=torch.ones(batch, len(recorder.level_shapes), 2, device=device),
        padding_mask=torch.zeros(batch, tokens, dtype=torch.bool, device=device),
        selection=selection if selection is None else _float_selection(selection),
        sampling_locations=locations, attention_weights=weights))


def _reference_box(reference: torch.Tensor) -> torch.Tensor:
    """[B, Q, 4] normalized cxcywh of a layer's reference points [B, Q, L, 2 or 4] (the first
    level's; a 2-d reference point becomes a box of no size)."""
    first = reference[:, :, 0].float()
    if first.shape[-1] == 2:
        first = torch.cat([first, torch.zeros_like(first)], -1)
    return first


def _memory(outputs, tokens: int) -> torch.Tensor:
    """[B, S, D] the encoder output the decoder read, where the model returns it flat ([B, S, 0]
    otherwise)."""
    for name in ("encoder_last_hidden_state_vision", "encoder_last_hidden_state"):
        value = getattr(outputs, name, None)
        if isinstance(value, torch.Tensor) and value.dim() == 3 and value.shape[1] == tokens:
            return value
    return outputs.last_hidden_state.new_zeros(outputs.last_hidden_state.shape[0], tokens, 0)


def _float_selection(selection: EncoderSelection) -> EncoderSelection:
    return EncoderSelection(**{name: (value.float() if value.is_floating_point() else value)
                               for name, value in vars(selection).items()})


def token_attention(handle: FamilyModel, result: InferenceResult, tokens: list[EncoderToken]) -> list[TokenAttention]:
    """The self-attention of encoder `tokens` in every encoder layer, recorded by running the model
    again on the stored inputs with a recorder that keeps those tokens' rows."""
    reason = result.reason("encoder")
    if reason:
        raise ValueError(reason)
    details = result.family
    if not tokens:
        return []
    device = next(handle.model.parameters()).device
    rows = torch.tensor([t.index for t in tokens], dtype=torch.long)
    with torch.inference_mode(), recording(Recorder(encoder_rows=rows)) as recorder:
        handle.model(**{name: value.to(device) for name, value in details.model_inputs.items()})
    if not recorder.encoder_locations:
        raise ValueError(f"{details.family}'s encoder recorded no deformable attention")
    locations = torch.stack(recorder.encoder_locations, 2)[0].float().cpu()   # [n, E, M, L, P, 2]
    weights = torch.stack(recorder.encoder_weights, 2)[0].float().cpu()
    references = recorder.encoder_references[0][0].float().cpu()             # [n, L, 2]
    return [TokenAttention(token=t, reference_points=references[i], sampling_locations=locations[i],
                           attention_weights=weights[i]) for i, t in enumerate(tokens)]
