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


def test_batch_size_defaults_by_device(tiny_model):
    """0 (the default everywhere) picks 8 pairs per pass on CPU, 64 on GPU; an explicit size is kept."""
    import torch

    from distilrank.config import EvalConfig, RankConfig, ServeConfig
    from distilrank.data.passages import default_score_batch_size

    assert Reranker.load(tiny_model, device="cpu").batch_size == 8
    assert Reranker.load(tiny_model, device="cpu", batch_size=5).batch_size == 5
    assert default_score_batch_size(torch.device("cuda", 0)) == 64
    assert default_score_batch_size("cuda:1") == 64 and default_score_batch_size("cpu") == 8
    assert EvalConfig().batch_size == RankConfig(model="m", query="q", documents="d").batch_size == 0
    for make in (lambda: EvalConfig(batch_size=-1), lambda: ServeConfig(model="m", batch_size=-1)):
        with pytest.raises(ConfigError, match="batch_size must be >= 0"):
            make()


def test_scores_do_not_depend_on_the_batch_size(tiny_model):
    pairs = [("sort a list", d * (i + 1)) for i, d in enumerate(DOCS * 5)]  # 20 pairs of varied length
    auto = Reranker.load(tiny_model, device="cpu").score(pairs)
    one = Reranker.load(tiny_model, device="cpu", batch_size=1).score(pairs)
    assert auto == pytest.approx(one, abs=1e-5)
