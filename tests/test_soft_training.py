"""Student training on soft labels (logit_mse, kl, margin_mse), stages and the InRanker-style trainer."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import toy_groups
from safetensors.torch import load_file
from tiny import make_tiny_t5, tokens

import distilrank.training.run as run_module
from distilrank import ConfigError, DataError, Reranker, TrainConfig
from distilrank.cli import main
from distilrank.config import load_stages
from distilrank.data.records import SoftGroup
from distilrank.losses import listwise_kl
from distilrank.models.cross_encoder import CrossEncoder
from distilrank.models.seq2seq import Seq2SeqReranker, load_scoring_model
from distilrank.training.run import run_stages, run_training
from distilrank.training.soft import SoftLabelTrainer
from distilrank.training.tasks import RerankTask, SoftLabelTask, split_soft_groups, student_scores

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved random 2-layer T5 with a true/false tokenizer (read-only)."""
    return make_tiny_t5(tmp_path_factory.mktemp("tiny-t5"))


def teacher_logits(query: str, doc: str) -> tuple[float, float]:
    """A made-up teacher: (false, true) logits that grow with the words the document shares with the query."""
    shared = len(set(tokens(query)) & set(tokens(doc)))
    true = 2.0 * shared - 3.0
    return (1.0 - 0.5 * true, true)  # not zero-centred on purpose: logit_mse centres it


def write_soft_labels(path: Path, n: int = 16, negatives: int = 3, kind: str = "logits") -> Path:
    """InRanker's custom-dataset rows {query, contents, true_logit, false_logit} (or {query, contents, score})."""
    rows = []
    for g in toy_groups(n, negatives):
        for doc in [g["positive"], *g["negatives"]]:
            false, true = teacher_logits(g["query"], doc)
            label = {"true_logit": true, "false_logit": false} if kind == "logits" else {"score": true - false}
            rows.append({"query": g["query"], "contents": doc, **label})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def soft_group(query: str, docs: list[str], with_logits: bool = True) -> SoftGroup:
    logits = tuple(teacher_logits(query, d) for d in docs)
    return SoftGroup(query, tuple(docs), tuple(t - f for f, t in logits), logits if with_logits else None)


HAND_GROUPS = [
    soft_group("sort a list", ["sort the list", "open a file", "read the data"]),
    soft_group("python dict key", ["the dict key", "a class method"]),
]


def _cfg(model, train_file, out, **kw) -> TrainConfig:
    base = dict(train_file=str(train_file), model=str(model), output_dir=str(out), loss="logit_mse", max_steps=20,
                batch_size=4, group_size=4, max_length=48, learning_rate=3e-3, seed=7, log_steps=2, warmup_ratio=0.0)
    base.update(kw)
    return TrainConfig(**base)


def _losses(out: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]


# ------------------------------------------------------------------ pieces


def test_student_scores_turn_logits_into_true_minus_false():
    assert student_scores(torch.tensor([[1.0, 3.0], [0.5, 0.0]])).tolist() == [2.0, -0.5]
    assert student_scores(torch.tensor([0.25, -1.0])).tolist() == [0.25, -1.0]
    # bce on true - false is monoT5's cross-entropy on the true/false tokens
    logits = torch.tensor([[0.3, -1.2], [2.0, 0.5]])
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor([1, 0]))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(student_scores(logits), torch.tensor([1.0, 0.0]))
    assert torch.allclose(ce, bce)


def test_split_soft_groups_uses_every_document_once():
    docs = [f"doc {i}" for i in range(9)]
    group = SoftGroup("q", tuple(docs), tuple(float(i) for i in range(9)), tuple((-i, float(i)) for i in range(9)))
    lone = SoftGroup("lone", ("only",), (1.0,))
    parts = split_soft_groups([group, lone], group_size=4, seed=3)
    assert [len(p.documents) for p in parts] == [3, 3, 3, 1]  # 9 -> 3 near-equal parts, no leftover of 1
    seen = [d for p in parts[:3] for d in p.documents]
    assert sorted(seen) == sorted(docs) and seen != docs  # all used once, shuffled
    for p in parts[:3]:  # scores and logits travel with their documents
        for d, s, (f, t) in zip(p.documents, p.scores, p.logits):
            assert s == float(d.split()[1]) == t == -f
    assert parts[3] == lone
    assert split_soft_groups([group], 4, seed=3) == parts[:3]  # seeded
    assert split_soft_groups([group], 4, seed=4) != parts[:3]
    assert [len(p.documents) for p in split_soft_groups([group], 1, seed=0)] == [1] * 9


