"""Hungarian matcher on hand-made cases."""
import pytest
import torch

from dino_demo.train.matcher import HungarianMatcher, MatchCosts


def _confident(labels: list[int], num_queries: int, num_classes: int = 4) -> torch.Tensor:
    """Logits [1, Q, C]: query q is confident about labels[q] (or nothing past len(labels))."""
    logits = torch.full((1, num_queries, num_classes), -8.0)
    for q, label in enumerate(labels):
        logits[0, q, label] = 8.0
    return logits


def test_matches_each_target_to_its_own_prediction():
    boxes = torch.tensor([[[0.2, 0.2, 0.1, 0.1], [0.7, 0.6, 0.3, 0.2], [0.5, 0.5, 0.2, 0.2]]])
    targets = [{"labels": torch.tensor([2, 0]), "boxes": boxes[0, [2, 0]].clone()}]
    queries, target_index = HungarianMatcher()(_confident([0, 1, 2], 3), boxes, targets)[0]
    assert dict(zip(queries.tolist(), target_index.tolist())) == {0: 1, 2: 0}


def test_permuting_targets_permutes_the_assignment():
    torch.manual_seed(0)
    logits = torch.randn(1, 10, 4)
    boxes = torch.rand(1, 10, 4) * 0.4 + 0.2
    targets = {"labels": torch.tensor([0, 1, 3, 2]), "boxes": torch.rand(4, 4) * 0.4 + 0.2}
    perm = torch.tensor([2, 0, 3, 1])
    matcher = HungarianMatcher()
    q1, t1 = matcher(logits, boxes, [targets])[0]
    q2, t2 = matcher(logits, boxes, [{"labels": targets["labels"][perm], "boxes": targets["boxes"][perm]}])[0]
    assert dict(zip(q1.tolist(), t1.tolist())) == dict(zip(q2.tolist(), perm[t2].tolist()))


def test_permuting_queries_permutes_the_assignment():
    torch.manual_seed(1)
    logits = torch.randn(1, 7, 4)
    boxes = torch.rand(1, 7, 4) * 0.4 + 0.2
    targets = [{"labels": torch.tensor([1, 2, 3]), "boxes": torch.rand(3, 4) * 0.4 + 0.2}]
    perm = torch.randperm(7)
    matcher = HungarianMatcher()
    q1, t1 = matcher(logits, boxes, targets)[0]
    q2, t2 = matcher(logits[:, perm], boxes[:, perm], targets)[0]
    assert dict(zip(t1.tolist(), q1.tolist())) == dict(zip(t2.tolist(), perm[q2].tolist()))


def test_empty_targets_give_empty_matches():
    matches = HungarianMatcher()(torch.randn(2, 5, 3), torch.rand(2, 5, 4) * 0.5 + 0.1, [
        {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])},
    ])
    assert [len(q) for q, _ in matches] == [0, 1]
    assert matches[0][0].dtype == torch.int64


def test_class_cost_is_focal_style():
    # With equal boxes, the slot most confident about the target class wins.
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2]] * 3])
    logits = torch.tensor([[[2.0, -1.0], [-1.0, 3.0], [0.0, 0.0]]])
    queries, _ = HungarianMatcher()(logits, boxes, [{"labels": torch.tensor([1]), "boxes": boxes[0, :1]}])[0]
    assert queries.tolist() == [1]
    cost = HungarianMatcher(MatchCosts(cls=1.0, l1=0.0, giou=0.0)).cost_matrix(
        logits[0], boxes[0], torch.tensor([1]), boxes[0, :1])
    p = torch.sigmoid(torch.tensor(3.0))
    expected = 0.25 * (1 - p) ** 2 * -torch.log(p) - 0.75 * p ** 2 * -torch.log(1 - p)
    assert torch.isclose(cost[1, 0], expected, atol=1e-6)


def test_rejects_negative_costs():
    with pytest.raises(ValueError):
        MatchCosts(cls=-1.0)
