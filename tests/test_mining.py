import json
import random

import pytest
from conftest import toy_groups

from distilrank.config import MineConfig
from distilrank.data.readers import read_beir, read_training_file
from distilrank.data.records import Passage, Query, RetrievalDataset
from distilrank.errors import ConfigError, DataError
from distilrank.mining.negatives import (
    SHORT_MARGIN,
    SHORT_RANGE,
    SKIP_MISSING,
    SKIP_NO_POSITIVE,
    mine_groups,
    mine_to_file,
    select_negatives,
)

RANKED = [(f"d{i}", 10.0 - i * 0.5) for i in range(1, 21)]  # d1: 9.5, d2: 9.0, ... d20: 0.0


def test_select_negatives_respects_rank_range_and_positives():
    cfg = MineConfig(num_negatives=3, rank_min=2, rank_max=6, sampling="top")
    # positives d1 and d3 removed first: pool = d2 d4 d5 d6 d7 d8 ..., ranks 2..6 -> d4..d8
    assert select_negatives(RANKED, {"d1", "d3"}, cfg, random.Random(0)) == (["d4", "d5", "d6"], "")
    rand = MineConfig(num_negatives=3, rank_min=2, rank_max=6, sampling="random")
    got, reason = select_negatives(RANKED, {"d1", "d3"}, rand, random.Random(0))
    assert len(got) == 3 and set(got) <= {"d4", "d5", "d6", "d7", "d8"} and reason == ""
    narrow = MineConfig(num_negatives=3, rank_min=1, rank_max=2, sampling="top")
    assert select_negatives(RANKED, set(), narrow, random.Random(0)) == (["d1", "d2"], SHORT_RANGE)


def test_margins_against_the_positive_score():
    # positive scored 8.0: absolute margin 1.5 keeps scores <= 6.5 (d7 onwards)
    cfg = MineConfig(num_negatives=3, rank_max=20, sampling="top", absolute_margin=1.5)
    assert select_negatives(RANKED, {"d0"}, cfg, random.Random(0), positive_score=8.0)[0] == ["d7", "d8", "d9"]
    # relative margin 0.5 keeps scores <= 4.0 (d12 onwards)
    rel = MineConfig(num_negatives=2, rank_max=20, sampling="top", relative_margin=0.5)
    assert select_negatives(RANKED, set(), rel, random.Random(0), positive_score=8.0)[0] == ["d12", "d13"]
    # a range whose documents all score too close to the positive: fewer negatives, for the margin's sake
    tight = MineConfig(num_negatives=3, rank_max=5, sampling="top", absolute_margin=0.0)
    assert select_negatives(RANKED, set(), tight, random.Random(0), positive_score=7.9) == (["d5"], SHORT_MARGIN)
    with pytest.raises(ConfigError, match="relative_margin"):
        MineConfig(relative_margin=1.5)


def test_mined_groups_are_valid_training_data_and_deterministic(demo_beir, tmp_path):
    ds = read_beir(demo_beir, "dev")
    cfg = MineConfig(data=str(demo_beir), split="dev", output=str(tmp_path / "g.jsonl"), num_negatives=4, rank_max=20)
    summary = mine_to_file(ds, cfg)
    rows = [json.loads(x) for x in (tmp_path / "g.jsonl").read_text().splitlines()]
    assert summary.groups == len(rows) > 0
    for r in rows:
        assert r["positive_id"] not in r["negative_ids"]
        assert len(r["negatives"]) <= 4
        assert ds.qrels[r["query_id"]][r["positive_id"]] > 0
    assert rows == mine_groups(ds, cfg)[0]
    groups = read_training_file(tmp_path / "g.jsonl")
    assert len(groups) == len(rows)
    assert sum(summary.short.values()) == sum(1 for r in rows if len(r["negatives"]) < 4)


