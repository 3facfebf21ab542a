import ir_measures
import pytest

from distilrank.data.readers import read_trec_folder
from distilrank.data.records import Passage, Query, RetrievalDataset
from distilrank.evaluation.ranking import evaluate_reranking, rerank, score_run


@pytest.fixture
def small():
    corpus = {f"d{i}": Passage(f"d{i}", f"text {i}") for i in range(6)}
    queries = {"q1": Query("q1", "one"), "q2": Query("q2", "two"), "q3": Query("q3", "three")}
    qrels = {"q1": {"d1": 2, "d2": 1}, "q2": {"d4": 1}, "q3": {"d0": 0}}
    return RetrievalDataset(corpus, queries, qrels, name="small")


def test_score_run_equals_ir_measures_directly(small):
    run = {"q1": [("d0", 3.0), ("d2", 2.0), ("d1", 1.0)], "q2": [("d3", 2.0), ("d4", 1.5)]}
    ours = score_run(small.qrels, run, k=3)
    qrels = [ir_measures.Qrel(q, d, g) for q, docs in small.qrels.items() for d, g in docs.items() if q != "q3"]
    docs = [ir_measures.ScoredDoc(q, d, s) for q, ds in run.items() for d, s in ds]
    ref = ir_measures.calc_aggregate([ir_measures.nDCG @ 10, ir_measures.RR @ 10, ir_measures.AP, ir_measures.R @ 3], qrels, docs)
    assert ours["nDCG@10"] == pytest.approx(ref[ir_measures.nDCG @ 10])
    assert ours["MRR@10"] == pytest.approx(ref[ir_measures.RR @ 10]) == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert ours["MAP"] == pytest.approx(ref[ir_measures.AP])
    assert ours["R@3"] == pytest.approx(ref[ir_measures.R @ 3])


def test_unretrieved_query_counts_as_zero(small):
    run = {"q1": [("d1", 1.0)]}
    assert score_run(small.qrels, run, k=10)["MRR@10"] == pytest.approx(0.5)


def test_perfect_reranker_reaches_the_recall_cap_and_keeps_the_tail(small):
    run = {"q1": [("d0", 3.0), ("d3", 2.5), ("d2", 2.0), ("d1", 1.0)], "q2": [("d3", 2.0), ("d5", 1.0), ("d4", 0.5)]}
    oracle = lambda pairs: [float(small.qrels.get(next(q for q, v in small.queries.items() if v.text == qt), {}).get(
        next(d for d, p in small.corpus.items() if p.text == dt), 0)) for qt, dt in pairs]
    report = evaluate_reranking(small, run, oracle, top_k=3)
    assert report.recall_cap == pytest.approx((0.5 + 1.0) / 2)  # q1: d2 of {d1, d2} in top 3; q2: d4
    assert report.first_stage["MRR@10"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert report.reranked["MRR@10"] == pytest.approx(1.0)  # each query's relevant candidate moved to the top
    reranked = rerank(small, {"q1": run["q1"]}, oracle, top_k=3)
    assert [d for d, _ in reranked["q1"]][0] == "d2"
    assert [d for d, _ in reranked["q1"]][-1] == "d1"  # below the cut: order kept, placed last


def test_fusion_interpolates_zscores(small):
    run = {"q1": [("d0", 3.0), ("d1", 2.0), ("d2", 1.0)]}
    flat = lambda pairs: [0.0 for _ in pairs]
    assert [d for d, _ in rerank(small, run, flat, top_k=3, fusion_weight=0.5)["q1"]] == ["d0", "d1", "d2"]


@pytest.mark.shared_data
def test_trec_dl_2019_bm25_matches_the_official_figure(shared_data):
    dataset, run = read_trec_folder(shared_data / "trec-dl-2019")
    report = evaluate_reranking(dataset, run, None, top_k=100)
    assert report.queries == 43
    assert report.first_stage["nDCG@10"] == pytest.approx(0.5058, abs=5e-4)
