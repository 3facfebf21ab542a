"""Learning-to-rank losses: hand-computed values, target kinds, masks, fp32 under autocast, parity with
sentence-transformers' cross-encoder losses on the same logits and labels."""

from __future__ import annotations

import math

import pytest
import torch

from distilrank.errors import ConfigError
from distilrank.losses.ltr import (
    adr_mse,
    lambda_loss,
    listnet,
    plistmle,
    ranknet,
    ranks_from_permutation,
    target_ranks,
)

LOG2 = math.log(2)


def test_ranknet_hand_computed() -> None:
    s = torch.tensor([[2.0, 0.0, 1.0]])
    y = torch.tensor([[2.0, 0.0, 1.0]])  # pairs (0,1) d=2, (0,2) d=1, (2,1) d=1
    expected = (math.log1p(math.exp(-2)) + 2 * math.log1p(math.exp(-1))) / 3 / LOG2
    assert ranknet(s, y).item() == pytest.approx(expected, rel=1e-6)
    # ties make no pair; a list where every target ties gives 0
    assert ranknet(s, torch.ones(1, 3)).item() == 0.0


def test_listnet_hand_computed() -> None:
    s = torch.tensor([[1.0, 0.0]])
    y = torch.tensor([[0.0, 0.0]])  # uniform targets: -0.5 log p0 - 0.5 log p1
    p0 = math.exp(1) / (math.exp(1) + 1)
    expected = -0.5 * math.log(p0) - 0.5 * math.log(1 - p0)
    assert listnet(s, y).item() == pytest.approx(expected, rel=1e-6)


def test_plistmle_hand_computed() -> None:
    s = torch.tensor([[0.0, 1.0, 2.0]])
    y = torch.tensor([[3.0, 2.0, 1.0]])  # target order 0, 1, 2
    lp1 = 0.0 - math.log(1 + math.e + math.e**2)
    lp2 = 1.0 - math.log(math.e + math.e**2)
    lp3 = 0.0
    w = [3.0, 1.0, 0.0]  # 2^(3-k) - 1
    expected = -(w[0] * lp1 + w[1] * lp2 + w[2] * lp3) / sum(w)
    assert plistmle(s, y).item() == pytest.approx(expected, rel=1e-5)
    assert plistmle(s, y, weighted=False).item() == pytest.approx(-(lp1 + lp2 + lp3), rel=1e-5)


def test_lambda_loss_hand_computed_lambdarank() -> None:
    s = torch.tensor([[0.0, 1.0]])  # student puts doc 1 first; doc 0 is relevant
    y = torch.tensor([[1.0, 0.0]])
    # sorted by prediction: [doc1 (rel 0), doc0 (rel 1)]; one pair (i=1 beats j=0) with gain 1 / maxDCG = 1
    weight = abs(1 / math.log2(2) - 1 / math.log2(3)) * 1.0
    expected = weight * math.log1p(math.exp(1.0)) / LOG2  # -log2 sigmoid(s_doc0 - s_doc1) = -log2 sigmoid(-1)
    assert lambda_loss(s, y, scheme="lambdarank").item() == pytest.approx(expected, rel=1e-6)
    assert lambda_loss(s, y, scheme="none").item() == pytest.approx(ranknet(s, y).item(), rel=1e-6)


def test_adr_mse_hand_computed() -> None:
    s = torch.tensor([[3.0, 0.0]])
    ranks = torch.tensor([[2.0, 1.0]])  # the teacher puts doc 1 first
    a0 = 1 + 1 / (1 + math.exp(3))  # sigmoid(0 - 3)
    a1 = 1 + 1 / (1 + math.exp(-3))
    expected = ((2 - a0) ** 2 / math.log2(3) + (1 - a1) ** 2 / math.log2(2)) / 2
    assert adr_mse(s, ranks, target_kind="ranks").item() == pytest.approx(expected, rel=1e-6)
    # the same order given as scores or labels gives the same loss (only the order is used)
    assert adr_mse(s, torch.tensor([[0.0, 5.0]]), target_kind="scores").item() == pytest.approx(expected, rel=1e-6)