def toy_dataset() -> RetrievalDataset:
    texts = ["sort a list in python", "sort the items of a list", "read a file", "write a file",
             "python string value", "open the file and read it", "dict key value", "list of items"]
    corpus = {f"d{i}": Passage(f"d{i}", t) for i, t in enumerate(texts)}
    queries = {"q1": Query("q1", "sort list"), "q2": Query("q2", "read file"), "q3": Query("q3", "string")}
    # q2's second positive is not in the corpus; q3 is judged but has no relevant document
    qrels = {"q1": {"d0": 1, "d1": 0}, "q2": {"d2": 2, "gone": 1}, "q3": {"d4": 0}}
    return RetrievalDataset(corpus, queries, qrels, name="toy")


def test_bad_input_is_counted_or_refused():
    ds = toy_dataset()
    rows, summary = mine_groups(ds, MineConfig(num_negatives=2, rank_max=5, sampling="top"))
    assert summary.queries == 2 and summary.skipped[SKIP_NO_POSITIVE] == 1 and summary.skipped[SKIP_MISSING] == 1
    assert [(r["query_id"], r["positive_id"]) for r in rows] == [("q1", "d0"), ("q2", "d2")]
    assert rows[0]["negative_ids"][0] == "d1"  # a judged non-relevant document is a fine negative
    ds.qrels["q9"] = {"d0": 1}
    with pytest.raises(DataError, match="not among the queries"):
        mine_groups(ds, MineConfig())


def test_duplicate_corpus_ids_are_refused(tmp_path):
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    rows = [{"_id": "d1", "text": "a"}, {"_id": "d1", "text": "b"}]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "a"}) + "\n")
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    with pytest.raises(DataError, match="d1"):
        read_beir(folder, "train")


def test_dense_mining_with_margin_and_rescoring(tiny_model):
    ds = toy_dataset()
    dense = MineConfig(retriever="dense", model=str(tiny_model), num_negatives=3, rank_max=6, sampling="top")
    rows, summary = mine_groups(ds, dense)
    assert summary.groups == 2 and all(len(r["negatives"]) == 3 for r in rows)
    # a margin larger than any cosine gap (cosines are <= 1) leaves no negative: counted, not written
    rows, summary = mine_groups(ds, MineConfig(retriever="dense", model=str(tiny_model), absolute_margin=3.0))
    assert rows == [] and sum(summary.skipped.values()) == 1 + 1 + 2

    from distilrank.inference.reranker import Reranker

    rescored, _ = mine_groups(ds, MineConfig(num_negatives=3, rank_max=6, sampling="top",
                                             rescore_model=str(tiny_model)))
    reranker = Reranker.load(str(tiny_model))
    for r in rescored:
        scores = reranker.score([(r["query"], t) for t in r["negatives"]])
        assert scores == sorted(scores, reverse=True)  # top sampling follows the cross-encoder's order


def test_cli_mine_static(demo_beir, tiny_model, tmp_path, capsys):
    from distilrank.cli import main
    from distilrank.mining.retrievers import distill_static

    static = tmp_path / "m2v"
    distill_static(str(tiny_model), static, pca_dims=16)
    out = tmp_path / "g.jsonl"
    args = ["mine", f"data={demo_beir}", "split=dev", f"output={out}", "retriever=static", f"model={static}",
            "max_queries=20", f"index_path={tmp_path / 'idx'}"]
    assert main(args) == 0
    assert "groups for 20 queries" in capsys.readouterr().out
    assert len(read_training_file(out)) > 0 and (tmp_path / "idx" / "meta.json").is_file()
    assert main(["mine", "retriever=bm25", "model=x"]) == 2


def test_shipped_mining_and_bi_encoder_configs_load():
    from pathlib import Path

    from distilrank.config import TrainConfig, load_config

    root = Path(__file__).resolve().parents[1] / "configs"
    mine = load_config(MineConfig, root / "mine-static.yaml")
    assert (mine.retriever, mine.num_negatives, mine.relative_margin) == ("static", 6, 0.05)
    bi = load_config(TrainConfig, root / "bi-encoder-triplet.yaml", ["train_file=x.jsonl"])
    assert (bi.loss, bi.distance, bi.margin) == ("triplet", "euclidean", 5.0)


