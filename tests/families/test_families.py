"""The transformers families (dino_demo.families) against transformers itself, on tiny models of
every family built from their configs with seeded random weights (tests/support/family_models.py)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from dino_demo import ops
from dino_demo.explore.draw import data as views
from dino_demo.explore import panels
from dino_demo.explore.stored import StoredResult
from dino_demo.explore.encoder import token
from dino_demo.families.inference import run, token_attention
from dino_demo.families.load import load
from dino_demo.io.internals import internals_arrays
from dino_demo.runtime import load_detector
from dino_demo.ops.reference import ms_deform_attn_reference

from conftest import ROOT
from family_models import FAMILY_NAMES, LABELS, TEXT_PROMPTED, folders, image  # noqa: F401 (fixtures)

PROMPT = "cat . remote control ."
TEXT = TEXT_PROMPTED


def _prompt(name):
    return PROMPT if name in TEXT else None


def _stock_outputs(handle, image, prompt):
    """transformers' own pass: processor, model with its own attention, outputs."""
    from PIL import Image

    handle.use_op(False)
    kwargs = {"text": prompt} if prompt else {}
    inputs = handle.processor(images=Image.fromarray(image), return_tensors="pt", **kwargs)
    with torch.inference_mode():
        return handle.model(**inputs), inputs


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_detections_equal_transformers_post_processing(folders, image, name):
    handle = load(folders[name], our_op=False)
    result = run(handle, image, prompt=_prompt(name))
    size = [image.shape[:2]]
    outputs, inputs = _stock_outputs(handle, image, result.family.prompt)
    det = result.detections
    if name in TEXT:
        expected = handle.processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=0.0, text_threshold=0.25, target_sizes=size)[0]
        by_slot = {int(s): i for i, s in enumerate(det.query_slot)}
        assert len(by_slot) == len(expected["scores"]) == result.num_queries
        for q in range(len(expected["scores"])):
            i = by_slot[q]
            assert det.scores[i] == pytest.approx(float(expected["scores"][q]), abs=1e-6)
            torch.testing.assert_close(det.boxes[i], expected["boxes"][q].float(), atol=1e-4, rtol=0)
            assert result.label(int(det.labels[i])) == expected["text_labels"][q]
        assert set(result.class_names[:2]) == {"cat", "remote control"}
        return
    post = handle.processor.post_process_object_detection
    kwargs = {"top_k": 100} if "top_k" in post.__code__.co_varnames and name not in ("rf-detr",) else {}
    expected = post(outputs, threshold=0.0, target_sizes=size, **kwargs)[0]
    n = len(expected["scores"])
    assert n == len(det)
    torch.testing.assert_close(det.scores, expected["scores"].float(), atol=1e-6, rtol=0)
    assert torch.equal(det.labels, expected["labels"])
    torch.testing.assert_close(det.boxes, expected["boxes"].float(), atol=1e-4, rtol=0)
    assert {result.label(int(c)) for c in det.labels} <= set(LABELS.values())


class _CoreCalls:
    """Test-side hooks: what each decoder attention module computed, in call order."""

    def __init__(self, model):
        self.calls, self.handles = [], []
        for module_name, module in model.named_modules():
            kind = type(module).__name__
            if ".decoder." not in f".{module_name}.":
                continue
            if kind == "MultiScaleDeformableAttention":
                self.handles.append(module.register_forward_hook(self._core, with_kwargs=True))
            elif kind in ("RTDetrV2MultiscaleDeformableAttention", "DFineMultiscaleDeformableAttention"):
                self.handles.append(module.register_forward_hook(self._v2(module), with_kwargs=True))

    def _core(self, module, args, kwargs, output):
        value, shapes, shapes_list, start = args[:4]
        self.calls.append((value, shapes_list, output, None))

    def _v2(self, module):
        def hook(mod, args, kwargs, output):
            states = kwargs["encoder_hidden_states"]
            batch, length, _ = states.shape
            if hasattr(mod, "value_proj"):
                value = mod.value_proj(states)
                finish = mod.output_proj
            else:
                value, finish = states, None
            value = value.reshape(batch, length, mod.n_heads, -1)
            self.calls.append((value, kwargs["spatial_shapes_list"], output[0], finish))
        return hook

    def remove(self):
        for handle in self.handles:
            handle.remove()