# ------------------------------------------------------------------ losses computed by the task


def _batch_outputs(task, model, groups):
    """The task's loss on a hand-made batch, and the model's outputs on the same pairs computed directly."""
    model.eval()  # no dropout: both passes see the same function
    batch = task.collate(groups)
    with torch.no_grad():
        loss = task.loss(model, batch)
        features = model.tokenize([g.query for g in groups for _ in g.documents],
                                  [d for g in groups for d in g.documents], 48)
        out = model(**features)
    return loss, out


def test_logit_mse_on_a_t5_student_is_inranker_formula(tiny_t5):
    model = Seq2SeqReranker.from_pretrained(str(tiny_t5), max_length=48)
    task = SoftLabelTask(model, "logit_mse", group_size=4, max_length=48)
    loss, _ = _batch_outputs(task, model, HAND_GROUPS)
    # InRanker: first-decoder-step logits of "▁false"/"▁true" vs. the zero-centred teacher pair
    queries = [g.query for g in HAND_GROUPS for _ in g.documents]
    docs = [d for g in HAND_GROUPS for d in g.documents]
    enc = model.tokenizer([f"Query: {q} Document: {d} Relevant:" for q, d in zip(queries, docs)],
                          padding=True, return_tensors="pt")
    with torch.no_grad():
        step = model.model(**enc, decoder_input_ids=torch.zeros((len(docs), 1), dtype=torch.long)).logits[:, 0]
    student = step[:, [model.false_id, model.true_id]]  # (N, 2)
    squares = []
    for row, (f, t) in zip(student.tolist(), [p for g in HAND_GROUPS for p in g.logits]):
        avg = (f + t) / 2
        squares += [(row[0] - (f - avg)) ** 2, (row[1] - (t - avg)) ** 2]
    assert loss.item() == pytest.approx(sum(squares) / len(squares), rel=1e-4)


def test_logit_mse_on_an_encoder_student_regresses_the_logit_difference(tiny_model):
    model = CrossEncoder.from_pretrained(str(tiny_model), max_length=48)
    loss, out = _batch_outputs(SoftLabelTask(model, "logit_mse", max_length=48), model, HAND_GROUPS)
    target = [t - f for g in HAND_GROUPS for f, t in g.logits]
    expected = sum((s - y) ** 2 for s, y in zip(out.tolist(), target)) / len(target)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("student", ["t5", "bert"])
def test_kl_is_listwise_kl_per_query_group(student, tiny_t5, tiny_model):
    model = (Seq2SeqReranker.from_pretrained(str(tiny_t5), max_length=48) if student == "t5"
             else CrossEncoder.from_pretrained(str(tiny_model), max_length=48))
    loss, out = _batch_outputs(SoftLabelTask(model, "kl", max_length=48, temperature=2.0), model, HAND_GROUPS)
    scores = student_scores(out)  # (5,): groups of 3 and 2 documents
    expected = [listwise_kl(scores[a:b][None], torch.tensor(g.scores)[None], 2.0).item()
                for (a, b), g in zip([(0, 3), (3, 5)], HAND_GROUPS)]
    assert loss.item() == pytest.approx(sum(expected) / 2, rel=1e-5)