def test_query_chunks_do_not_change_the_groups(demo_beir, monkeypatch):
    import distilrank.mining.negatives as negatives

    ds = read_beir(demo_beir, "dev")
    cfg = MineConfig(num_negatives=4, rank_max=20, max_queries=30)
    whole = mine_groups(ds, cfg)[0]
    monkeypatch.setattr(negatives, "MINE_QUERIES", 7)
    assert mine_groups(ds, cfg)[0] == whole


def test_max_positives_keeps_the_highest_grades():
    """A graded query gives at most ``max_positives`` groups, the best-graded positives first."""
    ds = toy_dataset()
    ds.qrels["q1"] = {"d0": 1, "d1": 2, "d7": 2, "d5": 1}
    ds.queries["q1"] = Query("q1", "sort a list of items, read the file, python string")  # BM25 finds every text
    cfg = dict(num_negatives=1, rank_max=8, sampling="top")
    rows, _ = mine_groups(ds, MineConfig(**cfg))
    assert sorted(r["positive_id"] for r in rows if r["query_id"] == "q1") == ["d0", "d1", "d5", "d7"]
    for seed in (1, 2, 3):
        rows, _ = mine_groups(ds, MineConfig(**cfg, max_positives=2, seed=seed))
        assert sorted(r["positive_id"] for r in rows if r["query_id"] == "q1") == ["d1", "d7"]
        one = {r["positive_id"] for r in mine_groups(ds, MineConfig(**cfg, max_positives=1, seed=seed))[0]
               if r["query_id"] == "q1"}
        assert one <= {"d1", "d7"} and len(one) == 1
        negatives = {d for r in rows if r["query_id"] == "q1" for d in r["negative_ids"]}
        assert not negatives & {"d0", "d1", "d5", "d7"}  # an unused positive is never a negative
    with pytest.raises(ConfigError, match="max_positives"):
        MineConfig(max_positives=-1)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_given_negatives_of_a_groups_file_are_repicked_in_file_order(tmp_path):
    """retriever=given: a query's rows merge, its candidates are its negatives in file order, positives excluded."""
    from distilrank.cli import main

    rows = [{"query": "q a", "positive": "p1", "negatives": ["n1", "p2", "n2", "n3"]},
            {"query": "q b", "positive": "p3", "negatives": ["n4"]},
            {"query": "q a", "positive": "p2", "negatives": ["n2", "n5"]}]  # q a's second positive; n2 repeats
    src, out = _write_jsonl(tmp_path / "g.jsonl", rows), tmp_path / "out.jsonl"
    assert main(["mine", f"data={src}", "retriever=given", "num_negatives=3", "sampling=top", f"output={out}"]) == 0
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(set(r) == {"query", "positive", "negatives"} for r in written)  # no made-up ids
    got = [(r["query"], r["positive"], r["negatives"]) for r in written]
    assert got == [("q a", "p1", ["n1", "n2", "n3"]), ("q a", "p2", ["n1", "n2", "n3"]), ("q b", "p3", ["n4"])]
    rank_range = MineConfig(data=str(src), retriever="given", num_negatives=2, rank_min=3, rank_max=4, sampling="top")
    from distilrank.mining.run import _groups_input

    ds, run = _groups_input(rank_range)
    assert [r["negatives"] for r in mine_groups(ds, rank_range, run)[0]][0] == ["n3", "n5"]  # ranks 3-4, p2 removed