@pytest.mark.parametrize("our_op", [False, True], ids=["transformers", "our-op"])
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_captured_sampling_reproduces_every_attention_module(folders, image, name, our_op):
    """The stored locations and weights of every decoder layer, through the reference op, give
    what the module computed (so they are what it used), with either attention path."""
    handle = load(folders[name], our_op=our_op)
    calls = _CoreCalls(handle.model)
    try:
        result = run(handle, image, prompt=_prompt(name))
    finally:
        calls.remove()
    out = result.internals
    assert len(calls.calls) == result.num_layers
    for layer, (value, shapes_list, output, finish) in enumerate(calls.calls):
        shapes = torch.as_tensor([tuple(s) for s in shapes_list])
        start = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
        locations = torch.nan_to_num(out.sampling_locations[layer], nan=-1.0)  # padded points weigh 0
        expected = ms_deform_attn_reference(value.float(), shapes, start, locations, out.attention_weights[layer])
        if finish is not None:
            with torch.inference_mode():
                expected = finish(expected)
        torch.testing.assert_close(expected, output.float(), atol=1e-5, rtol=0)
    assert torch.isfinite(out.references).all()


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_our_op_agrees_with_transformers(folders, image, name):
    stock = run(load(folders[name], our_op=False), image, prompt=_prompt(name))
    handle = load(folders[name], our_op=True)
    ours = run(handle, image, prompt=_prompt(name))
    assert ours.backend[0] == ops.backend("cpu")[0] and stock.backend[0] == "transformers"
    replaced = [m for m in handle.model.modules()
                if type(m).__name__ == "MultiScaleDeformableAttention" and "forward" in m.__dict__]
    cores = [m for m in handle.model.modules() if hasattr(m, "ms_deformable_attn_core")]
    assert replaced or cores or any("forward" in m.__dict__ for m in handle.model.modules()
                                    if type(m).__name__ == "RTDetrV2MultiscaleDeformableAttention")
    for field in ("logits", "boxes", "references", "attention_weights"):
        torch.testing.assert_close(getattr(ours.internals, field), getattr(stock.internals, field), atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.internals.sampling_locations, stock.internals.sampling_locations, atol=1e-5,
                               rtol=0, equal_nan=True)
    torch.testing.assert_close(ours.detections.scores, stock.detections.scores, atol=1e-5, rtol=0)
    plain = getattr(transformers, handle.family.model_class).from_pretrained(folders[name]).eval()  # no hooks, no swap
    with torch.inference_mode():
        expected = plain(**{k: v for k, v in ours.family.model_inputs.items()})
    torch.testing.assert_close(ours.internals.logits[-1, 0], _final_logits(ours, expected), atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.internals.boxes[-1, 0], expected.pred_boxes[0], atol=1e-5, rtol=0)


def _final_logits(result, outputs):
    """The model's final class logits in the result's classes (Grounding DINO: per phrase)."""
    from dino_demo.families.grounding_dino import phrase_logits

    logits = outputs.logits[0]
    if result.family.token_logits is not None:
        logits = phrase_logits(logits[..., :len(result.family.tokens)], result.family.phrase_tokens)
    return logits


@pytest.mark.parametrize("name", ["deformable-detr-two-stage", "grounding-dino"])
def test_encoder_token_attention_reproduces_the_encoder(folders, image, name):
    handle = load(folders[name])
    result = run(handle, image, prompt=_prompt(name))
    picked = [token(result, 0, 1, 2), token(result, 2, 0, 1)]
    values = []
    hooks = [m.register_forward_hook(lambda mod, args, kwargs, out: values.append((args[0], args[2], out)),
                                     with_kwargs=True)
             for n, m in handle.model.named_modules()
             if type(m).__name__ == "MultiScaleDeformableAttention" and ".encoder." in n]
    try:
        attention = token_attention(handle, result, picked)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(values) == attention[0].sampling_locations.shape[0] == handle.settings.enc_layers
    rows = torch.tensor([t.index for t in picked])
    for layer, (value, shapes_list, output) in enumerate(values):
        shapes = torch.as_tensor([tuple(s) for s in shapes_list])
        locations = torch.stack([a.sampling_locations[layer] for a in attention])[None]
        weights = torch.stack([a.attention_weights[layer] for a in attention])[None]
        expected = ms_deform_attn_reference(value, shapes, None, locations, weights)
        torch.testing.assert_close(expected, output[:, rows], atol=1e-5, rtol=0)
    view = views.encoder_sampling_view(result, attention[0], 0)
    assert view.points.shape[-1] == 2


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_views_draw_or_say_why_not(folders, image, name):
    result = run(load(folders[name]), image, prompt=_prompt(name))
    slot = int(result.detections.query_slot[0])
    sampling = views.sampling_view(result, slot, result.num_layers - 1)
    m, l, p = result.attention_shape
    assert sampling.points.shape == (m, l, p, 2)
    assert views.decoder_heatmap_view(result, [slot], 0).grids
    assert views.refinement_view(result, slot).shape == (result.num_layers + 1, 4)
    assert views.layer_scores(result, slot).scores.shape == (result.num_layers,)
    reason = views.unavailable(result, "proposals")
    if reason:
        with pytest.raises(ValueError, match="two-stage|proposals"):
            views.proposal_view(result, 5)
    else:
        assert len(views.proposal_view(result, 5).boxes) == 5
        assert views.query_lineage(result, slot).query_slot == slot
    # the page's panels of DINO's ideas draw, or say in the picture why not (never raise)
    stored = StoredResult.of(result, "image.png")
    selection_image, selection_info = panels.selection_panels(stored, slot)
    assert selection_image.ndim == 3 and panels.score_maps_image(stored).ndim == 3
    assert (reason or "ranked") in selection_info
    assert len(panels.look_forward_panels(stored, slot)[1]) == result.num_layers
    arrays = internals_arrays(result)
    assert arrays["decoder_sampling_locations"].shape == (result.num_layers, result.num_queries, m, l, p, 2)
    assert arrays["decoder_point_levels"].shape == (sum(result.family.points_per_level),)