@pytest.mark.parametrize("student", ["t5", "bert"])
def test_margin_mse_is_against_the_teachers_best_document(student, tiny_t5, tiny_model):
    model = (Seq2SeqReranker.from_pretrained(str(tiny_t5), max_length=48) if student == "t5"
             else CrossEncoder.from_pretrained(str(tiny_model), max_length=48))
    groups = [soft_group("sort a list", ["open a file", "sort the list", "read data"]),
              soft_group("python dict key", ["a class", "the dict key"])]
    loss, out = _batch_outputs(SoftLabelTask(model, "margin_mse", max_length=48), model, groups)
    s, t = student_scores(out).tolist(), [x for g in groups for x in g.scores]
    best = {0: 1, 1: 1, 2: 1, 3: 4, 4: 4}  # the teacher's best: "sort the list", "the dict key"
    terms = [((s[best[i]] - s[i]) - (t[best[i]] - t[i])) ** 2 for i in range(5) if i != best[i]]
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


@pytest.mark.parametrize("loss", ["kl", "margin_mse", "logit_mse"])
def test_bi_encoder_soft_loss_scores_pairs_by_scaled_cosine(loss, tiny_model):
    """A bi-encoder student's score of (q, d) is scale * cos(embed(q), embed(d)); the soft losses see exactly that."""
    from distilrank.models.bi_encoder import BiEncoder
    from distilrank.training.embedding import EmbeddingSoftLabelTask

    model = BiEncoder.from_pretrained(str(tiny_model), max_length=48).eval()
    task = EmbeddingSoftLabelTask(model, loss, max_length=48, temperature=2.0, scale=5.0)
    with torch.no_grad():
        got = task.loss(model, task.collate(HAND_GROUPS))
        scores = torch.tensor([5.0 * float(model.score([(g.query, d)])[0]) for g in HAND_GROUPS for d in g.documents])
        reference = SoftLabelTask(model, loss, temperature=2.0)  # the cross-encoder task's loss on the same scores
        expected = reference.soft_loss(scores, reference.labels(HAND_GROUPS))
    assert got.item() == pytest.approx(expected.item(), rel=1e-4)
    if loss == "kl":  # and by hand: KL per query group, averaged
        parts = [listwise_kl(scores[a:b][None], torch.tensor(g.scores)[None], 2.0).item()
                 for (a, b), g in zip([(0, 3), (3, 5)], HAND_GROUPS)]
        assert got.item() == pytest.approx(sum(parts) / 2, rel=1e-4)


def test_bi_encoder_student_learns_a_teachers_soft_labels(tiny_model, tmp_path):
    """encoder=bi on `distilrank label` rows: a bi-encoder checkpoint whose cosine ranks like the teacher."""
    from distilrank.models.bi_encoder import BiEncoder, is_bi_encoder_checkpoint

    labels = write_soft_labels(tmp_path / "labels.jsonl", n=32, kind="scores")
    out = tmp_path / "run"
    metrics = run_training(_cfg(tiny_model, labels, out, loss="kl", encoder="bi", max_steps=40, learning_rate=3e-3))
    assert metrics["train"]["model"] == "bi-encoder" and is_bi_encoder_checkpoint(out / "model")
    losses = _losses(out)
    assert losses[-1] < 0.7 * losses[0]
    reranker = Reranker.load(out / "model")
    assert isinstance(reranker.model, BiEncoder)
    wins = 0
    for g in toy_groups(n=20, seed=5):  # held-out queries; the teacher ranks the positive first
        s = reranker.score([(g["query"], g["positive"]), *((g["query"], n) for n in g["negatives"])])
        wins += s[0] > max(s[1:])
    assert wins >= 12  # chance is 1 in 4


def test_encoder_setting_is_checked_against_the_loss_and_the_data(tiny_model, groups_file, tmp_path):
    with pytest.raises(ConfigError, match="loss=mnrl trains a bi-encoder; drop encoder=cross"):
        _cfg(tiny_model, groups_file, tmp_path / "r", loss="mnrl", encoder="cross")
    with pytest.raises(ConfigError, match="a bi-encoder trains with loss mnrl or triplet"):
        _cfg(tiny_model, groups_file, tmp_path / "r", loss="listwise", encoder="bi")
    with pytest.raises(ConfigError, match="encoder must be"):
        _cfg(tiny_model, groups_file, tmp_path / "r", encoder="dual")
    with pytest.raises(ConfigError, match=r"groups.*loss=kl learns a teacher's soft labels.*loss=mnrl"):
        run_training(_cfg(tiny_model, groups_file, tmp_path / "r", loss="kl", encoder="bi"))
    labels = write_soft_labels(tmp_path / "labels.jsonl", kind="scores")
    with pytest.raises(ConfigError, match=r"labels.jsonl: .*loss=mnrl cannot learn.*encoder=bi and loss=kl"):
        run_training(_cfg(tiny_model, labels, tmp_path / "r", loss="mnrl"))
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------ training runs


