"""Contrastive denoising queries and their attention mask (training mode)."""
import pytest
import torch

from dino_demo.model.box_ops import box_cxcywh_to_xyxy
from dino_demo.model.config import get_config
from dino_demo.model.denoising import (
    denoising_attn_mask,
    make_denoising_queries,
    num_denoising_groups,
)
from dino_demo.model.detector import build_model


def targets_of(counts, generator):
    targets = []
    for n in counts:
        centre = torch.rand(n, 2, generator=generator) * 0.5 + 0.25
        size = torch.rand(n, 2, generator=generator) * 0.2 + 0.05
        targets.append({"labels": torch.randint(0, 8, (n,), generator=generator), "boxes": torch.cat([centre, size], 1)})
    return targets


def test_group_count_follows_official_rule():
    assert num_denoising_groups(100, 5) == 20       # 200 queries // (2 * 5)
    assert num_denoising_groups(100, 150) == 1      # never zero groups
    assert num_denoising_groups(100, 0) == 1
    assert num_denoising_groups(20, 5) == 40        # below 50 the official code keeps 2 * dn_number groups


def test_query_counts_and_layout():
    g = torch.Generator().manual_seed(0)
    label_enc = torch.nn.Embedding(9, 16)
    targets = targets_of([3, 5], g)
    dn = make_denoising_queries(targets, label_enc, num_classes=8, num_queries=10, dn_number=100,
                                label_noise_ratio=0.0, box_noise_scale=0.0, generator=g)
    assert (dn.num_groups, dn.max_targets, dn.pad_size) == (20, 5, 200)
    assert dn.content.shape == (2, 200, 16) and dn.anchors_unsigmoid.shape == (2, 200, 4)
    # Without noise, every group's positive and negative copies are the targets themselves.
    for image, t in enumerate(targets):
        n = len(t["labels"])
        for copy in range(2 * dn.num_groups):
            slots = slice(copy * 5, copy * 5 + n)
            torch.testing.assert_close(dn.anchors_unsigmoid[image, slots].sigmoid(), t["boxes"].clamp(1e-3, 1 - 1e-3))
            torch.testing.assert_close(dn.content[image, slots], label_enc(t["labels"]))
        # padding slots of the image with fewer targets stay empty
        assert dn.content[image, n:5].abs().sum() == 0


def test_label_noise_rate_and_range():
    g = torch.Generator().manual_seed(1)
    targets = targets_of([50] * 4, g)
    label_enc = torch.nn.Embedding(9, 4)
    dn = make_denoising_queries(targets, label_enc, num_classes=8, num_queries=10, dn_number=100,
                                label_noise_ratio=0.5, box_noise_scale=0.0, generator=g)
    table = label_enc.weight.detach()
    # recover labels from the embeddings
    recovered = torch.cdist(dn.content.reshape(-1, 4), table).argmin(-1).view(4, -1)
    original = torch.stack([t["labels"] for t in targets]).repeat(1, 2 * dn.num_groups)
    changed = (recovered != original).float().mean().item()
    assert 0 <= recovered.min() and recovered.max() < 8           # never the spare row 8
    assert 0.15 < changed < 0.30  # flipped with p = 0.25, of which 1/8 land on the same class


def test_box_noise_ranges_positive_inside_negative_outside():
    g = torch.Generator().manual_seed(2)
    targets = targets_of([4, 4], g)
    dn = make_denoising_queries(targets, torch.nn.Embedding(9, 4), num_classes=8, num_queries=10,
                                dn_number=100, label_noise_ratio=0.0, box_noise_scale=1.0, generator=g)
    boxes = dn.anchors_unsigmoid.sigmoid()
    for image, t in enumerate(targets):
        gt = box_cxcywh_to_xyxy(t["boxes"])
        half = torch.cat([t["boxes"][:, 2:], t["boxes"][:, 2:]], -1) / 2
        for copy in range(2 * dn.num_groups):
            noisy = box_cxcywh_to_xyxy(boxes[image, copy * 4: copy * 4 + 4])
            shift = (noisy - gt).abs() / half
            if copy % 2 == 0:   # positive: each corner moves less than half the box size
                assert (shift <= 1 + 1e-3).all()
            else:   # negative: between one and two halves, unless clamped to the image or flipped
                wh = boxes[image, copy * 4: copy * 4 + 4, 2:]
                flipped = (wh <= 2e-3).repeat(1, 2)  # corners crossed: width or height clamped to ~0
                clamped = (noisy <= 1e-3) | (noisy >= 1 - 1e-3)
                assert ((shift >= 1 - 1e-3) | clamped | flipped).all()
                assert ((shift <= 2 + 1e-3) | flipped).all()


def test_attention_mask_blocks():
    pad, groups, queries = 12, 3, 5
    mask = denoising_attn_mask(pad, groups, queries)
    size = pad // groups
    assert mask.shape == (17, 17)
    assert mask[pad:, :pad].all()            # matching part cannot see denoising queries
    assert not mask[pad:, pad:].any()         # matching queries see each other
    assert not mask[:pad, pad:].any()         # denoising queries see the matching part
    for g in range(groups):
        rows = slice(g * size, (g + 1) * size)
        assert not mask[rows, rows].any()    # a group sees itself
        others = torch.ones(pad, dtype=torch.bool)
        others[rows] = False
        assert mask[rows, :pad][:, others].all()  # and no other group


@pytest.mark.slow
def test_training_forward_returns_denoising_outputs():
    torch.manual_seed(0)
    cfg = get_config("dino-tiny")
    model = build_model(cfg).train()
    g = torch.Generator().manual_seed(3)
    targets = targets_of([2, 3], g)
    images, masks = torch.randn(2, 3, 128, 160), torch.zeros(2, 128, 160, dtype=torch.bool)
    out = model(images, masks, targets)
    groups = num_denoising_groups(cfg.dn_number, 3)
    pad = 2 * groups * 3
    assert out.denoising.pad_size == pad and out.denoising.num_groups == groups
    assert out.denoising.logits.shape == (cfg.dec_layers, 2, pad, cfg.num_classes)
    assert out.logits.shape[2] == out.selection.topk_indices.shape[1]
    # gradients reach the denoising label embedding
    out.denoising.logits.sum().backward()
    assert model.label_enc.weight.grad is not None and model.label_enc.weight.grad.abs().sum() > 0
    # in eval mode targets add nothing
    with torch.no_grad():
        assert model.eval()(images, masks, targets).denoising is None
