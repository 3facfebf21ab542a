import math

import pytest
import torch

from distilrank.losses import listwise_softmax_ce, margin_mse, pairwise_margin, pointwise_bce


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_pointwise_bce_matches_hand_computation(gen):
    s = torch.randn(6, generator=gen)
    y = torch.tensor([1.0, 0.0, 1.0, 0.5, 0.0, 1.0])
    expected = 0.0
    for si, yi in zip(s.tolist(), y.tolist()):
        p = 1 / (1 + math.exp(-si))
        expected += -(yi * math.log(p) + (1 - yi) * math.log(1 - p))
    assert pointwise_bce(s, y).item() == pytest.approx(expected / 6, rel=1e-5)


def test_pairwise_margin_hand_values():
    pos = torch.tensor([2.0, 0.0, 5.0])
    neg = torch.tensor([1.5, 1.0, 1.0])
    # hinge terms: max(0, 1-0.5)=0.5, max(0, 1+1)=2, max(0, 1-4)=0
    assert pairwise_margin(pos, neg, margin=1.0).item() == pytest.approx((0.5 + 2 + 0) / 3)


def test_pairwise_margin_with_several_negatives(gen):
    pos, neg = torch.randn(4, generator=gen), torch.randn(4, 3, generator=gen)
    expected = sum(
        max(0.0, 0.7 - (pos[b].item() - neg[b, n].item())) for b in range(4) for n in range(3)
    ) / 12
    assert pairwise_margin(pos, neg, margin=0.7).item() == pytest.approx(expected, rel=1e-5)


def test_listwise_softmax_ce_hand_values(gen):
    s = torch.randn(3, 5, generator=gen)
    expected = sum(
        -(s[b, 0].item() - math.log(sum(math.exp(v) for v in s[b].tolist()))) for b in range(3)
    ) / 3
    assert listwise_softmax_ce(s).item() == pytest.approx(expected, rel=1e-5)


def test_listwise_softmax_ce_prefers_positive_first():
    good = torch.tensor([[5.0, 0.0, 0.0]])
    bad = torch.tensor([[0.0, 5.0, 0.0]])
    assert listwise_softmax_ce(good) < listwise_softmax_ce(bad)


def test_margin_mse_hand_values(gen):
    pos, neg, tm = (torch.randn(5, 2, generator=gen) for _ in range(3))
    pos = pos[:, 0]
    expected = sum(((pos[b] - neg[b, n]) - tm[b, n]).item() ** 2 for b in range(5) for n in range(2)) / 10
    assert margin_mse(pos, neg, tm).item() == pytest.approx(expected, rel=1e-5)


def test_margin_mse_zero_when_margins_match():
    pos, neg = torch.tensor([3.0, 1.0]), torch.tensor([1.0, 2.0])
    assert margin_mse(pos, neg, pos - neg).item() == 0.0


def test_losses_are_differentiable(gen):
    s = torch.randn(2, 4, generator=gen, requires_grad=True)
    listwise_softmax_ce(s).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()
