"""Strict readers: happy paths, and every bad input named by file, line and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tiny import jsonl, text

from distilrank.data import (
    Group,
    LabeledPair,
    Passage,
    Query,
    iter_jsonl,
    load_dataset_spec,
    read_beir,
    read_rank_llm_json,
    read_topics,
    read_training_file,
    read_trec_folder,
    read_trec_qrels,
    read_trec_run,
)
from distilrank.errors import DataError


def check(
    err: pytest.ExceptionInfo[DataError], path: Path, line: int | None, field: str | None
) -> str:
    """The error names the file, the line and the field, in its attributes and its message."""
    e = err.value
    assert (e.path, e.line, e.field) == (str(path), line, field)
    message = str(e)
    assert str(path) in message
    if line is not None:
        assert f"{path}:{line}" in message
    if field is not None:
        assert f"field '{field}'" in message
    assert e.hint, "every user error carries a hint"
    return message


CORPUS = [
    {"_id": "d1", "title": "Cats", "text": "Cats purr."},
    {"_id": 2, "text": "Dogs bark."},
    {"_id": "d3", "title": "Only a title", "text": ""},
]
QUERIES = [
    {"_id": "q1", "text": "cat sounds"},
    {"_id": 7, "text": "dogs"},
    {"_id": "q3", "text": "x"},
]


def beir(tmp_path: Path, qrels: str | None = None, **files: list[Any]) -> Path:
    folder = tmp_path / "toy-beir"
    jsonl(folder / "corpus.jsonl", files.get("corpus", CORPUS))
    jsonl(folder / "queries.jsonl", files.get("queries", QUERIES))
    default = "query-id\tcorpus-id\tscore\nq1\td1\t2\n7\t2\t1\n7\td3\t0\n"
    text(folder / "qrels" / "test.tsv", default if qrels is None else qrels)
    text(folder / "qrels" / "dev.tsv", "q3\td1\t1\n")
    return folder


# ---------------------------------------------------------------------------- iter_jsonl


def test_iter_jsonl_skips_blank_lines_and_numbers_lines(tmp_path: Path) -> None:
    path = text(tmp_path / "a.jsonl", '\ufeff{"a": 1}\n\n  \n{"b": 2}\r\n')
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (4, {"b": 2})]


def test_iter_jsonl_malformed_line(tmp_path: Path) -> None:
    path = text(tmp_path / "a.jsonl", '{"a": 1}\n{"a": 2}\n{"a": \n')
    with pytest.raises(DataError) as err:
        list(iter_jsonl(path))
    assert "malformed JSON" in check(err, path, 3, None)


def test_iter_jsonl_non_object_line(tmp_path: Path) -> None:
    path = text(tmp_path / "a.jsonl", '{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataError) as err:
        list(iter_jsonl(path))
    assert "expected a JSON object" in check(err, path, 2, None)


def test_iter_jsonl_non_utf8_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": "ok"}\n{"a": "caf\xe9"}\n')
    with pytest.raises(DataError) as err:
        list(iter_jsonl(path))
    message = check(err, path, 2, None)
    assert "not valid UTF-8" in message and "re-encode the file as UTF-8" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        list(iter_jsonl(tmp_path / "nope.jsonl"))


# ---------------------------------------------------------------------------- BEIR


def test_read_beir(tmp_path: Path) -> None:
    ds = read_beir(beir(tmp_path))
    assert ds.name == "toy-beir"
    assert ds.corpus["2"] == Passage("2", "Dogs bark.")
    assert ds.corpus["d1"].contents == "Cats. Cats purr."
    assert ds.corpus["d3"].title == "Only a title"
    assert list(ds.queries) == ["q1", "7"]  # q3 is not judged in the test split
    assert ds.queries["7"] == Query("7", "dogs")
    assert ds.qrels == {"q1": {"d1": 2}, "7": {"2": 1, "d3": 0}}
    dev = read_beir(tmp_path / "toy-beir", split="dev")
    assert list(dev.queries) == ["q3"]  # a qrels file without header


@pytest.mark.parametrize(
    ("rows", "line", "field", "words"),
    [
        ([{"_id": "a", "text": "x"}, {"_id": "b"}], 2, "text", "missing required field"),
        ([{"_id": "a", "text": "x"}, {"text": "y"}], 2, "_id", "missing required field"),
        ([{"_id": "a", "text": "x"}, {"_id": "b", "text": "  "}], 2, "text", "is empty"),
        ([{"_id": "a", "text": "x"}, {"_id": "b", "text": 3}], 2, "text", "expected a string"),
        ([{"_id": "a", "text": "x"}, {"_id": "a", "text": "y"}], 2, "_id", "first seen at line 1"),
    ],
)
def test_read_beir_bad_corpus(
    tmp_path: Path, rows: list[Any], line: int, field: str, words: str
) -> None:
    folder = beir(tmp_path, corpus=rows)
    with pytest.raises(DataError) as err:
        read_beir(folder)
    assert words in check(err, folder / "corpus.jsonl", line, field)


def test_read_beir_empty_query_text(tmp_path: Path) -> None:
    folder = beir(tmp_path, queries=[{"_id": "q1", "text": "a"}, {"_id": "q2", "text": ""}])
    with pytest.raises(DataError) as err:
        read_beir(folder)
    check(err, folder / "queries.jsonl", 2, "text")


def test_read_beir_non_utf8_corpus(tmp_path: Path) -> None:
    folder = beir(tmp_path)
    (folder / "corpus.jsonl").write_bytes(
        b'{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": "\xff"}\n'
    )
    with pytest.raises(DataError) as err:
        read_beir(folder)
    assert "not valid UTF-8" in check(err, folder / "corpus.jsonl", 2, None)


@pytest.mark.parametrize(
    ("qrels", "line", "field", "words"),
    [
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t1\n", 3, "query-id", "unknown query"),
        ("q1\td1\t1\n\nq1\tnope\t1\n", 3, "corpus-id", "unknown document"),
        ("q1\td1\t1.5\n", 1, "score", "expected an integer"),
        ("q1\td1\thigh\n", 1, "score", "expected an integer"),
        ("q1 d1 1\n", 1, "corpus-id", "separated by tabs"),
        ("q1\td1\n", 1, "score", "expected 3 tab-separated columns, found 2"),
        ("q1\td1\t1\t0\n", 1, "column 4", "found 4"),
        ("q1\td1\t1\nq1\td1\t2\n", 2, "corpus-id", "different grades"),
    ],
)
def test_read_beir_bad_qrels(tmp_path: Path, qrels: str, line: int, field: str, words: str) -> None:
    folder = beir(tmp_path, qrels=qrels)
    with pytest.raises(DataError) as err:
        read_beir(folder)
    assert words in check(err, folder / "qrels" / "test.tsv", line, field)


def test_read_beir_missing_split_lists_splits(tmp_path: Path) -> None:
    folder = beir(tmp_path)
    with pytest.raises(DataError) as err:
        read_beir(folder, split="train")
    assert "splits in this folder: dev, test" in check(
        err, folder / "qrels" / "train.tsv", None, None
    )


# ---------------------------------------------------------------------------- TREC formats


def test_read_trec_run_sorts_by_score_then_rank(tmp_path: Path) -> None:
    path = text(
        tmp_path / "a.run", "1 Q0 a 2 1.0 t\n1 Q0 b 1 1.0 t\n1 Q0 c 3 5 t\n2\tQ0\tz 1 0.5 t\n"
    )
    assert read_trec_run(path) == {"1": [("c", 5.0), ("b", 1.0), ("a", 1.0)], "2": [("z", 0.5)]}


@pytest.mark.parametrize(
    ("content", "line", "field", "words"),
    [
        ("1 Q0 a 1 1.0 t\n1 Q0 b 2 1.0\n", 2, "tag", "expected 6 whitespace-separated"),
        ("1 Q0 a 1 high t\n", 1, "score", "expected a finite number"),
        ("1 Q0 a first 1.0 t\n", 1, "rank", "expected an integer"),
        ("1 Q0 a 1 1.0 t\n1 Q0 a 2 0.5 t\n", 2, "docid", "duplicate"),
    ],
)
def test_read_trec_run_errors(
    tmp_path: Path, content: str, line: int, field: str, words: str
) -> None:
    path = text(tmp_path / "a.run", content)
    with pytest.raises(DataError) as err:
        read_trec_run(path)
    assert words in check(err, path, line, field)


def test_read_trec_qrels_and_topics(tmp_path: Path) -> None:
    qrels = text(tmp_path / "qrels.txt", "1 0 a 2\n1 0 b 0\n2 Q0 a 1\n")
    assert read_trec_qrels(qrels) == {"1": {"a": 2, "b": 0}, "2": {"a": 1}}
    topics = text(tmp_path / "topics.txt", "1\twhat is a cat\n2\tdogs\tand more\n")
    assert read_topics(topics) == {
        "1": Query("1", "what is a cat"),
        "2": Query("2", "dogs\tand more"),
    }


def test_read_trec_qrels_bad_grade(tmp_path: Path) -> None:
    path = text(tmp_path / "qrels.txt", "1 0 a 2\n1 0 b yes\n")
    with pytest.raises(DataError) as err:
        read_trec_qrels(path)
    check(err, path, 2, "grade")


@pytest.mark.parametrize(
    ("content", "line", "field"),
    [("1\tcats\n2 dogs\n", 2, "text"), ("1\tcats\n1\tdogs\n", 2, "qid"), ("1\t \n", 1, "text")],
)
def test_read_topics_errors(tmp_path: Path, content: str, line: int, field: str) -> None:
    path = text(tmp_path / "topics.txt", content)
    with pytest.raises(DataError) as err:
        read_topics(path)
    check(err, path, line, field)


# ---------------------------------------------------------------------------- rank_llm JSON


def hit(qid: Any, docid: str, rank: int, score: float, content: str = "") -> dict[str, Any]:
    return {
        "content": content or f"text of {docid}",
        "qid": qid,
        "docid": docid,
        "rank": rank,
        "score": score,
    }


RANK_LLM = [
    {"query": "cats", "hits": [hit(1, "a", 1, 3.0), hit(1, "b", 2, 3.0), hit(1, "c", 3, 9.0)]},
    {"query": "dogs", "hits": [hit("2", "a", 1, 1.0), hit("2", "d", 2, 0.5)]},
]


def test_read_rank_llm_json(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps(RANK_LLM, indent=2), encoding="utf-8")
    queries, corpus, run = read_rank_llm_json(path)
    assert queries == {"1": Query("1", "cats"), "2": Query("2", "dogs")}
    assert sorted(corpus) == ["a", "b", "c", "d"] and corpus["a"].text == "text of a"
    assert run == {"1": [("c", 9.0), ("a", 3.0), ("b", 3.0)], "2": [("a", 1.0), ("d", 0.5)]}


@pytest.mark.parametrize(
    ("edit", "field", "words"),
    [
        (lambda d: d[1]["hits"][1].pop("content"), "[1].hits[1].content", "missing required"),
        (lambda d: d[0]["hits"][2].update(content=" "), "[0].hits[2].content", "is empty"),
        (lambda d: d[0]["hits"][1].update(qid=5), "[0].hits[1].qid", "differs"),
        (lambda d: d[0]["hits"][1].update(score="x"), "[0].hits[1].score", "finite number"),
        (lambda d: d[1].pop("query"), "[1].query", "missing required"),
        (lambda d: d[1].update(hits=[]), "[1].hits", "non-empty list"),
        (lambda d: d[1]["hits"][0].update(content="other"), "[1].hits[0].content", "[0].hits[0]"),
        (
            lambda d: d[1]["hits"][1].update(qid=1, docid="z") or d[1]["hits"][0].update(qid=1),
            "[1].hits[0].qid",
            "repeats",
        ),
    ],
)
def test_read_rank_llm_json_errors(tmp_path: Path, edit: Any, field: str, words: str) -> None:
    data = json.loads(json.dumps(RANK_LLM))
    edit(data)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_rank_llm_json(path)
    assert words in check(err, path, None, field)


def test_read_rank_llm_json_malformed_and_non_utf8(tmp_path: Path) -> None:
    path = text(tmp_path / "run.json", '[\n  {"query": "x",\n   "hits": [}\n]\n')
    with pytest.raises(DataError) as err:
        read_rank_llm_json(path)
    check(err, path, 3, None)
    path.write_bytes(b'[\n{"query": "caf\xe9"}]\n')
    with pytest.raises(DataError) as err:
        read_rank_llm_json(path)
    assert "re-encode the file as UTF-8" in check(err, path, 2, None)
    path.write_text('{"query": "x"}', encoding="utf-8")
    with pytest.raises(DataError, match="expected a non-empty JSON list"):
        read_rank_llm_json(path)


# ---------------------------------------------------------------------------- TREC folder


def trec_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "dl-toy"
    folder.mkdir()
    (folder / "retrieve_results.json").write_text(json.dumps(RANK_LLM), encoding="utf-8")
    text(folder / "trec_results.txt", "1 Q0 c 1 9 bm25\n")
    text(folder / "topics.dl.txt", "1\tcats?\n2\tdogs?\n3\tunused\n")
    text(folder / "qrels.dl.txt", "1 0 a 1\n1 0 unretrieved 3\n2 0 d 0\n4 0 a 1\n")
    return folder


def test_read_trec_folder(tmp_path: Path) -> None:
    ds, run = read_trec_folder(trec_folder(tmp_path))
    assert ds.name == "dl-toy"
    assert ds.queries == {"1": Query("1", "cats?"), "2": Query("2", "dogs?")}  # topics win
    assert ds.qrels == {"1": {"a": 1, "unretrieved": 3}, "2": {"d": 0}}
    assert "unretrieved" not in ds.corpus and len(ds.corpus) == 4
    assert ds.judged_queries() == ["1"]
    assert run["1"][0] == ("c", 9.0)


def test_read_trec_folder_without_text(tmp_path: Path) -> None:
    folder = trec_folder(tmp_path)
    (folder / "retrieve_results.json").unlink()
    with pytest.raises(DataError, match="passage text is needed"):
        read_trec_folder(folder)


def test_read_trec_folder_topics_missing_query(tmp_path: Path) -> None:
    folder = trec_folder(tmp_path)
    text(folder / "topics.dl.txt", "1\tcats?\n")
    with pytest.raises(DataError, match="1 queries of retrieve_results.json are missing"):
        read_trec_folder(folder)


# ---------------------------------------------------------------------------- training files


def test_training_triplets_groups_pairs(tmp_path: Path) -> None:
    triplets = jsonl(tmp_path / "t.jsonl", [{"query": "q", "positive": "p", "negative": "n"}])
    assert read_training_file(triplets) == [Group("q", "p", ("n",))]
    rows = [
        {"query": "q", "positive": "p", "negatives": ["n1", "n2"], "scores": [3, 1.5, -2]},
        {"anchor": "q2", "positive": "p2", "negatives": ["n"]},
    ]
    groups = read_training_file(jsonl(tmp_path / "g.jsonl", rows))
    assert groups == [Group("q", "p", ("n1", "n2"), (3.0, 1.5, -2.0)), Group("q2", "p2", ("n",))]
    rows = [
        {"query": "q", "passage": "p", "label": True},
        {"query": "q", "passage": "x", "label": 0.25},
    ]
    pairs = read_training_file(jsonl(tmp_path / "p.jsonl", rows))
    assert pairs == [LabeledPair("q", "p", 1.0), LabeledPair("q", "x", 0.25)]
    tsv = text(tmp_path / "triples.tsv", "q\tp\tn\n\nq2\tp2\tn2\n")
    assert read_training_file(tsv) == [Group("q", "p", ("n",)), Group("q2", "p2", ("n2",))]


TRIPLET = {"query": "q", "positive": "p", "negative": "n"}
GROUP = {"query": "q", "positive": "p", "negatives": ["n"]}
PAIR = {"query": "q", "passage": "p", "label": 1}


@pytest.mark.parametrize(
    ("rows", "line", "field", "words"),
    [
        ([TRIPLET, GROUP], 2, "negative", "every example needs: query, positive, negative"),
        ([GROUP, TRIPLET], 2, "negatives", "is a group"),
        ([PAIR, {"query": "q", "passage": "p"}], 2, "label", "missing required field"),
        ([TRIPLET, {**TRIPLET, "positive": " "}], 2, "positive", "is empty"),
        ([{**GROUP, "negatives": []}], 1, "negatives", "non-empty list"),
        ([{**GROUP, "negatives": ["a", ""]}], 1, "negatives[1]", "is empty"),
        ([{**GROUP, "scores": [1.0]}], 1, "scores", "expected a list of 2 numbers"),
        ([PAIR, {**PAIR, "label": 2}], 2, "label", "in [0, 1]"),
        ([{"question": "q", "answer": "a"}], 1, None, "cannot tell"),
    ],
)
def test_training_bad_lines(
    tmp_path: Path, rows: list[Any], line: int, field: str | None, words: str
) -> None:
    path = jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataError) as err:
        read_training_file(path)
    assert words in check(err, path, line, field)


def test_training_tsv_errors(tmp_path: Path) -> None:
    path = text(tmp_path / "triples.tsv", "q\tp\tn\nq\tp\n")
    with pytest.raises(DataError) as err:
        read_training_file(path)
    check(err, path, 2, "negative")
    path.write_bytes(b"q\tp\tn\nq\tp\xe2\x28\tn\n")
    with pytest.raises(DataError) as err:
        read_training_file(path)
    assert "not valid UTF-8" in check(err, path, 2, None)


def test_training_missing_local_path_and_hub_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        read_training_file(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="no such file or folder"):
        read_training_file("./data/train")
    calls: list[str] = []
    monkeypatch.setattr(
        "distilrank.data.hub.load_training_hub", lambda name: calls.append(name) or []
    )
    assert read_training_file("someone/msmarco-triplets") == []
    assert calls == ["someone/msmarco-triplets"]


# ---------------------------------------------------------------------------- dispatch


def test_load_dataset_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds, run = load_dataset_spec(str(beir(tmp_path)), "test")
    assert run is None and ds.name == "toy-beir"
    ds, run = load_dataset_spec(str(trec_folder(tmp_path)), "test")
    assert run is not None and ds.name == "dl-toy"
    for spec in ("./missing", str(tmp_path / "missing"), "data/sub/folder"):
        with pytest.raises(DataError, match="no such file or folder"):
            load_dataset_spec(spec, "test")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither a BEIR nor a TREC folder"):
        load_dataset_spec(str(tmp_path / "empty"), "test")
    monkeypatch.setattr("distilrank.data.hub.load_beir_hub", lambda name, split: (name, split))
    assert load_dataset_spec("BeIR/scifact", "test") == (("BeIR/scifact", "test"), None)


# ---------------------------------------------------------------------------- real data


@pytest.mark.shared_data
def test_real_trec_dl_2019(shared_data: Path) -> None:
    ir_measures = pytest.importorskip("ir_measures")
    ds, run = load_dataset_spec(str(shared_data / "trec-dl-2019"), "test")
    assert ds.name == "trec-dl-2019"
    assert len(ds.queries) == 43 and len(run) == 43
    assert all(len(hits) == 100 for hits in run.values())
    assert sum(len(j) for j in ds.qrels.values()) == 9260
    trec = read_trec_run(shared_data / "trec-dl-2019" / "trec_results_dl19.txt")
    assert {q: [d for d, _ in h] for q, h in trec.items()} == {
        q: [d for d, _ in h] for q, h in run.items()
    }
    as_dict = {qid: dict(hits) for qid, hits in run.items()}
    ndcg = ir_measures.calc_aggregate([ir_measures.nDCG @ 10], ds.qrels, as_dict)
    assert abs(ndcg[ir_measures.nDCG @ 10] - 0.5058) < 1e-3  # the official Anserini BM25 figure


@pytest.mark.shared_data
def test_real_msmarco_triples(shared_data: Path) -> None:
    groups = read_training_file(
        shared_data / "msmarco-triples-toy" / "triples.train.small.head100.tsv"
    )
    assert len(groups) == 100
    assert all(isinstance(g, Group) and len(g.negatives) == 1 for g in groups)
    assert groups[0].query == "is a little caffeine ok during pregnancy"
    assert "don\u00e2\u0080\u0099t" in groups[0].positive  # mojibake is valid UTF-8 and kept as is