def test_ranks_and_permutations() -> None:
    assert ranks_from_permutation([2, 0, 1]) == [2, 3, 1]
    key = torch.tensor([[5.0, 5.0, 1.0, 9.0]])
    assert target_ranks(key, torch.ones_like(key, dtype=torch.bool)).tolist() == [[2.5, 2.5, 4.0, 1.0]]


@pytest.mark.parametrize("fn", [ranknet, plistmle, lambda_loss, adr_mse])
def test_ranks_equal_the_scores_they_come_from(fn) -> None:
    torch.manual_seed(0)
    s, teacher = torch.randn(3, 5), torch.randn(3, 5)
    ranks = target_ranks(teacher, torch.ones_like(teacher, dtype=torch.bool))
    assert fn(s, ranks, target_kind="ranks").item() == pytest.approx(fn(s, teacher, target_kind="scores").item(),
                                                                     rel=1e-5)


def test_listnet_refuses_rankings_and_unknown_kinds() -> None:
    s = torch.zeros(1, 3)
    with pytest.raises(ConfigError, match="listnet cannot learn from teacher ranks"):
        listnet(s, torch.tensor([[1.0, 2.0, 3.0]]), target_kind="ranks")
    with pytest.raises(ConfigError, match="target kind must be one of"):
        ranknet(s, s, target_kind="permutation")
    with pytest.raises(ConfigError, match="scheme must be one of"):
        lambda_loss(s, s, scheme="ndcg3")
    with pytest.raises(ValueError, match="same shape"):
        ranknet(s, torch.zeros(1, 2))


@pytest.mark.parametrize("fn", [ranknet, listnet, plistmle, lambda_loss, adr_mse])
def test_padding_mask_equals_the_shorter_list(fn) -> None:
    torch.manual_seed(1)
    s, y = torch.randn(1, 3), torch.tensor([[2.0, 0.0, 1.0]])
    padded_s = torch.cat([s, torch.tensor([[7.0]])], dim=1)
    padded_y = torch.cat([y, torch.tensor([[5.0]])], dim=1)
    mask = torch.tensor([[True, True, True, False]])
    assert fn(padded_s, padded_y, mask).item() == pytest.approx(fn(s, y).item(), rel=1e-5)


@pytest.mark.parametrize("fn", [ranknet, listnet, plistmle, lambda_loss, adr_mse])
def test_fp32_under_autocast_and_targets_get_no_gradient(fn) -> None:
    torch.manual_seed(2)
    s = torch.randn(2, 4).bfloat16().requires_grad_()
    teacher = torch.randn(2, 4).abs().bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fn(s, teacher, target_kind="scores")
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(fn(s.float(), teacher.float(), target_kind="scores").item(), rel=1e-6)
    loss.backward()
    assert s.grad is not None and teacher.grad is None


@pytest.mark.parametrize("fn", [ranknet, listnet, plistmle, lambda_loss, adr_mse])
def test_loss_falls_when_scores_follow_targets(fn) -> None:
    y = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert fn(y * 3, y).item() < fn(-y * 3, y).item()


# ----------------------------------------------------------------- parity with sentence-transformers


class _FixedLogits(torch.nn.Module):
    """Stands in for a CrossEncoder: document texts are indices into a fixed logits vector."""

    num_labels = 1

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.device = torch.device("cpu")

    def preprocess(self, pairs, prompt=None, task=None):
        return {"idx": torch.tensor([int(doc) for _, doc in pairs])}

    def forward(self, tokens):
        return {"scores": self.logits[tokens["idx"]]}


def _st_loss(name: str, logits: torch.Tensor, labels: list[list[float]], **kwargs) -> float:
    losses = pytest.importorskip("sentence_transformers.cross_encoder.losses")
    model = _FixedLogits(logits)
    loss = getattr(losses, name)(model, **kwargs)
    docs, start = [], 0
    for row in labels:
        docs.append([str(start + i) for i in range(len(row))])
        start += len(row)
    return loss([[f"q{k}" for k in range(len(labels))], docs], [torch.tensor(r) for r in labels]).item()


