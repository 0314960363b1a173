"""Contrastive denoising against the official DINO, bit for bit.

`fixtures/official_dino/denoising_reference.npz` holds what the official `prepare_for_cdn` and the
official DINO_4scale model (training mode) produced, CPU-patched; the script beside it made it
from a checkout of the official code (its docstring says how). Same seed, same targets here.
"""
import numpy as np
import pytest
import torch
from conftest import OFFICIAL, npz_arrays

from dino_demo.io.images import load_image
from dino_demo.io.preprocess import batch_images, to_tensor_normalized
from dino_demo.model.config import get_config
from dino_demo.model.denoising import make_denoising_queries
from dino_demo.model.detector import build_model
from dino_demo.parity.recipe import recipe_state_dict

# Measured against the official model in training mode (teacher-forced top-k): 1.5e-6 boxes.
DN_BOX_ATOL = 1e-4
DN_LOGIT_ATOL = 2e-4


@pytest.fixture(scope="module")
def reference():
    return npz_arrays(OFFICIAL / "denoising_reference.npz")


def official_order(per_slot: torch.Tensor, counts: list[int], max_targets: int, copies: int) -> np.ndarray:
    """[B, pad, ...] slot values in the official flat order: copy, then image, then target."""
    rows = [per_slot[b, c * max_targets + t] for c in range(copies) for b, n in enumerate(counts) for t in range(n)]
    return torch.stack(rows).numpy() if rows else np.zeros((0, *per_slot.shape[2:]), per_slot.numpy().dtype)


def label_embedding() -> torch.nn.Embedding:
    """The label embedding the reference script handed to `prepare_for_cdn`."""
    label_enc = torch.nn.Embedding(92, 8)
    torch.nn.init.normal_(label_enc.weight, generator=torch.Generator().manual_seed(7))
    return label_enc


@pytest.mark.parametrize("case", range(7))
def test_queries_equal_the_official_prepare_for_cdn(reference, case):
    r = {k[len(f"cdn{case}_"):]: v for k, v in reference.items() if k.startswith(f"cdn{case}_")}
    counts = r["counts"].tolist()
    labels, boxes = torch.from_numpy(r["labels"]), torch.from_numpy(r["boxes"])
    starts = np.cumsum([0] + counts)
    targets = [{"labels": labels[a:b], "boxes": boxes[a:b]} for a, b in zip(starts[:-1], starts[1:])]
    label_enc = label_embedding()  # made before the seed: building it draws random numbers
    torch.manual_seed(int(r["seed"]))
    with torch.no_grad():
        dn = make_denoising_queries(targets, label_enc, num_classes=91, num_queries=900, dn_number=100,
                                    label_noise_ratio=0.5, box_noise_scale=0.4)
    assert (dn.pad_size, dn.num_groups) == (int(r["pad_size"]), int(r["num_dn_group"]))
    copies = 2 * dn.num_groups
    # Labels, boxes (before and after the inverse sigmoid), embeddings and mask: equal, bit for bit.
    np.testing.assert_array_equal(official_order(dn.labels, counts, dn.max_targets, copies), r["known_labels"])
    np.testing.assert_array_equal(official_order(dn.boxes, counts, dn.max_targets, copies), r["known_boxes"])
    np.testing.assert_array_equal(dn.content.numpy(), r["input_query_label"])
    np.testing.assert_array_equal(dn.anchors_unsigmoid.numpy(), r["input_query_bbox"])
    np.testing.assert_array_equal(dn.attn_mask.numpy(), r["attn_mask"])
    # The slot bookkeeping agrees with the layout.
    original = official_order(dn.target_index, counts, dn.max_targets, copies)
    expected = np.concatenate([np.arange(n) for n in counts] * copies) if sum(counts) else np.zeros(0)
    np.testing.assert_array_equal(original, expected)
    assert dn.positive.sum().item() == dn.pad_size // 2


def test_reference_cases_exercise_the_noise(reference):
    """The cases flip labels and move boxes (a comparison of un-noised copies would prove little)."""
    r = {k[5:]: v for k, v in reference.items() if k.startswith("cdn4_")}
    copies = len(r["known_labels"]) // len(r["labels"])
    order = np.concatenate([r["labels"]] * copies)
    flipped = r["known_labels"] != order
    assert 0.1 < flipped.mean() < 0.3
    assert not np.allclose(r["known_boxes"], np.concatenate([r["boxes"]] * copies))
    assert reference["cdn3_boxes"][0, 2] == 0.0          # a degenerate box
    assert reference["cdn1_labels"].size == 0            # an image with no boxes


def test_replacement_labels_are_drawn_for_the_flipped_copies_only():
    """After the labels, the box noise continues the random stream where the official code does:
    the draws for the replacement labels are as many as the flipped copies."""
    targets = [{"labels": torch.tensor([1, 2, 3]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]] * 3)}]
    label_enc = label_embedding()
    torch.manual_seed(11)
    dn = make_denoising_queries(targets, label_enc, 91, 900, 100, 0.5, 0.0)
    torch.manual_seed(11)
    draw = torch.rand(3 * 2 * dn.num_groups)
    flipped = int((draw < 0.25).sum())
    torch.randint(0, 91, (flipped,))
    following = torch.rand(1)
    torch.manual_seed(11)
    make_denoising_queries(targets, label_enc, 91, 900, 100, 0.5, 0.0)
    assert torch.equal(torch.rand(1), following)


@pytest.mark.slow
def test_denoising_decoder_outputs_equal_the_official_model_in_training(reference):
    """The official DINO_4scale (recipe weights) in training mode, its top-k fed to ours: the
    denoising queries' boxes and logits of every decoder layer."""
    model = build_model(get_config("dino-4scale-r50"))
    model.load_state_dict(recipe_state_dict(model.state_dict()), strict=True)
    model.train()
    images, masks = batch_images([to_tensor_normalized(load_image(OFFICIAL / n).array)
                                  for n in ("input_a.png", "input_b.png")])
    targets = [{"labels": torch.from_numpy(reference[f"model_labels_{b}"]),
                "boxes": torch.from_numpy(reference[f"model_boxes_{b}"])} for b in range(2)]
    torch.manual_seed(int(reference["model_seed"]))
    with torch.no_grad():
        out = model(images, masks, targets, topk_indices=torch.from_numpy(reference["model_topk_indices"]))
    dn = out.denoising
    assert (dn.pad_size, dn.num_groups) == (int(reference["model_pad_size"]), int(reference["model_num_dn_group"]))
    boxes, logits = dn.boxes.numpy(), dn.logits.numpy()
    assert boxes.shape == reference["model_dn_pred_boxes"].shape
    np.testing.assert_allclose(boxes, reference["model_dn_pred_boxes"], rtol=0, atol=DN_BOX_ATOL)
    np.testing.assert_allclose(logits, reference["model_dn_pred_logits"], rtol=0, atol=DN_LOGIT_ATOL)
