import math

import pytest

from distilrank import ConfigError, Reranker

DOCS = ["return a sorted list", "open a file", "the python data model", "read and write data"]


def test_rank_is_sorted_and_keeps_indices(tiny_model):
    rr = Reranker.load(tiny_model)
    results = rr.rank("sort a list", DOCS)
    scores = rr.score([("sort a list", d) for d in DOCS])
    assert [r.score for r in results] == sorted(scores, reverse=True)
    assert sorted(r.index for r in results) == list(range(len(DOCS)))
    for r in results:
        assert r.text == DOCS[r.index]
        assert r.score == pytest.approx(scores[r.index])


def test_rank_top_k(tiny_model):
    results = Reranker.load(tiny_model).rank("sort a list", DOCS, top_k=2)
    assert len(results) == 2


def test_bad_inputs(tiny_model, tmp_path):
    rr = Reranker.load(tiny_model)
    with pytest.raises(ConfigError, match="query must be a non-empty string"):
        rr.rank("  ", DOCS)
    with pytest.raises(ConfigError, match="pair 1"):
        rr.score([("q", "d"), ("q",)])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="no model folder"):
        Reranker.load(tmp_path / "missing")


def test_get_scores_of_a_cross_encoder(tiny_model):
    rr = Reranker.load(tiny_model)
    assert rr.get_scores("sort a list", DOCS) == rr.score([("sort a list", d) for d in DOCS])
    with pytest.raises(ConfigError, match="only those have true/false logits"):
        rr.get_scores("sort a list", DOCS, return_logits=True)
    with pytest.raises(ConfigError, match="query must be a non-empty string"):
        rr.get_scores("", DOCS)


def test_seq2seq_checkpoint_ranks_by_log_p_true(tmp_path):
    from tiny import make_tiny_t5

    rr = Reranker.load(make_tiny_t5(tmp_path / "t5"), batch_size=2)
    results = rr.rank("sort a list", DOCS, top_k=3)
    scores, logits = rr.get_scores("sort a list", DOCS, return_logits=True)
    assert [r.index for r in results] == sorted(range(len(DOCS)), key=lambda i: -scores[i])[:3]
    assert [r.score for r in results] == sorted(scores, reverse=True)[:3]
    for s, (false, true) in zip(scores, logits):  # log P(true) over the two label tokens
        assert s == pytest.approx(true - max(false, true) - math.log1p(math.exp(-abs(true - false))), abs=1e-5)
