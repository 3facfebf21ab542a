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
