"""Datasets from the Hugging Face hub, loaded with ``datasets.load_dataset``.

``name`` may also be a local folder laid out like a hub repo (that is how the tests run
offline). A BEIR dataset is a repo ``name`` whose README.md declares the configs ``corpus`` and
``queries`` (splits of the same names, columns ``_id``, ``title``, ``text``), plus a repo
``name + "-qrels"`` whose split files (``test.tsv``, ...) have the columns ``query-id``,
``corpus-id`` and ``score``. Rows are validated as strictly as local files; errors name the
dataset and a row path such as ``corpus[12].text``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from distilrank.data.parsing import (
    SHAPES_HINT,
    Where,
    add_judgment,
    detect_training_shape,
    id_field,
    no_duplicate,
    parse_training_record,
    passage_from_record,
    query_from_record,
)
from distilrank.data.records import Group, LabeledPair, Passage, Query, RetrievalDataset
from distilrank.errors import DataError

__all__ = ["load_beir_hub", "load_training_hub"]

BEIR_HUB_HINT = (
    "a BEIR hub dataset has configs 'corpus' and 'queries' (columns _id, title, text) and a "
    "'<name>-qrels' dataset (columns query-id, corpus-id, score)"
)
# BEIR calls it "dev"; datasets names a dev.tsv file's split "validation"
_SPLIT_ALIASES = {"dev": "validation", "validation": "dev"}
_NUMBERED_NEGATIVE = re.compile(r"negative_(\d+)")


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text[:300]}"


def _load(name: str, config: str | None, split: str, cache_dir: str | None) -> Any:
    """``datasets.load_dataset(name, config, split=split)``; any failure becomes a DataError."""
    import datasets  # heavy: imported only when the hub is actually used

    first_error: Exception | None = None
    for candidate in (split, _SPLIT_ALIASES.get(split)):
        if candidate is None:
            break
        try:
            return datasets.load_dataset(name, config, split=candidate, cache_dir=cache_dir)
        except Exception as exc:  # offline, not found, bad config or split, bad files...
            first_error = first_error or exc
            if "Unknown split" not in str(exc):
                break
    assert first_error is not None
    where = f" (config {config!r}, split {split!r})" if config else f" (split {split!r})"
    message = (
        f"could not load {name!r} from the Hugging Face hub: {_reason(first_error)}{where}; "
        "pass a local file or folder instead, or check the name and your network"
    )
    raise DataError(message) from first_error


def _require_columns(ds: Any, required: Iterable[str], name: str, what: str, hint: str) -> None:
    columns = list(ds.column_names)
    for column in required:
        if column not in columns:
            message = f"{what} has no column {column!r} (columns: {', '.join(columns)})"
            raise DataError(message, path=name, field=column, hint=hint)


def _records(
    ds: Any, name: str, config: str, make: Callable[[Mapping[str, Any], Where], Any]
) -> dict[str, Any]:
    _require_columns(ds, ("_id", "text"), name, f"config {config!r}", BEIR_HUB_HINT)
    records: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for i, row in enumerate(ds):
        where = Where(name, None, f"{config}[{i}].")
        record = make(row, where)
        no_duplicate(seen, record.id, where, "_id")
        records[record.id] = record
    if not records:
        raise DataError(f"config {config!r} has no rows", path=name, hint=BEIR_HUB_HINT)
    return records


def _qrels(
    ds: Any, name: str, split: str, queries: dict[str, Query], corpus: dict[str, Passage]
) -> dict[str, dict[str, int]]:
    columns = ("query-id", "corpus-id", "score")
    _require_columns(ds, columns, name, f"split {split!r}", BEIR_HUB_HINT)
    qrels: dict[str, dict[str, int]] = {}
    for i, row in enumerate(ds):
        where = Where(name, None, f"{split}[{i}].")
        qid, did, grade = (
            id_field(row, "query-id", where),
            id_field(row, "corpus-id", where),
            row["score"],
        )
        if isinstance(grade, bool) or not isinstance(grade, int):
            raise where.error(f"expected an integer grade, got {grade!r}", "score", "use 0, 1, 2")
        if qid not in queries:
            raise where.error(f"unknown query id {qid!r}", "query-id", "it is not in 'queries'")
        if did not in corpus:
            raise where.error(f"unknown document id {did!r}", "corpus-id", "it is not in 'corpus'")
        add_judgment(qrels, qid, did, grade, where, "corpus-id")
    if not qrels:
        raise DataError(f"split {split!r} has no judgments", path=name, hint=BEIR_HUB_HINT)
    return qrels


def load_beir_hub(
    name: str, split: str = "test", *, cache_dir: str | None = None
) -> RetrievalDataset:
    """A BEIR dataset from the hub (e.g. ``BeIR/scifact``); only queries judged in ``split``."""
    corpus = _records(
        _load(name, "corpus", "corpus", cache_dir), name, "corpus", passage_from_record
    )
    queries = _records(
        _load(name, "queries", "queries", cache_dir), name, "queries", query_from_record
    )
    qrels_name = f"{name}-qrels"
    qrels = _qrels(_load(qrels_name, None, split, cache_dir), qrels_name, split, queries, corpus)
    kept = {qid: query for qid, query in queries.items() if qid in qrels}
    short = name.rstrip("/\\").replace("\\", "/").split("/")[-1]
    return RetrievalDataset(corpus=corpus, queries=kept, qrels=qrels, name=short)


def load_training_hub(
    name: str, split: str = "train", *, config: str | None = None, cache_dir: str | None = None
) -> list[Group] | list[LabeledPair]:
    """Training examples from a hub dataset whose columns form triplets, groups or pairs.

    Column names as in local files (query/positive/negative, query/positive/negatives[/scores],
    query/passage/label) or sentence-transformers style (``anchor`` for ``query``, and
    ``negative_1``, ``negative_2``, ... gathered into a group's negatives).
    """
    ds = _load(name, config, split, cache_dir)
    columns = list(ds.column_names)
    numbered = sorted(
        (c for c in columns if _NUMBERED_NEGATIVE.fullmatch(c)), key=lambda c: int(c[9:])
    )
    gather = bool(numbered) and "negatives" not in columns
    keys = [*columns, "negatives"] if gather else columns
    shape = detect_training_shape(keys, Where(name))
    records: list[Any] = []
    for i, row in enumerate(ds):
        if gather:
            row = {**row, "negatives": [row[c] for c in numbered]}
        records.append(parse_training_record(row, shape, Where(name, None, f"[{i}]."), "[0]"))
    if not records:
        raise DataError(f"split {split!r} has no rows", path=name, hint=SHAPES_HINT)
    return records
