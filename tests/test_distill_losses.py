import math

import pytest
import torch

from distilrank.losses import hidden_cosine, kd_kl, mlm_ce

STUDENT = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
TEACHER = [[2.0, 0.0, 1.0], [1.0, 1.0, -2.0]]


def softmax(row: list[float]) -> list[float]:
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def hand_kd(student: list[list[float]], teacher: list[list[float]], t: float) -> float:
    total = 0.0
    for s_row, t_row in zip(student, teacher):
        p = softmax([v / t for v in t_row])
        q = softmax([v / t for v in s_row])
        total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    return total / len(student) * t * t


def hand_cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


@pytest.mark.parametrize("t", [1.0, 2.0, 4.0])
def test_kd_kl_matches_hand_computation(t):
    got = kd_kl(torch.tensor(STUDENT), torch.tensor(TEACHER), temperature=t).item()
    assert got == pytest.approx(hand_kd(STUDENT, TEACHER, t), rel=1e-5)


def test_kd_kl_default_temperature_is_two():
    got = kd_kl(torch.tensor(STUDENT), torch.tensor(TEACHER)).item()
    assert got == pytest.approx(hand_kd(STUDENT, TEACHER, 2.0), rel=1e-5)


def test_kd_kl_zero_for_equal_logits():
    x = torch.tensor(TEACHER)
    assert kd_kl(x.clone(), x).item() == pytest.approx(0.0, abs=1e-7)


def test_kd_kl_scales_with_t_squared():
    # a per-row shift keeps softmax(x / T) the same, so only the T^2 factor changes the value
    s, t = torch.tensor(STUDENT), torch.tensor(TEACHER)
    kl_1 = kd_kl(s, t, temperature=1.0).item()
    kl_3 = kd_kl(3 * s, 3 * t, temperature=3.0).item()  # same softened distributions as T=1
    assert kl_3 == pytest.approx(9 * kl_1, rel=1e-5)


@pytest.mark.parametrize("shapes", [((2, 3), (2, 4)), ((2, 3), (3, 3)), ((3,), (3,))])
def test_kd_kl_rejects_shape_mismatch(shapes):
    s, t = torch.zeros(shapes[0]), torch.zeros(shapes[1])
    with pytest.raises(ValueError, match="kd_kl: student and teacher"):
        kd_kl(s, t)


def test_kd_kl_rejects_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        kd_kl(torch.zeros(1, 2), torch.zeros(1, 2), temperature=0.0)


def test_kd_kl_gradient_reaches_student_only():
    s = torch.tensor(STUDENT, requires_grad=True)
    t = torch.tensor(TEACHER, requires_grad=True)
    kd_kl(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_mlm_ce_matches_hand_computation():
    labels = [2, 0]
    expected = sum(
        -math.log(softmax(row)[y]) for row, y in zip(STUDENT, labels)
    ) / 2
    got = mlm_ce(torch.tensor(STUDENT), torch.tensor(labels)).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_mlm_ce_uniform_is_log_vocab():
    assert mlm_ce(torch.zeros(3, 5), torch.tensor([0, 4, 2])).item() == pytest.approx(math.log(5), rel=1e-6)


def test_mlm_ce_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="mlm_ce"):
        mlm_ce(torch.zeros(2, 3), torch.tensor([0, 1, 2]))


def test_hidden_cosine_matches_hand_computation():
    expected = sum(1 - hand_cosine(a, b) for a, b in zip(STUDENT, TEACHER)) / 2
    got = hidden_cosine(torch.tensor(STUDENT), torch.tensor(TEACHER)).item()
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(("teacher", "expected"), [
    ([[2.0, 0.0, 4.0]], 0.0),   # parallel (any positive scale)
    ([[0.0, 5.0, 0.0]], 1.0),   # orthogonal
    ([[-3.0, 0.0, -6.0]], 2.0),  # opposite
])
def test_hidden_cosine_reference_angles(teacher, expected):
    got = hidden_cosine(torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor(teacher)).item()
    assert got == pytest.approx(expected, abs=1e-6)


def test_hidden_cosine_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="hidden_cosine"):
        hidden_cosine(torch.zeros(2, 3), torch.zeros(2, 4))


def test_hidden_cosine_gradient_reaches_student_only():
    s = torch.tensor(STUDENT, requires_grad=True)
    t = torch.tensor(TEACHER, requires_grad=True)
    hidden_cosine(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