def test_points_per_level_differ_in_d_fine(folders, image):
    result = run(load(folders["d-fine"]), image)
    assert result.family.points_per_level == (2, 4, 3)
    arrays = internals_arrays(result)
    flat = arrays["decoder_sampling_locations_flat"]
    assert flat.shape[-2] == 9 and np.isfinite(flat).all()
    assert np.isnan(arrays["decoder_sampling_locations"][..., 0, 2:, :]).all()
    assert (arrays["decoder_attention_weights"][..., 0, 2:] == 0).all()
    assert arrays["decoder_point_levels"].tolist() == [0, 0, 1, 1, 1, 1, 2, 2, 2]


def test_prompts_are_bounded(folders, image):
    handle = load(folders["grounding-dino"])
    with pytest.raises(ValueError, match="prompt"):
        run(handle, image, prompt="")
    with pytest.raises(ValueError, match="at most 16"):
        run(handle, image, prompt="cat . " * 20)
    with pytest.raises(ValueError, match="characters"):
        run(handle, image, prompt="x" * 5000)
    with pytest.raises(ValueError, match="no prompt"):
        run(load(folders["rt-detr"]), image, prompt="cat .")
    result = run(handle, image, prompt="  Cat . REMOTE control  ")
    assert result.family.prompt == "cat . remote control ."
    assert result.family.token_logits.shape == (result.num_layers, result.num_queries, len(result.family.tokens))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deformable-detr", "grounding-dino", "d-fine"])
def test_detect_command_interface(folders, tmp_path, name):
    from PIL import Image

    picture = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(picture)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "dino_demo", "detect", str(picture), "--checkpoint", str(folders[name]),
               "--threshold", "0.0", "--save-internals", "--out", str(out)]
    if name in TEXT:
        command += ["--prompt", PROMPT]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads((out / "detections.json").read_text())
    assert document["schema"] == "dino-explorer/detections/1"
    labels = {d["label"] for d in document["images"][0]["detections"]}
    assert labels and (name in TEXT or labels <= set(LABELS.values()))
    with np.load(out / "photo.internals.npz") as f:
        k, q, m, l, p, two = f["decoder_sampling_locations"].shape
        assert (k, two) == (2, 2) and q == 10
        assert f["decoder_point_levels"].shape == (f["decoder_points_per_level"].sum(),)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["deformable-detr-two-stage", "grounding-dino", "d-fine", "rt-detr-v2"])
def test_our_op_agrees_with_transformers_on_cuda(folders, image, name):
    stock = run(load(folders[name], "cuda", our_op=False), image, prompt=_prompt(name))
    ours = run(load(folders[name], "cuda", our_op=True), image, prompt=_prompt(name))
    assert ours.backend[0] in ("cuda-kernel", "triton")
    for field in ("logits", "boxes", "references", "attention_weights"):
        torch.testing.assert_close(getattr(ours.internals, field), getattr(stock.internals, field), atol=1e-5, rtol=0)


def test_dinos_own_views_refuse_a_transformers_model(folders):
    from dino_demo.ui import families_ui

    with pytest.raises(ValueError, match="Denoising runs DINO's own code; tiny is a transformers detector"):
        families_ui.require_dino(load_detector(folders["rt-detr"]), "tiny", "Denoising")


def test_the_prompt_box_shows_where_a_prompt_may_apply():
    from dino_demo.ui import families_ui

    assert families_ui.prompt_applies("custom")
    assert families_ui.prompt_applies("hf:IDEA-Research/grounding-dino-tiny")
    assert not families_ui.prompt_applies("hf:PekingU/rtdetr_r18vd")
    assert not families_ui.prompt_applies("shipped") and not families_ui.prompt_applies("zoo:dino-4scale-r50")
