"""Causal-LM (Qwen3-Reranker style) teachers: one input builder for labelling and scoring, bad settings,
and teacher ensembles in ``distilrank label``. Tiny random Qwen3/Llama models built at test time."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tiny_llm import make_tiny_causal_lm

from distilrank import ConfigError, Reranker
from distilrank.config import LabelConfig
from distilrank.labeling import run_label
from distilrank.labeling_llm import zscore
from distilrank.models.causal import DEFAULT_TEMPLATE, CausalReranker, split_template

PAIRS = [("sort a list", "sort the list in python"), ("python dict key", "open a file and read the data"),
         ("the error", "a class method")]


@pytest.fixture(scope="module", params=["qwen3", "llama"])
def tiny_llm(request, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_causal_lm(tmp_path_factory.mktemp(f"tiny-{request.param}"), request.param)


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny-qwen3"), "qwen3", seed=1)


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_default_template_is_qwen3_rerankers() -> None:
    head, middle, tail = split_template(DEFAULT_TEMPLATE)
    assert head.startswith("<|im_start|>system\nJudge whether the Document meets the requirements")
    assert head.endswith("<Instruct>: Given a web search query, retrieve relevant passages that answer the query"
                         "\n<Query>: ")
    assert middle == "\n<Document>: "
    assert tail == "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def test_input_is_the_tokenized_prompt_and_long_documents_keep_the_prompt_end(tiny_llm) -> None:
    model = CausalReranker.from_pretrained(str(tiny_llm))
    tok = model.tokenizer
    ids = model.encode_pairs(["sort a list"], ["sort the list"])[0]
    assert ids == tok(DEFAULT_TEMPLATE.format(query="sort a list", document="sort the list"))["input_ids"]
    short = model.fixed_tokens() + 8
    long_ids = model.encode_pairs(["sort a list"], ["the file " * 200], max_length=short)[0]
    tail = tok("<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n", add_special_tokens=False)["input_ids"]
    assert len(long_ids) == short and long_ids[-len(tail):] == tail
    assert "sort a list" in tok.decode(long_ids)
    huge_query = model.encode_pairs(["sort " * 300], ["the file"], max_length=short)[0]
    assert len(huge_query) == short and huge_query[-len(tail):] == tail


def test_scores_are_the_answer_logits_at_the_last_position_batch_invariant(tiny_llm) -> None:
    model = CausalReranker.from_pretrained(str(tiny_llm)).eval()
    logits = model.score_logits(PAIRS, batch_size=3)
    alone = [model.score_logits([p], batch_size=1)[0] for p in PAIRS]
    assert torch.allclose(torch.tensor(logits), torch.tensor(alone), atol=1e-4)
    ids = torch.tensor([model.encode_pairs([PAIRS[0][0]], [PAIRS[0][1]])[0]])
    with torch.no_grad():
        last = model.model(input_ids=ids).logits[0, -1]
    yes, no = model.tokenizer.convert_tokens_to_ids(["yes", "no"])
    assert logits[0] == pytest.approx((last[no].item(), last[yes].item()), abs=1e-4)


def test_labelling_and_reranker_load_share_the_input(tiny_llm, tmp_path) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"query": q, "passage": d, "label": 1}) + "\n" for q, d in PAIRS))
    out = tmp_path / "labels.jsonl"
    run_label(LabelConfig(teacher=str(tiny_llm), data=str(data), output=str(out), batch_size=2))
    rows = _rows(out)
    assert [set(r) for r in rows] == [{"query", "contents", "true_logit", "false_logit"}] * 3
    reranker = Reranker.load(str(tiny_llm), device="cpu")
    assert isinstance(reranker.model, CausalReranker)
    scored = reranker.model.score_logits(PAIRS)
    for row, (false, true) in zip(rows, scored):
        assert (row["false_logit"], row["true_logit"]) == pytest.approx((false, true), abs=1e-4)
    scores = reranker.score(PAIRS)
    expected = [t - math.log(math.exp(f) + math.exp(t)) for f, t in scored]  # log P(yes) over {no, yes}
    assert scores == pytest.approx(expected, abs=1e-4)


def test_a_custom_template_and_tokens_are_used_and_saved(tiny_qwen, tmp_path) -> None:
    template = "Query: {query} Document: {document} relevant answer yes or no:"
    model = CausalReranker.from_pretrained(str(tiny_qwen), template=template, true_token="relevant",
                                           false_token="answer")
    assert model.encode_pairs(["a"], ["b"])[0] == model.tokenizer(template.format(query="a", document="b"))[
        "input_ids"]
    model.save_pretrained(tmp_path / "saved")
    again = Reranker.load(str(tmp_path / "saved"), device="cpu").model
    assert again.settings == model.settings
    assert again.encode_pairs(["a"], ["b"]) == model.encode_pairs(["a"], ["b"])


@pytest.mark.parametrize("settings, message", [
    ({"template": "Q: {query} relevant?"}, r"template must hold \{query\} and then \{document\}"),
    ({"template": "{document} {query}"}, r"template must hold \{query\} and then \{document\}"),
    ({"template": "Q: {query} D: {document} {extra}"}, "nothing else in braces"),
    ({"true_token": "maybe"}, r"true_token='maybe' is split into 5 tokens"),
    ({"false_token": "€"}, r"false_token='€' is not in the vocabulary"),
    ({"max_length": 4096}, r"max_length=4096 is larger than the context of teacher .* \(256 tokens\)"),
])
def test_bad_causal_settings_are_one_clear_error_and_write_nothing(settings, message, tiny_qwen, groups_file,
                                                                   tmp_path) -> None:
    out = tmp_path / "labels.jsonl"
    with pytest.raises(ConfigError, match=message):
        run_label(LabelConfig(teacher=str(tiny_qwen), data=str(groups_file), output=str(out), **settings))
    assert list(tmp_path.iterdir()) == [groups_file]


def test_causal_settings_on_a_cross_encoder_teacher_are_refused(tiny_model, groups_file, tmp_path) -> None:
    with pytest.raises(ConfigError, match="template apply to causal-LM"):
        run_label(LabelConfig(teacher=str(tiny_model), data=str(groups_file), output=str(tmp_path / "l.jsonl"),
                              template="{query} {document}"))


def test_a_folder_of_unknown_kind_is_refused(groups_file, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        run_label(LabelConfig(teacher=str(tmp_path / "empty"), data=str(groups_file), output=str(tmp_path / "x")))


# ----------------------------------------------------------------- ensembles


def test_ensemble_averages_per_query_zscores_of_each_teacher(tiny_model, tiny_qwen, groups_file, tmp_path) -> None:
    single = {}
    for name, teacher in (("bert", tiny_model), ("qwen", tiny_qwen)):
        single[name] = _rows(Path(run_label(LabelConfig(teacher=str(teacher), data=str(groups_file), max_queries=3,
                                                        output=str(tmp_path / f"{name}.jsonl")))["output"]))
    out = tmp_path / "ensemble.jsonl"
    summary = run_label(LabelConfig(teacher=f"{tiny_model},{tiny_qwen}", data=str(groups_file), max_queries=3,
                                    output=str(out)))
    rows = _rows(out)
    assert summary["pairs"] == len(rows) == len(single["bert"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bert.jsonl", "ensemble.jsonl", "groups.jsonl",
                                                          "qwen.jsonl"]  # per-teacher files removed
    bert = [r["score"] for r in single["bert"]]
    qwen = [r["true_logit"] - r["false_logit"] for r in single["qwen"]]
    start = 0
    for q in dict.fromkeys(r["query"] for r in rows):
        n = sum(r["query"] == q for r in rows)
        expected = [(a + b) / 2 for a, b in zip(zscore(bert[start:start + n]), zscore(qwen[start:start + n]))]
        assert [r["score"] for r in rows[start:start + n]] == pytest.approx(expected, abs=1e-5)
        start += n
    assert rows[0]["teacher_scores"] == pytest.approx({str(tiny_model): bert[0], str(tiny_qwen): qwen[0]}, abs=1e-5)
    assert set(rows[0]) == {"query", "contents", "score", "teacher_scores"}


def test_ensemble_rows_train_a_student(tiny_model, tmp_path) -> None:
    from distilrank.data.readers import read_soft_labels

    rows = [{"query": "q", "contents": f"d{i}", "score": s, "teacher_scores": {"a": s, "b": -s}}
            for i, s in enumerate([1.0, 0.0])]
    path = tmp_path / "e.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_soft_labels(path)[0].scores == (1.0, 0.0)


def test_an_ensemble_naming_a_teacher_twice_is_an_error(tiny_model, groups_file, tmp_path) -> None:
    with pytest.raises(ConfigError, match="names a teacher twice"):
        run_label(LabelConfig(teacher=f"{tiny_model},{tiny_model}", data=str(groups_file),
                              output=str(tmp_path / "x.jsonl")))
