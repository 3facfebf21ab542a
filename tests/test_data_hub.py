"""Hub loading through the real ``datasets.load_dataset``, on local folders laid out like hub repos."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from distilrank.data import (
    Group,
    LabeledPair,
    Passage,
    Query,
    load_dataset_spec,
    read_training_file,
)
from distilrank.data.hub import load_beir_hub, load_training_hub
from distilrank.errors import DataError

# The README front matter a BEIR repo on the hub uses to declare its two configs.
BEIR_README = """---
configs:
- config_name: corpus
  data_files:
  - split: corpus
    path: corpus/*.jsonl
- config_name: queries
  data_files:
  - split: queries
    path: queries/*.jsonl
---
# toy BEIR dataset
"""

CORPUS = [
    {"_id": "d1", "title": "Cats", "text": "Cats purr."},
    {"_id": "d2", "title": None, "text": "Dogs bark."},
    {"_id": "d3", "title": "Only a title", "text": ""},
]
QUERIES = [
    {"_id": "q1", "title": "", "text": "cat sounds"},
    {"_id": "q2", "title": "", "text": "dogs"},
    {"_id": "q3", "title": "", "text": "unjudged"},
]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\td2\t1\nq2\td3\t0\n"


def jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def beir_repo(
    root: Path,
    corpus: list[dict[str, Any]] = CORPUS,
    queries: list[dict[str, Any]] = QUERIES,
    qrels: str = QRELS,
    dev: str = "query-id\tcorpus-id\tscore\nq3\td1\t1\n",
) -> str:
    """``root/toy`` with configs corpus and queries, and ``root/toy-qrels`` with split files."""
    repo = root / "toy"
    repo.mkdir(parents=True)
    (repo / "README.md").write_text(BEIR_README, encoding="utf-8")
    jsonl(repo / "corpus" / "corpus.jsonl", corpus)
    jsonl(repo / "queries" / "queries.jsonl", queries)
    (root / "toy-qrels").mkdir()
    (root / "toy-qrels" / "test.tsv").write_text(qrels, encoding="utf-8")
    (root / "toy-qrels" / "dev.tsv").write_text(dev, encoding="utf-8")
    return str(repo)


@pytest.fixture()
def cache(tmp_path: Path) -> str:
    return str(tmp_path / "hf-cache")


def test_load_beir_hub(tmp_path: Path, cache: str) -> None:
    ds = load_beir_hub(beir_repo(tmp_path / "hub"), "test", cache_dir=cache)
    assert ds.name == "toy"
    assert ds.corpus["d1"] == Passage("d1", "Cats purr.", "Cats")
    assert ds.corpus["d2"] == Passage("d2", "Dogs bark.")
    assert list(ds.queries) == ["q1", "q2"]
    assert ds.queries["q2"] == Query("q2", "dogs")
    assert ds.qrels == {"q1": {"d1": 2}, "q2": {"d2": 1, "d3": 0}}


def test_load_beir_hub_dev_split_alias(tmp_path: Path, cache: str) -> None:
    # datasets names the split of a dev.tsv file "validation"; BEIR calls it "dev"
    ds = load_beir_hub(beir_repo(tmp_path / "hub"), "dev", cache_dir=cache)
    assert list(ds.queries) == ["q3"]


def test_load_beir_hub_unknown_split(tmp_path: Path, cache: str) -> None:
    with pytest.raises(DataError) as err:
        load_beir_hub(beir_repo(tmp_path / "hub"), "train", cache_dir=cache)
    message = str(err.value)
    assert "could not load" in message and "toy-qrels" in message and "Unknown split" in message


@pytest.mark.parametrize(
    ("kwargs", "path_suffix", "field", "words"),
    [
        (
            {"corpus": [*CORPUS, {"_id": "d4", "title": "", "text": " "}]},
            "toy",
            "corpus[3].text",
            "is empty",
        ),
        (
            {"corpus": [*CORPUS, {"_id": "d1", "title": "", "text": "x"}]},
            "toy",
            "corpus[3]._id",
            "duplicate",
        ),
        (
            {"queries": [*QUERIES[:2], {"_id": "q3", "title": "", "text": ""}]},
            "toy",
            "queries[2].text",
            "is empty",
        ),
        (
            {"qrels": "query-id\tcorpus-id\tscore\nq1\tnope\t1\n"},
            "toy-qrels",
            "test[0].corpus-id",
            "unknown document",
        ),
        (
            {"qrels": "query-id\tcorpus-id\tscore\nq9\td1\t1\n"},
            "toy-qrels",
            "test[0].query-id",
            "unknown query",
        ),
        (
            {  # all split files must share one schema, here a float score
                "qrels": "query-id\tcorpus-id\tscore\nq1\td1\t0.5\n",
                "dev": "query-id\tcorpus-id\tscore\nq3\td1\t1.0\n",
            },
            "toy-qrels",
            "test[0].score",
            "integer grade",
        ),
    ],
)
def test_load_beir_hub_bad_rows(
    tmp_path: Path, cache: str, kwargs: dict[str, Any], path_suffix: str, field: str, words: str
) -> None:
    repo = beir_repo(tmp_path / "hub", **kwargs)
    with pytest.raises(DataError) as err:
        load_beir_hub(repo, "test", cache_dir=cache)
    expected_path = str(tmp_path / "hub" / path_suffix)
    assert (err.value.path, err.value.field) == (expected_path, field)
    assert words in str(err.value) and f"field '{field}'" in str(err.value)


def test_load_beir_hub_missing_column(tmp_path: Path, cache: str) -> None:
    corpus = [{"id": "d1", "text": "x"}]
    with pytest.raises(DataError) as err:
        load_beir_hub(beir_repo(tmp_path / "hub", corpus=corpus), "test", cache_dir=cache)
    assert err.value.field == "_id" and "has no column '_id'" in str(err.value)


def test_load_beir_hub_failure_is_a_data_error(tmp_path: Path, cache: str) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as err:
        load_beir_hub(str(tmp_path / "empty"), "test", cache_dir=cache)
    message = str(err.value)
    assert message.startswith(f"could not load '{tmp_path / 'empty'}' from the Hugging Face hub: ")
    assert "pass a local file or folder instead, or check the name and your network" in message


def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every hub load fail the way it does without a network, without waiting for one."""

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError(f"Couldn't reach '{args[0]}' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr("datasets.load_dataset", fail)


def test_hub_names_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    offline(monkeypatch)
    with pytest.raises(DataError, match="could not load 'BeIR/scifact' from the Hugging Face hub"):
        load_dataset_spec("BeIR/scifact", "test")
    with pytest.raises(DataError, match="ConnectionError: Couldn't reach 'someone/triples'"):
        read_training_file("someone/triples")


# ---------------------------------------------------------------------------- training


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([{"query": "q", "positive": "p", "negative": "n"}], [Group("q", "p", ("n",))]),
        ([{"anchor": "q", "positive": "p", "negative": "n"}], [Group("q", "p", ("n",))]),
        (
            [{"query": "q", "positive": "p", "negatives": ["a", "b"], "scores": [2.0, 1.0, 0.0]}],
            [Group("q", "p", ("a", "b"), (2.0, 1.0, 0.0))],
        ),
        (
            [{"anchor": "q", "positive": "p", "negative_2": "b", "negative_1": "a"}],
            [Group("q", "p", ("a", "b"))],
        ),
        (
            [
                {"query": "q", "passage": "p", "label": 1},
                {"query": "q", "passage": "x", "label": 0},
            ],
            [LabeledPair("q", "p", 1.0), LabeledPair("q", "x", 0.0)],
        ),
    ],
)
def test_load_training_hub(
    tmp_path: Path, cache: str, rows: list[dict[str, Any]], expected: list[Any]
) -> None:
    jsonl(tmp_path / "repo" / "train.jsonl", rows)
    assert load_training_hub(str(tmp_path / "repo"), cache_dir=cache) == expected


def test_load_training_hub_bad_row(tmp_path: Path, cache: str) -> None:
    rows = [{"query": "q", "positive": "p", "negative": "n"}] * 2
    rows = [*rows, {"query": "q", "positive": "", "negative": "n"}]
    jsonl(tmp_path / "repo" / "train.jsonl", rows)
    with pytest.raises(DataError) as err:
        load_training_hub(str(tmp_path / "repo"), cache_dir=cache)
    assert err.value.field == "[2].positive" and "is empty" in str(err.value)


def test_load_training_hub_unknown_columns(tmp_path: Path, cache: str) -> None:
    jsonl(tmp_path / "repo" / "train.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError, match="cannot tell the kind of training example"):
        load_training_hub(str(tmp_path / "repo"), cache_dir=cache)
