"""Soft labels: the local jsonl reader, training-file dispatch and the hub / InRanker loaders.

Hub loaders run through the real ``datasets.load_dataset`` on local folders laid out like the
hub repos (``unicamp-dl/InRanker-BEIR``, ``unicamp-dl/InRanker-msmarco``, ``unicamp-dl/mmarco``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tiny import jsonl, text

from distilrank.data import SoftGroup, hub, read_soft_labels, read_training_file
from distilrank.data.hub import load_inranker_dataset, load_soft_labels_hub, load_training_hub
from distilrank.errors import ConfigError, DataError


def check(err: pytest.ExceptionInfo[DataError], path: Path | str, line: int | None, field: str | None) -> str:
    """The error names the file, the line and the field, in its attributes and its message."""
    e = err.value
    assert (e.path, e.line, e.field) == (str(path), line, field)
    message = str(e)
    assert (f"{path}:{line}: " if line is not None else f"{path}: ") in message
    if field is not None:
        assert f"field '{field}'" in message
    assert e.hint, "every user error carries a hint"
    return message


@pytest.fixture()
def cache(tmp_path: Path) -> str:
    return str(tmp_path / "hf-cache")


# InRanker's custom-dataset rows, with an extra field InRanker files do not have
LOGIT_ROWS = [
    {"query": "how do cats purr", "contents": "Cats purr with the larynx.", "true_logit": 2.5, "false_logit": -1.0},
    {"query": "dog food", "contents": "Dogs eat meat.", "true_logit": 0, "false_logit": 1.5, "doc_id": "d9"},
    {"query": "how do cats purr", "contents": "Lions roar.", "true_logit": -3.0, "false_logit": 4.0},
]
LOGIT_GROUPS = [
    SoftGroup(
        "how do cats purr",
        ("Cats purr with the larynx.", "Lions roar."),
        (3.5, -7.0),
        ((-1.0, 2.5), (4.0, -3.0)),
    ),
    SoftGroup("dog food", ("Dogs eat meat.",), (-1.5,), ((1.5, 0.0),)),
]
SCORE_ROWS = [
    {"query": "q1", "contents": "a", "score": 7.25},
    {"query": "q2", "contents": "b", "score": -1},
    {"query": "q1", "contents": "c", "score": 0.5},
]
SCORE_GROUPS = [SoftGroup("q1", ("a", "c"), (7.25, 0.5)), SoftGroup("q2", ("b",), (-1.0,))]


# ---------------------------------------------------------------------------- local reader


def test_read_logit_rows(tmp_path: Path) -> None:
    groups = read_soft_labels(jsonl(tmp_path / "soft.jsonl", LOGIT_ROWS))
    assert groups == LOGIT_GROUPS
    assert all(isinstance(s, float) for g in groups for s in g.scores)


def test_read_score_rows(tmp_path: Path) -> None:
    assert read_soft_labels(jsonl(tmp_path / "soft.jsonl", SCORE_ROWS)) == SCORE_GROUPS


def test_query_id_is_the_grouping_key(tmp_path: Path) -> None:
    rows = [
        {"query_id": "1", "query": "same text", "contents": "a", "score": 1.0},
        {"query_id": 2, "query": "same text", "contents": "b", "score": 2.0},
        {"query_id": "1", "query": "same text", "contents": "c", "score": 3.0},
        {"query": "same text", "contents": "d", "score": 4.0},  # no id: grouped by its text
        {"query": "same text", "contents": "e", "score": 5.0},
    ]
    groups = read_soft_labels(jsonl(tmp_path / "soft.jsonl", rows))
    assert [g.documents for g in groups] == [("a", "c"), ("b",), ("d", "e")]
    assert [g.scores for g in groups] == [(1.0, 3.0), (2.0,), (4.0, 5.0)]


def test_blank_lines_and_line_numbers(tmp_path: Path) -> None:
    lines = [json.dumps(SCORE_ROWS[0]), "", json.dumps({"query": "q", "contents": " ", "score": 1})]
    path = text(tmp_path / "soft.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        read_soft_labels(path)
    assert "is empty" in check(err, path, 3, "contents")


L = {"query": "q", "contents": "doc", "true_logit": 1.0, "false_logit": -1.0}
S = {"query": "q", "contents": "doc", "score": 1.0}


def without(row: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != key}


@pytest.mark.parametrize(
    ("lines", "line", "field", "words"),
    [
        ([json.dumps(L), '{"query": "q", "contents": "doc", "true_logit": 1.0'], 2, None, "malformed JSON"),
        ([json.dumps(L), "[1, 2]"], 2, None, "expected a JSON object"),
        ([json.dumps(without(L, "contents"))], 1, None, "cannot tell"),  # read_training_file only
        ([json.dumps(L), json.dumps(without(L, "contents"))], 2, "contents", "missing required field"),
        ([json.dumps(without(L, "query"))], 1, "query", "missing required field"),
        ([json.dumps({**L, "query": "  "})], 1, "query", "is empty"),
        ([json.dumps({**L, "contents": ""})], 1, "contents", "is empty"),
        ([json.dumps(L), json.dumps(without(L, "true_logit"))], 2, "true_logit", "need both true_logit and"),
        ([json.dumps(without(L, "false_logit"))], 1, "false_logit", "has true_logit, but InRanker rows"),
        ([json.dumps({**L, "false_logit": None})], 1, "false_logit", "missing required field"),
        ([json.dumps({**L, "true_logit": "2.5"})], 1, "true_logit", "expected a finite number, got '2.5'"),
        ([json.dumps({**L, "true_logit": True})], 1, "true_logit", "expected a finite number"),
        ([json.dumps(L), json.dumps({**L, "false_logit": float("nan")})], 2, "false_logit", "got nan"),
        ([json.dumps({**L, "true_logit": float("inf")})], 1, "true_logit", "got inf"),
        ([json.dumps(S), json.dumps({**S, "score": float("-inf")})], 2, "score", "got -inf"),
        ([json.dumps(L), json.dumps(S)], 2, "score", "a score row in a file of logit rows (see the first row, line 1)"),
        ([json.dumps(S), json.dumps(S), json.dumps(L)], 3, "true_logit", "a logit row in a file of score rows"),
        ([json.dumps(L), json.dumps({"query": "q", "contents": "x"})], 2, "true_logit", "missing the teacher's label"),
        ([json.dumps(S), json.dumps({"query": "q", "contents": "x", "label": 1})], 2, "score", "missing the teacher's"),
        (
            [json.dumps({**S, "query_id": "7"}), json.dumps({**S, "query_id": "7", "query": "other"})],
            2,
            "query",
            "query_id '7' has another query text",
        ),
        ([json.dumps({**S, "query_id": ""})], 1, "query_id", "id is empty"),
    ],
)
def test_bad_rows(tmp_path: Path, lines: list[str], line: int, field: str | None, words: str) -> None:
    path = text(tmp_path / "soft.jsonl", "\n".join(lines) + "\n")
    reader = read_training_file if words == "cannot tell" else read_soft_labels
    with pytest.raises(DataError) as err:
        reader(path)
    assert words in check(err, path, line, field)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_json_nan_and_infinity_literals_are_rejected(tmp_path: Path, literal: str) -> None:
    # Python's json module parses these non-standard literals into floats: they must not pass
    row = f'{{"query": "q", "contents": "d", "true_logit": {literal}, "false_logit": 0}}'
    path = text(tmp_path / "soft.jsonl", row + "\n")
    with pytest.raises(DataError) as err:
        read_soft_labels(path)
    assert "expected a finite number" in check(err, path, 1, "true_logit")


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    path = text(tmp_path / "soft.jsonl", content)
    with pytest.raises(DataError) as err:
        read_soft_labels(path)
    assert "has no soft-label rows" in check(err, path, None, None)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_soft_labels(tmp_path / "nope.jsonl")


def test_groups_have_tuples(tmp_path: Path) -> None:
    group = read_soft_labels(jsonl(tmp_path / "soft.jsonl", LOGIT_ROWS))[0]
    assert isinstance(group.documents, tuple) and isinstance(group.scores, tuple)
    assert isinstance(group.logits, tuple) and all(isinstance(pair, tuple) for pair in group.logits)
    hash(group)  # frozen and made of tuples: usable as a key


# ---------------------------------------------------------------------------- read_training_file


def test_read_training_file_dispatches_soft_labels(tmp_path: Path) -> None:
    assert read_training_file(jsonl(tmp_path / "a.jsonl", LOGIT_ROWS)) == LOGIT_GROUPS
    assert read_training_file(jsonl(tmp_path / "b.jsonl", SCORE_ROWS)) == SCORE_GROUPS
    # a first row with contents but no label is a soft-label file with an error, not "cannot tell"
    path = jsonl(tmp_path / "c.jsonl", [{"query": "q", "contents": "x", "false_logit": 1.0}])
    with pytest.raises(DataError) as err:
        read_training_file(path)
    assert "InRanker rows need both" in check(err, path, 1, "true_logit")


def test_read_training_file_still_reads_groups(tmp_path: Path) -> None:
    rows = [{"query": "q", "positive": "p", "negatives": ["n"], "scores": [1.0, 0.0]}]
    groups = read_training_file(jsonl(tmp_path / "g.jsonl", rows))
    assert [g.teacher_scores for g in groups] == [(1.0, 0.0)]


# ---------------------------------------------------------------------------- hub: any soft-label dataset


def test_load_soft_labels_hub(tmp_path: Path, cache: str) -> None:
    jsonl(tmp_path / "repo" / "train.jsonl", LOGIT_ROWS)
    assert load_soft_labels_hub(str(tmp_path / "repo"), cache_dir=cache) == LOGIT_GROUPS
    jsonl(tmp_path / "scores" / "train.jsonl", SCORE_ROWS)
    assert load_soft_labels_hub(str(tmp_path / "scores"), cache_dir=cache) == SCORE_GROUPS


def test_load_soft_labels_hub_max_rows_and_data_files(tmp_path: Path, cache: str) -> None:
    jsonl(tmp_path / "repo" / "train.jsonl", SCORE_ROWS)
    jsonl(tmp_path / "repo" / "other.jsonl", [{"query": "x", "contents": "y", "score": 9.0}])
    name = str(tmp_path / "repo")
    got = load_soft_labels_hub(name, data_files="train.jsonl", cache_dir=cache, max_rows=2)
    assert got == [SoftGroup("q1", ("a",), (7.25,)), SoftGroup("q2", ("b",), (-1.0,))]
    other = load_soft_labels_hub(name, data_files="other.jsonl", cache_dir=cache)
    assert other == [SoftGroup("x", ("y",), (9.0,))]


@pytest.mark.parametrize(
    ("rows", "field", "words"),
    [
        ([L, L, {**L, "true_logit": None}], "[2].true_logit", "missing required field"),
        ([L, {**L, "query": ""}], "[1].query", "is empty"),
        ([{**S, "query_id": "1"}, {**S, "query_id": "1", "query": "z"}], "[1].query", "another query text"),
        ([{"query": "q", "contents": "d", "label": 1}], "true_logit", "has no teacher labels"),
        ([{"query": "q", "passage": "d", "score": 1}], "contents", "has no column 'contents'"),
    ],
)
def test_load_soft_labels_hub_bad_rows(
    tmp_path: Path, cache: str, rows: list[dict[str, Any]], field: str, words: str
) -> None:
    jsonl(tmp_path / "repo" / "train.jsonl", rows)
    with pytest.raises(DataError) as err:
        load_soft_labels_hub(str(tmp_path / "repo"), cache_dir=cache)
    assert words in check(err, tmp_path / "repo", None, field)


def test_load_training_hub_returns_soft_groups(tmp_path: Path, cache: str) -> None:
    jsonl(tmp_path / "repo" / "train.jsonl", LOGIT_ROWS)
    assert load_training_hub(str(tmp_path / "repo"), cache_dir=cache) == LOGIT_GROUPS


# ---------------------------------------------------------------------------- InRanker datasets

MSMARCO_TSV = "2.5\t-1.0\t100\t7\n-3.0\t4.0\t100\t8\n1.0\t0.5\t200\t7\n"
MSMARCO_GROUPS = [
    SoftGroup("cat sounds", ("Cats purr.", "Lions roar."), (3.5, -7.0), ((-1.0, 2.5), (4.0, -3.0))),
    SoftGroup("what do dogs eat", ("Cats purr.",), (0.5,), ((0.5, 1.0),)),
]
COLLECTION = "7\tCats purr.\n8\tLions roar.\n9\tunused passage\n"
QUERIES = "100\tcat sounds\n200\twhat do dogs eat\n300\tunused query\n"
MMARCO_README = """---
configs:
- config_name: collection-english
  data_files:
  - split: collection
    path: collection/english.jsonl