def test_t5_student_trains_on_inranker_logits_and_loads(tiny_t5, tmp_path):
    labels = write_soft_labels(tmp_path / "labels.jsonl")
    out = tmp_path / "run"
    metrics = run_training(_cfg(tiny_t5, labels, out, group_size=1, batch_size=8, max_steps=12))
    assert metrics["train"]["steps"] == 12
    losses = _losses(out)
    assert losses[-1] < 0.7 * losses[0]
    assert isinstance(load_scoring_model(str(out / "model")), Seq2SeqReranker)
    ranked = Reranker.load(out / "model", device="cpu").rank("sort a list", ["open a file", "sort a list"])
    assert len(ranked) == 2


def test_encoder_student_trains_with_kl_on_score_labels(tiny_model, tmp_path):
    labels = write_soft_labels(tmp_path / "labels.jsonl", kind="scores")
    out = tmp_path / "run"
    run_training(_cfg(tiny_model, labels, out, loss="kl", max_steps=24))
    losses = _losses(out)
    assert losses[-1] < losses[0]
    assert isinstance(load_scoring_model(str(out / "model")), CrossEncoder)


def test_t5_student_trains_on_binary_groups(tiny_t5, groups_file, tmp_path):
    out = tmp_path / "run"
    run_training(_cfg(tiny_t5, groups_file, out, loss="listwise", max_steps=12, batch_size=3))
    losses = _losses(out)
    assert losses[-1] < losses[0]
    assert isinstance(load_scoring_model(str(out / "model")), Seq2SeqReranker)