def test_given_negatives_rescored_by_a_model_with_a_margin(tiny_model, tmp_path):
    """Rescored by a model: a negative scoring within ``absolute_margin`` of its positive is dropped (false
    negative guard), the rest come hardest first; the expected groups are worked out from the model's scores."""
    from distilrank.cli import main
    from distilrank.inference.reranker import Reranker

    rows = toy_groups(n=6, negatives=6, seed=3)
    src, out = _write_jsonl(tmp_path / "g.jsonl", rows), tmp_path / "out.jsonl"
    reranker = Reranker.load(str(tiny_model))
    expected = []
    for r in rows:
        pos, *negs = reranker.score([(r["query"], t) for t in [r["positive"], *r["negatives"]]])
        ranked = sorted(zip(r["negatives"], negs), key=lambda t: -t[1])
        expected.append([t for t, s in ranked if s <= pos - 0.01][:3])
    assert sum(len(e) for e in expected) < 3 * len(rows)  # the margin drops some: the check can fail
    args = ["mine", f"data={src}", "retriever=given", f"rescore_model={tiny_model}", "absolute_margin=0.01",
            "num_negatives=3", "sampling=top", f"output={out}"]
    assert main(args) == 0
    got = {r["query"]: r["negatives"] for r in map(json.loads, out.read_text().splitlines())}
    assert got == {r["query"]: e for r, e in zip(rows, expected) if e}


def test_given_retriever_bad_input(demo_beir, tmp_path, capsys):
    from distilrank.cli import main

    src = _write_jsonl(tmp_path / "g.jsonl", toy_groups(n=2))
    assert main(["mine", f"data={demo_beir}", "retriever=given"]) == 2  # a dataset has no given negatives
    assert main(["mine", f"data={src}", "retriever=bm25"]) == 2  # a groups file has no corpus to search
    assert "retriever=given re-picks" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="set rescore_model"):
        MineConfig(retriever="given", relative_margin=0.05)
    soft = _write_jsonl(tmp_path / "soft.jsonl", [{"query": "q", "contents": "d", "score": 1.0}])
    assert main(["mine", f"data={soft}", "retriever=given", f"output={tmp_path / 'o.jsonl'}"]) == 2
    assert "not groups" in capsys.readouterr().err and not (tmp_path / "o.jsonl").exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(toy_groups(n=1)[0]) + '\n{"query": "q", "positive": "p"\n', encoding="utf-8")
    assert main(["mine", f"data={bad}", "retriever=given", f"output={tmp_path / 'o.jsonl'}"]) == 2
    assert f"{bad}:2: malformed JSON" in capsys.readouterr().err and not (tmp_path / "o.jsonl").exists()


def test_bi_encoder_rescoring_encodes_each_text_once(tiny_model, tmp_path, monkeypatch):
    """A bi-encoder rescores every query's candidates in one call (each distinct text encoded once), with the same
    scores as the cross-encoder-sized chunks would give: documents shared by queries are not re-encoded."""
    import distilrank.mining.negatives as negatives
    from distilrank.inference.reranker import Reranker
    from distilrank.models.bi_encoder import BiEncoder

    folder = tmp_path / "bi"
    BiEncoder.from_pretrained(str(tiny_model)).save_pretrained(folder)
    reranker = Reranker.load(str(folder))
    ds = toy_dataset()
    run = {"q1": [(f"d{i}", 0.0) for i in range(6)], "q2": [(f"d{i}", 0.0) for i in range(2, 8)]}
    positives = {"q1": {"d0"}, "q2": {"d2"}}
    encoded: list[str] = []
    encode = BiEncoder.encode
    monkeypatch.setattr(BiEncoder, "encode", lambda self, texts, **kw: (encoded.extend(texts), encode(self, texts, **kw))[1])
    monkeypatch.setattr(negatives, "RERANK_QUERIES", 1)  # one query per chunk, were it a cross-encoder
    got = negatives.rescore(ds, run, positives, reranker)
    assert sorted(encoded) == sorted({ds.corpus[f"d{i}"].contents for i in range(8)} | {"sort list", "read file"})
    for q, ranked in got.items():
        expected = reranker.score([(ds.queries[q].text, ds.corpus[d].contents) for d, _ in ranked])
        assert [s for _, s in ranked] == pytest.approx(expected, abs=1e-6)
        assert [s for _, s in ranked] == sorted(expected, reverse=True)
