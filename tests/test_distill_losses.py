import math

import pytest
import torch

from distilrank.losses import hidden_cosine, kd_kl, listwise_kl, logit_mse, mlm_ce

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


# ---------------------------------------------------------------------------- soft-label losses


def test_logit_mse_matches_hand_computation_centered():
    student = [[-1.0, 2.0], [0.5, 0.0]]
    teacher = [[3.0, 7.0], [-2.0, -4.0]]
    # teacher rows centred by hand: mean 5 -> [-2, 2]; mean -3 -> [1, -1]
    diffs = [(-1.0 - -2.0), (2.0 - 2.0), (0.5 - 1.0), (0.0 - -1.0)]
    expected = sum(d * d for d in diffs) / 4  # (1 + 0 + 0.25 + 1) / 4
    assert expected == pytest.approx(0.5625)
    got = logit_mse(torch.tensor(student), torch.tensor(teacher)).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_logit_mse_without_centering_uses_raw_teacher():
    student, teacher = [[-1.0, 2.0]], [[3.0, 7.0]]
    expected = ((-1.0 - 3.0) ** 2 + (2.0 - 7.0) ** 2) / 2  # (16 + 25) / 2
    got = logit_mse(torch.tensor(student), torch.tensor(teacher), center=False).item()
    assert got == pytest.approx(expected) and expected == 20.5


def test_logit_mse_zero_when_student_equals_centred_teacher():
    teacher = torch.tensor([[12.25, 3.5], [-7.0, 1.0], [0.0, 0.0]])
    centred = torch.tensor([[4.375, -4.375], [-4.0, 4.0], [0.0, 0.0]])
    assert logit_mse(centred, teacher).item() == pytest.approx(0.0, abs=1e-12)
    assert logit_mse(teacher.clone(), teacher).item() > 1.0  # the uncentred teacher is not the target


def test_logit_mse_gradient_reaches_student_only():
    s = torch.tensor([[0.0, 1.0], [2.0, -1.0]], requires_grad=True)
    t = torch.tensor([[1.0, 3.0], [0.0, 0.0]], requires_grad=True)
    logit_mse(s, t).backward()
    # d/ds mean((s - c)^2) = 2 (s - c) / 4; centred targets [[-1, 1], [0, 0]]
    expected = [[0.5, 0.0], [1.0, -0.5]]
    for got_row, exp_row in zip(s.grad.tolist(), expected):
        assert got_row == pytest.approx(exp_row, abs=1e-7)
    assert t.grad is None


@pytest.mark.parametrize("shapes", [((2, 2), (3, 2)), ((2, 3), (2, 3)), ((2,), (2,))])
def test_logit_mse_rejects_bad_shapes(shapes):
    with pytest.raises(ValueError, match="logit_mse"):
        logit_mse(torch.zeros(shapes[0]), torch.zeros(shapes[1]))


GROUP_STUDENT = [[0.5, -1.0, 2.0, 0.0], [1.0, 1.0, -3.0, 0.5]]
GROUP_TEACHER = [[3.0, 1.0, 0.0, -2.0], [-1.0, 2.0, 2.5, 0.0]]


@pytest.mark.parametrize("t", [1.0, 0.5, 3.0])
def test_listwise_kl_matches_hand_computation(t):
    got = listwise_kl(torch.tensor(GROUP_STUDENT), torch.tensor(GROUP_TEACHER), temperature=t).item()
    assert got == pytest.approx(hand_kd(GROUP_STUDENT, GROUP_TEACHER, t), rel=1e-5)


def test_listwise_kl_two_documents_by_hand():
    # teacher softmax of [ln 3, 0] is [3/4, 1/4]; student [0, 0] is [1/2, 1/2]
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    got = listwise_kl(torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_listwise_kl_zero_for_equal_distributions():
    x = torch.tensor(GROUP_TEACHER)
    assert listwise_kl(x.clone(), x).item() == pytest.approx(0.0, abs=1e-7)
    assert listwise_kl(x + 5.0, x).item() == pytest.approx(0.0, abs=1e-6)  # same softmax


def test_listwise_kl_invariant_to_a_constant_per_row():
    s, t = torch.tensor(GROUP_STUDENT), torch.tensor(GROUP_TEACHER)
    base = listwise_kl(s, t, temperature=2.0).item()
    shift_s = torch.tensor([[10.0], [-4.0]])  # (B, 1): one constant per group
    shift_t = torch.tensor([[-7.5], [3.0]])
    assert listwise_kl(s + shift_s, t + shift_t, temperature=2.0).item() == pytest.approx(base, rel=1e-5)


def test_listwise_kl_gradient_flows_to_student_only():
    s = torch.tensor(GROUP_STUDENT, requires_grad=True)
    t = torch.tensor(GROUP_TEACHER, requires_grad=True)
    listwise_kl(s, t).backward()
    # d/ds of KL(p || softmax(s)) / B is (softmax(s) - p) / B per row
    expected = [
        [(q - p) / 2 for q, p in zip(softmax(s_row), softmax(t_row))]
        for s_row, t_row in zip(GROUP_STUDENT, GROUP_TEACHER)
    ]
    for got_row, exp_row in zip(s.grad.tolist(), expected):
        assert got_row == pytest.approx(exp_row, abs=1e-6)
    assert t.grad is None


def test_listwise_kl_rejects_bad_input():
    with pytest.raises(ValueError, match="listwise_kl: student and teacher"):
        listwise_kl(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="listwise_kl: temperature"):
        listwise_kl(torch.zeros(1, 3), torch.zeros(1, 3), temperature=-1.0)
