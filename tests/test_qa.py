"""Extractive QA: SQuAD reading, windows, post-processing, EM/F1, losses, training, answer()."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import WORDS, jsonl, make_tiny_bert

from distilrank import ConfigError, DataError, TrainConfig
from distilrank.data.qa import (
    QAExample,
    answer_positions,
    build_windows,
    encode_windows,
    read_squad,
)
from distilrank.evaluation.qa import (
    best_answer,
    exact_match_score,
    f1_score,
    normalize_answer,
    squad_metrics,
)
from distilrank.losses.qa import span_ce, span_kd_kl
from distilrank.models.heads import HeadOptions, QuestionAnswerer
from distilrank.training.run import run_training


def toy_squad(n: int = 24, seed: int = 0, words_per_context: int = 40) -> dict:
    """SQuAD-format articles: the question names a word, the answer is the word after it."""
    rng = random.Random(seed)
    paragraphs = []
    for i in range(n):
        ctx_words = [rng.choice(WORDS) for _ in range(words_per_context)]
        k = rng.randrange(1, words_per_context - 2)
        context = " ".join(ctx_words)
        start = len(" ".join(ctx_words[:k + 1])) + 1
        answer = ctx_words[k + 1]
        paragraphs.append({"context": context, "qas": [{"id": f"q{seed}-{i}", "question": f"what after {ctx_words[k]}",
                                                        "answers": [{"text": answer, "answer_start": start}]}]})
    return {"version": "1.1", "data": [{"title": "toy", "paragraphs": paragraphs}]}


def _write(path: Path, obj: dict) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def test_official_normalisation_and_scores():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("an apple and a pear") == "apple and pear"
    assert exact_match_score("the Eiffel Tower", "Eiffel Tower.") == 1.0
    assert f1_score("in Paris France", "Paris") == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
    assert f1_score("", "Paris") == 0.0
    m = squad_metrics({"a": "Paris", "b": "London"}, {"a": ["Paris", "paris, France"], "b": ["Rome"], "c": ["x"]})
    assert m == {"exact_match": pytest.approx(100 / 3), "f1": pytest.approx(100 / 3)}


def test_reads_squad_json_flat_jsonl_and_counts_unanswerable(tmp_path):
    squad = toy_squad(3)
    squad["data"][0]["paragraphs"][0]["qas"].append({"id": "none", "question": "what", "answers": []})
    data = read_squad(str(_write(tmp_path / "s.json", squad)))
    assert len(data.examples) == 3 and data.unanswerable == 1
    e = data.examples[0]
    text, start = e.answers[0]
    assert e.context[start:start + len(text)] == text
    rows = [{"id": x.id, "question": x.question, "context": x.context,
             "answers": {"text": [x.answers[0][0]], "answer_start": [x.answers[0][1]]}} for x in data.examples]
    assert read_squad(str(jsonl(tmp_path / "flat.jsonl", rows))).examples == data.examples
    folder = tmp_path / "hub-squad"
    jsonl(folder / "train.jsonl", rows)
    jsonl(folder / "validation.jsonl", rows[:2])
    assert read_squad(str(folder), split="dev").examples == data.examples[:2]  # through datasets.load_dataset


def test_mismatched_answer_offset_is_a_located_error(tmp_path):
    squad = toy_squad(2)
    squad["data"][0]["paragraphs"][1]["qas"][0]["answers"][0]["answer_start"] += 1
    with pytest.raises(DataError, match=r"data\[0\]\.paragraphs\[1\]\.qas\[0\]\.answers.*does not match the context"):
        read_squad(str(_write(tmp_path / "bad.json", squad)))
    squad = toy_squad(1)
    squad["data"][0]["paragraphs"][0]["qas"][0]["question"] = " "
    with pytest.raises(DataError, match="question.*is empty"):
        read_squad(str(_write(tmp_path / "empty.json", squad)))


def test_windows_cover_long_contexts_and_map_back_to_the_answer(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    examples = read_squad_examples(n=6, words=60)
    windows = build_windows(tok, examples, max_length=24, doc_stride=6)
    assert len(windows.input_ids) > 3 * len(examples)  # long contexts became several windows each
    encoded = encode_windows(tok, [e.question for e in examples], [e.context for e in examples], 24, 6)
    found = 0
    for w, owner in enumerate(encoded["overflow_to_sample_mapping"]):
        text, start = examples[owner].answers[0]
        span = answer_positions(encoded, w, start, start + len(text))
        if span:
            offsets = encoded["offset_mapping"][w]
            assert examples[owner].context[offsets[span[0]][0]:offsets[span[1]][1]] == text
            found += 1
    assert found >= len(examples) and sum(s > 0 for s in windows.starts) == found


def test_too_long_questions_and_answers_beyond_windows_are_counted(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    long_q = QAExample("q1", " ".join(["data"] * 30), "the file", (("file", 4),))
    long_a = QAExample("q2", "what", "the " + " ".join(["value"] * 30), ((" ".join(["value"] * 30), 4),))
    windows = build_windows(tok, [long_q, long_a], max_length=20, doc_stride=4)
    assert windows.skipped == {"question_too_long": 1, "answer_beyond_windows": 1}
    assert windows.input_ids == []


def read_squad_examples(n: int, words: int) -> list[QAExample]:
    squad = toy_squad(n, words_per_context=words)
    return [QAExample(q["id"], q["question"], p["context"], ((q["answers"][0]["text"], q["answers"][0]["answer_start"]),))
            for p in squad["data"][0]["paragraphs"] for q in p["qas"]]


def test_best_answer_respects_context_length_and_windows():
    context = "alpha beta gamma delta"
    offsets = [(0, 0), (0, 5), (6, 10), (11, 16), (17, 22), (0, 0)]
    seq = [None, 1, 1, 1, 1, None]
    start = np.array([9.0, 1.0, 5.0, 0.0, 0.0, 0.0])  # [CLS] is never an answer
    end = np.array([9.0, 0.0, 0.0, 0.5, 4.0, 0.0])
    assert best_answer(context, [(start, end, offsets, seq)], 20, 30).text == "beta gamma delta"
    short = best_answer(context, [(start, end, offsets, seq)], 20, 2)  # at most 2 tokens
    assert short.text == "beta gamma" and short.score == pytest.approx(5.5)
    other = (np.array([0.0, 20.0, 0, 0, 0, 0]), np.array([0.0, 20.0, 0, 0, 0, 0]), offsets, seq)
    best = best_answer(context, [(start, end, offsets, seq), other], 20, 30)
    assert (best.text, best.start, best.end, best.score) == ("alpha", 0, 5, 40.0)


def test_span_losses_equal_hand_computed_values():
    assert span_ce(torch.zeros(1, 4), torch.zeros(1, 4), torch.tensor([1]), torch.tensor([2])).item() == \
        pytest.approx(math.log(4))
    s = torch.tensor([[0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0]])
    p, q = torch.softmax(t / 2, -1), torch.softmax(s / 2, -1)
    kl = (p * (p.log() - q.log())).sum().item() * 4
    assert span_kd_kl(s, s, t, t, temperature=2.0).item() == pytest.approx(kl, rel=1e-5)
    assert span_kd_kl(s, s, s, s).item() == pytest.approx(0.0, abs=1e-6)
    # a padding position disagreeing between teacher and student is ignored under the mask
    s3, t3 = torch.tensor([[0.0, 1.0, 5.0]]), torch.tensor([[1.0, 0.0, -5.0]])
    masked = span_kd_kl(s3, s3, t3, t3, 2.0, mask=torch.tensor([[1, 1, 0]]))
    assert masked.item() == pytest.approx(kl, rel=1e-4)


def _qa_cfg(tiny_model, tmp_path, name, **kw):
    train = _write(tmp_path / "train.json", toy_squad(24))
    dev = _write(tmp_path / "dev.json", toy_squad(8, seed=1))
    base = dict(train_file=str(train), model=str(tiny_model), output_dir=str(tmp_path / name), task="qa",
                max_steps=30, batch_size=8, max_length=48, doc_stride=12, learning_rate=3e-3, eval_data=str(dev),
                eval_steps=15, log_steps=5)
    base.update(kw)
    return TrainConfig(**base)


def test_qa_training_lowers_the_loss_and_answer_api_returns_spans(tiny_model, tmp_path):
    metrics = run_training(_qa_cfg(tiny_model, tmp_path, "run"))
    out = tmp_path / "run"
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0]
    assert {"exact_match", "f1", "loss", "train_f1"} <= set(metrics["eval"])
    assert metrics["data"]["train_windows"] > 24 and (out / "curves.png").exists()
    qa = QuestionAnswerer.from_pretrained(str(out / "model"))
    assert (qa.doc_stride, qa.max_length) == (12, 48)
    context = " ".join(WORDS[:50])
    a = qa.answer("what after the", context)
    assert a.text and context[a.start:a.end] == a.text and math.isfinite(a.score)
    again = QuestionAnswerer.from_pretrained(str(out / "model"))
    assert again.answer("what after the", context) == a
    with pytest.raises(ConfigError, match="question is too long"):
        qa.answer(" ".join(["data"] * 60), context)


def test_distillation_from_a_teacher_logs_both_terms(tiny_model, tmp_path):
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_model, teacher)
    metrics = run_training(_qa_cfg(tiny_model, tmp_path, "kd", teacher=str(teacher), alpha_kd=0.7, temperature=2.0,
                                   max_steps=4, eval_data="", eval_steps=0))
    rows = [json.loads(x) for x in (tmp_path / "kd" / "metrics.jsonl").read_text().splitlines()]
    assert all("loss_kd" in r and "loss_ce" in r for r in rows if "loss" in r)
    r = rows[-1]
    assert r["loss"] == pytest.approx(0.7 * r["loss_kd"] + 0.3 * r["loss_ce"], rel=1e-4)
    assert metrics["train"]["steps"] == 4


def test_teacher_with_another_vocabulary_is_refused(tiny_model, tmp_path):
    other = make_tiny_bert(tmp_path / "other")
    vocab = json.loads((other / "tokenizer.json").read_text())
    vocab["model"]["vocab"]["zzz"] = len(vocab["model"]["vocab"])
    (other / "tokenizer.json").write_text(json.dumps(vocab))
    with pytest.raises(ConfigError, match="another vocabulary"):
        run_training(_qa_cfg(tiny_model, tmp_path, "bad", teacher=str(other), max_steps=1, eval_data="", eval_steps=0))


def test_qa_model_reads_long_contexts_in_windows(tiny_model):
    qa = QuestionAnswerer.from_pretrained(str(tiny_model), HeadOptions(max_length=24))
    qa.doc_stride = 6
    context = " ".join(WORDS * 2)
    encoded = qa.encode(["what"], [context])
    assert len(encoded["input_ids"]) > 5
    a = qa.answer("what", context)
    assert context[a.start:a.end] == a.text


@pytest.mark.shared_data
def test_reads_real_squad(shared_data: Path):
    data = read_squad(str(shared_data / "squad-v1.1" / "train-v1.1-first44articles.json"))
    assert len(data.examples) == 11877 and data.unanswerable == 0


def test_shipped_squad_config_loads():
    from distilrank.config import load_config

    cfg = load_config(TrainConfig, Path(__file__).resolve().parents[1] / "configs" / "squad.yaml")
    assert (cfg.task, cfg.max_length, cfg.doc_stride, cfg.train_file) == ("qa", 384, 128, "squad")