def test_warmup_steps_override_warmup_ratio(tiny_model, tmp_path):
    labels = write_soft_labels(tmp_path / "labels.jsonl", n=4, kind="scores")
    out = tmp_path / "run"
    run_training(_cfg(tiny_model, labels, out, max_steps=6, log_steps=1, warmup_ratio=0.5, warmup_steps=4,
                      learning_rate=1e-3))
    lrs = [json.loads(x)["lr"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    # warmup_linear over 4 steps (not 0.5 * 6 = 3), then linear decay to 0 at step 6
    assert lrs == pytest.approx([1e-3 * x for x in (0.5, 0.75, 1.0, 1.0, 0.5, 0.0)])


# ------------------------------------------------------------------ mismatched loss and data


def test_binary_loss_on_soft_labels_names_the_soft_losses(tiny_model, tmp_path):
    labels = write_soft_labels(tmp_path / "labels.jsonl")
    with pytest.raises(ConfigError, match=r"labels.jsonl: .*loss=logit_mse, kl or margin_mse") as err:
        run_training(_cfg(tiny_model, labels, tmp_path / "run", loss="listwise"))
    assert "listwise" in str(err.value)
    assert not (tmp_path / "run").exists()


def test_soft_loss_on_binary_groups_is_an_error(tiny_model, groups_file, tmp_path):
    for loss in ("kl", "logit_mse"):
        with pytest.raises(ConfigError, match=rf"loss={loss} learns from a teacher's soft labels"):
            run_training(_cfg(tiny_model, groups_file, tmp_path / "run", loss=loss))
    # margin_mse on groups carrying teacher scores is binary-file distillation (RerankTask)
    model = CrossEncoder.from_pretrained(str(tiny_model))
    from distilrank.data.records import Group
    RerankTask(model, "margin_mse").check([Group("q", "p", ("n",), (2.0, 1.0))])


def test_grouped_losses_need_two_documents_per_query(tiny_model, tmp_path):
    labels = write_soft_labels(tmp_path / "labels.jsonl", negatives=0)  # one document per query
    with pytest.raises(ConfigError, match="single labelled document; use loss=logit_mse"):
        run_training(_cfg(tiny_model, labels, tmp_path / "run", loss="kl"))
    task = SoftLabelTask(CrossEncoder.from_pretrained(str(tiny_model)), "kl", group_size=4)
    mixed = [HAND_GROUPS[0], soft_group("lone", ["sort a list"])]
    task.check(mixed)
    assert [len(g.documents) for g in task.prepare(mixed, seed=0)] == [3]  # the lone document is dropped


def test_bad_soft_groups_from_python_are_clear_errors(tiny_model):
    task = SoftLabelTask(CrossEncoder.from_pretrained(str(tiny_model)), "logit_mse")
    with pytest.raises(DataError, match="soft-label group 1 .* NaN or infinite"):
        task.check([HAND_GROUPS[0], SoftGroup("q", ("d",), (math.nan,))])
    with pytest.raises(DataError, match="has no documents"):
        task.check([SoftGroup("q", (), ())])
    with pytest.raises(DataError, match="2 documents but 1 scores"):
        task.check([SoftGroup("q", ("a", "b"), (1.0,))])


def test_seq2seq_student_with_score_labels_falls_back_and_says_so(tiny_t5, caplog):
    model = Seq2SeqReranker.from_pretrained(str(tiny_t5), max_length=48)
    task = SoftLabelTask(model, "logit_mse", max_length=48)
    groups = [soft_group(g.query, list(g.documents), with_logits=False) for g in HAND_GROUPS]
    with caplog.at_level(logging.WARNING, logger="distilrank.training.tasks"):
        task.check(groups)
    assert "score-only labels" in caplog.text
    loss, out = _batch_outputs(task, model, groups)
    target = [x for g in groups for x in g.scores]
    diffs = student_scores(out).tolist()
    assert loss.item() == pytest.approx(sum((s - y) ** 2 for s, y in zip(diffs, target)) / 5, rel=1e-5)


def test_seq2seq_student_rejects_num_layers(tiny_t5, tmp_path):
    labels = write_soft_labels(tmp_path / "labels.jsonl", n=2)
    with pytest.raises(ConfigError, match="num_layers=1 .* seq2seq"):
        run_training(_cfg(tiny_t5, labels, tmp_path / "run", num_layers=1))


# ------------------------------------------------------------------ stages


def _stages_yaml(tmp_path: Path, model: Path, labels: Path, **extra) -> Path:
    doc = {"model": str(model), "loss": "kl", "batch_size": 4, "group_size": 4, "max_length": 48,
           "learning_rate": 1e-3, "output_dir": str(tmp_path / "runs"), "log_steps": 1,
           "stages": [{"name": "first", "train_file": str(labels), "max_steps": 3},
                      {"name": "second", "train_file": str(labels), "max_steps": 2, "learning_rate": 5e-4}]}
    doc.update(extra)
    path = tmp_path / "stages.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_stages_chain_from_the_previous_model_and_resume_skips_finished(tiny_model, tmp_path, monkeypatch):
    labels = write_soft_labels(tmp_path / "labels.jsonl", n=8, kind="scores")
    stages = load_stages(_stages_yaml(tmp_path, tiny_model, labels))
    (n1, c1), (n2, c2) = stages
    assert (n1, n2) == ("first", "second")
    assert c1.model == str(tiny_model) and c2.model == str(tmp_path / "runs" / "first" / "model")
    assert (c1.learning_rate, c2.learning_rate, c1.max_steps, c2.max_steps) == (1e-3, 5e-4, 3, 2)

    loaded = {}  # weights each stage starts from, captured when its model is loaded
    plain_load = run_module.load_student

    def spy(cfg):
        model = plain_load(cfg)
        loaded[cfg.output_dir] = {k: v.detach().clone() for k, v in model.model.state_dict().items()}
        return model

    monkeypatch.setattr(run_module, "load_student", spy)
    results = run_stages(stages)
    assert [r["stage"] for r in results] == ["first", "second"] and [r["train"]["steps"] for r in results] == [3, 2]
    saved_first = load_file(str(tmp_path / "runs" / "first" / "model" / "model.safetensors"))
    start_second = loaded[c2.output_dir]
    for name, value in saved_first.items():
        assert torch.equal(start_second[name], value), name
    # stage 1 did train: its start differs from its end
    assert any(not torch.equal(loaded[c1.output_dir][k], v) for k, v in saved_first.items())

    import shutil

    shutil.rmtree(tmp_path / "runs" / "second")  # as if killed during stage 2
    loaded.clear()
    resumed = run_stages(load_stages(tmp_path / "stages.yaml", ["resume=true"]))
    assert [r["skipped"] for r in resumed] == [True, False]
    assert list(loaded) == [c2.output_dir]  # stage 1 did no work
    assert resumed[0]["train"]["steps"] == 3  # its metrics.json is reported
    assert (tmp_path / "runs" / "second" / "model" / "model.safetensors").exists()


def test_cli_runs_stages_and_overrides_reach_every_stage(tiny_model, tmp_path, capsys):
    labels = write_soft_labels(tmp_path / "labels.jsonl", n=4, kind="scores")
    path = _stages_yaml(tmp_path, tiny_model, labels)
    assert main(["train", "--config", str(path), "max_steps=1"]) == 0
    printed = capsys.readouterr().out
    assert "stage 1/2 'first': trained 1 steps" in printed and "stage 2/2 'second': trained 1 steps" in printed
    assert main(["train", "--config", str(path), "--resume"]) == 0
    assert printed.count("trained") == 2 and capsys.readouterr().out.count("skipped") == 2


def test_bad_stage_configs_fail_before_any_compute(tiny_model, tmp_path, monkeypatch):
    labels = write_soft_labels(tmp_path / "labels.jsonl", n=2, kind="scores")

    def no_training(*args, **kwargs):
        raise AssertionError("a stage started training")

    monkeypatch.setattr(run_module, "run_training", no_training)
    bad_key = [{"name": "a", "train_file": str(labels)}, {"name": "b", "train_file": str(labels), "learning_rat": 1}]
    with pytest.raises(ConfigError, match=r"stages\[1\] \(b\): unknown TrainConfig key 'learning_rat'; did you mean"):
        load_stages(_stages_yaml(tmp_path, tiny_model, labels, stages=bad_key))
    same_dir = [{"name": "a", "train_file": str(labels), "output_dir": str(tmp_path / "x")},
                {"name": "b", "train_file": str(labels), "output_dir": str(tmp_path / "x")}]
    with pytest.raises(ConfigError, match="'a' and 'b' share output_dir"):
        load_stages(_stages_yaml(tmp_path, tiny_model, labels, stages=same_dir))
    with pytest.raises(ConfigError, match="unique"):
        load_stages(_stages_yaml(tmp_path, tiny_model, labels, stages=[{"train_file": "a.jsonl", "name": "s"}] * 2))
    with pytest.raises(ConfigError, match="non-empty list"):
        load_stages(_stages_yaml(tmp_path, tiny_model, labels, stages={"train_file": "a.jsonl"}))
    with pytest.raises(ConfigError, match=r"stages\[0\] \(stage1\): loss must be one of"):
        load_stages(_stages_yaml(tmp_path, tiny_model, labels, stages=[{"train_file": "a.jsonl", "loss": "mse"}]))
    missing = [{"name": "a", "train_file": str(labels)}, {"name": "b", "train_file": str(tmp_path / "nope.jsonl")}]
    with pytest.raises(ConfigError, match="stage 'b': train_file .*nope.jsonl does not exist"):
        run_stages(load_stages(_stages_yaml(tmp_path, tiny_model, labels, stages=missing)))
    (tmp_path / "runs" / "stage2" / "model").mkdir(parents=True)
    taken = [{"train_file": str(labels)}, {"train_file": str(labels)}]
    with pytest.raises(ConfigError, match="stage 'stage2': .* already holds a trained model"):
        run_stages(load_stages(_stages_yaml(tmp_path, tiny_model, labels, stages=taken)))


def test_a_file_without_stages_is_one_plain_config(tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text("train_file: x.jsonl\nloss: bce\noutput_dir: runs/plain\n", encoding="utf-8")
    [(name, cfg)] = load_stages(path, ["max_steps=3"])
    assert name == "" and cfg == TrainConfig(train_file="x.jsonl", loss="bce", output_dir="runs/plain", max_steps=3)


def test_shipped_inranker_config_loads():
    (n1, c1), (n2, c2) = load_stages(ROOT / "configs" / "inranker-t5.yaml")
    assert c1.model == "t5-small" and c1.train_file == "unicamp-dl/InRanker-msmarco"
    assert c2.model == str(Path(c1.output_dir) / "model")
    for c in (c1, c2):
        assert (c.loss, c.batch_size, c.learning_rate, c.max_length, c.mixed_precision) == (
            "logit_mse", 32, 7e-5, 512, "bf16")


# ------------------------------------------------------------------ InRanker-style trainer API


def test_trainer_api_trains_a_t5_from_an_inranker_file(tiny_t5, tmp_path):
    labels = write_soft_labels(tmp_path / "labels.jsonl", n=12)
    trainer = SoftLabelTrainer(model=str(tiny_t5), batch_size=8, warmup_steps=2, num_train_epochs=2,
                               logging_steps=1, learning_rate=3e-3, output_dir=str(tmp_path / "out"),
                               max_length=48, seed=3)
    data = trainer.load_custom_dataset(distill_file=str(labels))
    assert len(data) == 12 and all(g.logits is not None for g in data)
    metrics = trainer.train(data)
    assert metrics["train"]["steps"] == 2 * math.ceil(12 * 4 / 8)  # logit_mse: batches of 8 pairs, 2 epochs
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert (saved["loss"], saved["group_size"], saved["train_file"], saved["max_length"]) == (
        "logit_mse", 1, str(labels), 48)
    losses = _losses(tmp_path / "out")
    assert losses[-1] < losses[0]
    scores, logits = Reranker.load(trainer.model_dir, device="cpu").get_scores(
        "sort a list", ["sort a list", "open a file"], return_logits=True)
    assert len(scores) == len(logits) == 2
    with pytest.raises(ConfigError, match="already holds a trained model"):
        trainer.train(data)


def test_trainer_defaults_knobs_and_hub_loaders(tiny_model, tmp_path, monkeypatch):
    import distilrank.data.hub as hub

    calls = []
    monkeypatch.setattr(hub, "load_inranker_dataset", lambda which, **kw: calls.append((which, kw)) or HAND_GROUPS)
    trainer = SoftLabelTrainer(model=str(tiny_model), output_dir=str(tmp_path / "out"))
    assert trainer.load_custom_dataset() is HAND_GROUPS
    assert trainer.load_msmarco_dataset(max_length=64, max_rows=10, language="portuguese") is HAND_GROUPS
    assert calls == [("beir", {}), ("msmarco", {"max_rows": 10, "language": "portuguese"})]
    assert trainer.max_length == 64
    # `train_file: unicamp-dl/InRanker-msmarco` (the shipped stages config) goes through the same loader
    assert run_module.read_examples("unicamp-dl/InRanker-msmarco") is HAND_GROUPS
    assert calls[-1] == ("unicamp-dl/InRanker-msmarco", {})
    assert trainer.default_loss(HAND_GROUPS) == "kl"  # an encoder student learns the logit difference listwise
    assert trainer.default_loss([soft_group("q", ["a"])]) == "logit_mse"
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        SoftLabelTrainer(model=str(tiny_model), learning_rat=1e-4)
    with pytest.raises(ConfigError, match="batch_size must be > 0"):
        SoftLabelTrainer(batch_size=0)
    with pytest.raises(ConfigError, match="SoftGroup"):
        trainer.train([{"query": "q"}])