- config_name: queries-english
  data_files:
  - split: train
    path: queries/english_train.jsonl
---
# toy mmarco
"""


@pytest.fixture()
def msmarco(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local InRanker-msmarco repo (the repo name points at it) plus MS MARCO text files."""
    repo = tmp_path / "InRanker-msmarco"
    text(repo / "InRanker_msmarco.tsv", MSMARCO_TSV)
    text(repo / "README.md", "# soft labels\n")
    text(tmp_path / "collection.tsv", COLLECTION)
    text(tmp_path / "queries.train.tsv", QUERIES)
    monkeypatch.setattr(hub, "INRANKER_MSMARCO", str(repo))
    return tmp_path


def test_inranker_beir(tmp_path: Path, cache: str, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "InRanker-BEIR"
    jsonl(repo / "inpars_beir_dataset.jsonl", LOGIT_ROWS)
    jsonl(repo / "something_else.jsonl", SCORE_ROWS)  # only the named file is read
    monkeypatch.setattr(hub, "INRANKER_BEIR", str(repo))
    assert load_inranker_dataset("beir", cache_dir=cache) == LOGIT_GROUPS
    assert load_inranker_dataset(cache_dir=cache, max_rows=1) == [
        SoftGroup("how do cats purr", ("Cats purr with the larynx.",), (3.5,), ((-1.0, 2.5),))
    ]


def test_inranker_beir_local_copy_and_other_names(tmp_path: Path, cache: str) -> None:
    local = jsonl(tmp_path / "copy" / "beir_logits.jsonl", LOGIT_ROWS)
    assert load_inranker_dataset("beir", data_files=str(local), cache_dir=cache) == LOGIT_GROUPS
    # any other name is a soft-label dataset
    assert load_inranker_dataset(str(tmp_path / "copy"), cache_dir=cache) == LOGIT_GROUPS
    with pytest.raises(ConfigError, match="only apply to which='msmarco'"):
        load_inranker_dataset("beir", corpus="collection.tsv")


def test_inranker_msmarco_local_texts(msmarco: Path, cache: str) -> None:
    got = load_inranker_dataset(
        "msmarco",
        corpus=str(msmarco / "collection.tsv"),
        queries=str(msmarco / "queries.train.tsv"),
        cache_dir=cache,
    )
    assert got == MSMARCO_GROUPS
    first_two = load_inranker_dataset(
        "msmarco",
        corpus=str(msmarco / "collection.tsv"),
        queries=str(msmarco / "queries.train.tsv"),
        cache_dir=cache,
        max_rows=2,
    )
    assert first_two == MSMARCO_GROUPS[:1]


def test_inranker_msmarco_default_texts_from_mmarco(
    msmarco: Path, cache: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mmarco = msmarco / "mmarco"
    text(mmarco / "README.md", MMARCO_README)
    pids = [{"id": int(pid), "text": t} for pid, t in (line.split("\t") for line in COLLECTION.splitlines())]
    qids = [{"id": int(qid), "text": t} for qid, t in (line.split("\t") for line in QUERIES.splitlines())]
    jsonl(mmarco / "collection" / "english.jsonl", pids)
    jsonl(mmarco / "queries" / "english_train.jsonl", qids)
    monkeypatch.setattr(hub, "MMARCO", str(mmarco))
    assert load_inranker_dataset("msmarco", cache_dir=cache) == MSMARCO_GROUPS
    with pytest.raises(DataError, match="queries-french"):  # no such config in the toy repo
        load_inranker_dataset("msmarco", language="french", cache_dir=cache)


def test_inranker_msmarco_local_copy_of_the_tsv(msmarco: Path, cache: str) -> None:
    local = text(msmarco / "mine.tsv", "1.0\t0.5\t200\t7\n")
    got = load_inranker_dataset(
        "msmarco",
        data_files=str(local),
        corpus=str(msmarco / "collection.tsv"),
        queries=str(msmarco / "queries.train.tsv"),
        cache_dir=cache,
    )
    assert got == MSMARCO_GROUPS[1:]


@pytest.mark.parametrize(
    ("tsv", "field", "words"),
    [
        ("2.5\t-1.0\t100\t7\n1.0\t0.5\t200\t99\n", "[1].doc_id", "unknown passage id '99'"),
        ("2.5\t-1.0\t100\t7\n1.0\t0.5\t999\t7\n", "[1].query_id", "unknown query id '999'"),
        ("2.5\t-1.0\t100\t7\nnan\t0.5\t200\t7\n", "[1].positive_score", "expected a finite number"),
        ("2.5\tx\t100\t7\n", "[0].negative_score", "expected a finite number, got 'x'"),
        ("2.5\t-1.0\t100\t7\n1.0\t0.5\t200\n", "[1].doc_id", "is empty"),
    ],
)
def test_inranker_msmarco_bad_rows(msmarco: Path, cache: str, tsv: str, field: str, words: str) -> None:
    text(msmarco / "InRanker-msmarco" / "InRanker_msmarco.tsv", tsv)
    with pytest.raises(DataError) as err:
        load_inranker_dataset(
            "msmarco",
            corpus=str(msmarco / "collection.tsv"),
            queries=str(msmarco / "queries.train.tsv"),
            cache_dir=cache,
        )
    message = check(err, msmarco / "InRanker-msmarco", None, field)
    assert words in message


def test_inranker_msmarco_bad_text_file(msmarco: Path, cache: str) -> None:
    corpus = text(msmarco / "collection.tsv", "7\tCats purr.\n8 Lions roar.\n")
    with pytest.raises(DataError) as err:
        load_inranker_dataset(
            "msmarco", corpus=str(corpus), queries=str(msmarco / "queries.train.tsv"), cache_dir=cache
        )
    assert "separated by tabs" in check(err, corpus, 2, "text")


def test_inranker_offline_is_one_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError(f"Couldn't reach '{args[0]}' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr("datasets.load_dataset", fail)
    with pytest.raises(DataError, match="could not load 'unicamp-dl/InRanker-BEIR' from the Hugging Face hub"):
        load_inranker_dataset("beir")
    with pytest.raises(DataError, match="could not load 'unicamp-dl/InRanker-msmarco'"):
        load_inranker_dataset("msmarco")
    with pytest.raises(DataError, match="could not load 'someone/soft-labels'"):
        read_training_file("someone/soft-labels")