def _padded(labels: list[list[float]], logits: torch.Tensor):
    g = max(len(r) for r in labels)
    s, y = torch.zeros(len(labels), g), torch.zeros(len(labels), g)
    mask = torch.zeros(len(labels), g, dtype=torch.bool)
    start = 0
    for b, row in enumerate(labels):
        s[b, : len(row)] = logits[start : start + len(row)]
        y[b, : len(row)] = torch.tensor(row)
        mask[b, : len(row)] = True
        start += len(row)
    return s, y, mask


LABELS = [[1.0, 0.0, 2.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize("name, fn, kwargs, st_kwargs", [
    ("RankNetLoss", ranknet, {}, {}),
    ("ListNetLoss", listnet, {}, {}),
    ("PListMLELoss", plistmle, {}, {"respect_input_order": False}),
    ("LambdaLoss", lambda_loss, {}, {}),
    ("LambdaLoss", lambda_loss, {"scheme": "lambdarank"}, {"weighting_scheme": "LambdaRankScheme"}),
    ("LambdaLoss", lambda_loss, {"scheme": "ndcg2", "k": 2}, {"weighting_scheme": "NDCGLoss2Scheme", "k": 2}),
    ("ADRMSELoss", adr_mse, {"target_kind": "labels"}, {}),
])
def test_parity_with_sentence_transformers(name, fn, kwargs, st_kwargs) -> None:
    losses = pytest.importorskip("sentence_transformers.cross_encoder.losses")
    if "weighting_scheme" in st_kwargs:
        st_kwargs = {**st_kwargs, "weighting_scheme": getattr(losses, st_kwargs["weighting_scheme"])()}
    torch.manual_seed(3)
    logits = torch.randn(sum(len(r) for r in LABELS)) * 2
    s, y, mask = _padded(LABELS, logits)
    ours = fn(s, y, mask, **kwargs).item()
    assert ours == pytest.approx(_st_loss(name, logits, LABELS, **st_kwargs), rel=1e-5, abs=1e-6)


# ----------------------------------------------------------------- training: `distilrank train loss=<ltr>`

LTR_NAMES = ["ranknet", "listnet", "plistmle", "lambdaloss", "adr_mse"]
FUNCTIONS = {"ranknet": ranknet, "listnet": listnet, "plistmle": plistmle, "lambdaloss": lambda_loss,
             "adr_mse": adr_mse}


def _soft_rows(path, ranks: bool = False):
    """Soft-label rows of toy groups: the teacher scores a document by the query words it shares."""
    import json

    from conftest import toy_groups

    rows = []
    for g in toy_groups(12, 3):
        docs = [g["positive"], *g["negatives"]]
        scores = [len(set(g["query"].split()) & set(d.split())) + 0.1 * k for k, d in enumerate(docs)]
        order = sorted(range(len(docs)), key=lambda i: -scores[i])
        rank = {doc: r + 1 for r, doc in enumerate(order)}
        for i, d in enumerate(docs):
            rows.append({"query": g["query"], "contents": d, "score": -rank[i] if ranks else scores[i]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", LTR_NAMES)
def test_rerank_task_loss_is_the_pure_function_on_the_batch(name, tiny_model) -> None:
    from distilrank.data.records import Group
    from distilrank.models.cross_encoder import CrossEncoder
    from distilrank.training.tasks import RerankTask

    model = CrossEncoder.from_pretrained(str(tiny_model), max_length=48)
    model.eval()
    groups = [Group("sort a list", "sort the list", ("open a file", "read data")),
              Group("python dict", "the dict key", ("a class", "a method"))]
    task = RerankTask(model, name, group_size=3, max_length=48)
    task.check(groups)
    assert task.targets == "labels"
    batch = task.collate(groups)
    with torch.no_grad():
        loss = task.loss(model, batch)
        scores = model(**batch["features"]).view(2, 3)
    labels = torch.tensor([[1.0, 0.0, 0.0]] * 2)
    assert loss.item() == pytest.approx(FUNCTIONS[name](scores, labels).item(), rel=1e-5)


@pytest.mark.parametrize("name", ["plistmle", "adr_mse"])
def test_soft_label_task_pads_uneven_subgroups_and_reads_ranks(name, tiny_model) -> None:
    from distilrank.data.records import SoftGroup
    from distilrank.models.cross_encoder import CrossEncoder
    from distilrank.training.tasks import SoftLabelTask

    model = CrossEncoder.from_pretrained(str(tiny_model), max_length=48)
    model.eval()
    groups = [SoftGroup("sort a list", ("open a file", "sort the list", "read data"), (-3.0, -1.0, -2.0)),
              SoftGroup("python dict", ("a class", "the dict key"), (-2.0, -1.0))]
    task = SoftLabelTask(model, name, max_length=48, targets="ranks")
    task.check(groups)
    batch = task.collate(groups)
    with torch.no_grad():
        loss = task.loss(model, batch)
        flat = model(**batch["features"]).view(-1)
    first = FUNCTIONS[name](flat[:3][None], torch.tensor([[3.0, 1.0, 2.0]]), target_kind="ranks").item()
    second = FUNCTIONS[name](flat[3:][None], torch.tensor([[2.0, 1.0]]), target_kind="ranks").item()
    # adr_mse averages over documents (3 + 2), plistmle over lists
    expected = (3 * first + 2 * second) / 5 if name == "adr_mse" else (first + second) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", LTR_NAMES)
def test_train_runs_each_ltr_loss_and_it_falls(name, tiny_model, tmp_path) -> None:
    from distilrank import TrainConfig
    from distilrank.training.run import run_training

    labels = _soft_rows(tmp_path / "labels.jsonl")
    out = tmp_path / "run"
    cfg = TrainConfig(train_file=str(labels), model=str(tiny_model), output_dir=str(out), loss=name, max_steps=24,
                      batch_size=4, group_size=4, max_length=48, learning_rate=3e-3, seed=7, log_steps=4,
                      warmup_ratio=0.0)
    metrics = run_training(cfg)
    import json

    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert metrics["train"]["steps"] == 24 and (out / "model").exists()
    assert sum(losses[-2:]) < sum(losses[:2])


def test_train_on_binary_groups_and_listnet_refuses_a_ranking(tiny_model, groups_file, tmp_path) -> None:
    from distilrank import TrainConfig
    from distilrank.training.run import run_training

    base = dict(model=str(tiny_model), max_steps=4, batch_size=4, group_size=4, max_length=48, log_steps=2)
    metrics = run_training(TrainConfig(train_file=str(groups_file), output_dir=str(tmp_path / "a"),
                                       loss="lambdaloss", **base))
    assert metrics["train"]["steps"] == 4
    labels = _soft_rows(tmp_path / "ranked.jsonl", ranks=True)
    with pytest.raises(ConfigError, match=r"ranked.jsonl: listnet cannot learn from teacher ranks"):
        run_training(TrainConfig(train_file=str(labels), output_dir=str(tmp_path / "b"), loss="listnet",
                                 targets="ranks", **base))
    with pytest.raises(ConfigError, match="targets=scores needs teacher scores"):
        run_training(TrainConfig(train_file=str(groups_file), output_dir=str(tmp_path / "c"), loss="ranknet",
                                 targets="scores", **base))
    with pytest.raises(ConfigError, match="targets applies to the LTR losses"):
        TrainConfig(train_file=str(groups_file), loss="kl", targets="ranks")


def test_a_bi_encoder_trains_with_an_ltr_loss_on_soft_labels(tiny_model, groups_file, tmp_path) -> None:
    from distilrank import TrainConfig
    from distilrank.training.run import run_training

    labels = _soft_rows(tmp_path / "labels.jsonl")
    base = dict(model=str(tiny_model), max_steps=4, batch_size=4, group_size=4, max_length=48, log_steps=2,
                encoder="bi")
    metrics = run_training(TrainConfig(train_file=str(labels), output_dir=str(tmp_path / "bi"), loss="adr_mse",
                                       **base))
    assert metrics["train"]["steps"] == 4 and metrics["train"]["model"] == "bi-encoder"
    with pytest.raises(ConfigError, match="a bi-encoder trains loss=ranknet on a teacher's soft labels"):
        run_training(TrainConfig(train_file=str(groups_file), output_dir=str(tmp_path / "b2"), loss="ranknet",
                                 **base))
