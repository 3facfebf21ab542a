"""Datasets from the Hugging Face hub, loaded with ``datasets.load_dataset``.

``name`` may also be a local folder laid out like a hub repo (that is how the tests run
offline). A BEIR dataset is a repo ``name`` whose README.md declares the configs ``corpus`` and
``queries`` (splits of the same names, columns ``_id``, ``title``, ``text``), plus a repo
``name + "-qrels"`` whose split files (``test.tsv``, ...) have the columns ``query-id``,
``corpus-id`` and ``score``. Rows are validated as strictly as local files; errors name the
dataset and a row path such as ``corpus[12].text``.

Soft labels (a teacher's scores for distillation) are datasets with the columns ``query,
contents, true_logit, false_logit`` or ``query, contents, score``; InRanker's published ones
load with :func:`load_inranker_dataset`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from distilrank.data.parsing import (
    SHAPES_HINT,
    SOFT_HINT,
    SoftGroupCollector,
    Where,
    add_judgment,
    detect_training_shape,
    id_field,
    iter_columns,
    no_duplicate,
    parse_float,
    parse_training_record,
    passage_from_record,
    query_from_record,
)
from distilrank.data.records import (
    Group,
    LabeledPair,
    Passage,
    Query,
    RetrievalDataset,
    Run,
    SoftGroup,
)
from distilrank.errors import ConfigError, DataError

__all__ = ["is_remote", "load_beir_hub", "load_inranker_dataset", "load_run_hub", "load_soft_labels_hub",
           "load_training_hub"]

# InRanker's published soft labels (monoT5-3B teacher) and the MS MARCO texts they refer to.
INRANKER_BEIR = "unicamp-dl/InRanker-BEIR"
INRANKER_BEIR_FILE = "inpars_beir_dataset.jsonl"
INRANKER_MSMARCO = "unicamp-dl/InRanker-msmarco"
INRANKER_MSMARCO_FILE = "InRanker_msmarco.tsv"
MMARCO = "unicamp-dl/mmarco"
# InRanker_msmarco.tsv has no header: true logit, false logit, query id, passage id
MSMARCO_COLUMNS = ("positive_score", "negative_score", "query_id", "doc_id")
MSMARCO_HINT = (
    "each line of InRanker_msmarco.tsv is positive_score<TAB>negative_score<TAB>query_id<TAB>"
    "doc_id: the teacher's true and false logits for an MS MARCO train query and passage"
)

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


def _load(name: str, config: str | None, split: str, cache_dir: str | None, shown: str = "",
          **options: Any) -> Any:
    """``datasets.load_dataset(name, config, split=split, **options)``; any failure becomes a DataError that
    names ``shown`` (default ``name``)."""
    import datasets  # heavy: imported only when the hub is actually used

    first_error: Exception | None = None
    for candidate in (split, _SPLIT_ALIASES.get(split)):
        if candidate is None:
            break
        try:
            return datasets.load_dataset(
                name, config, split=candidate, cache_dir=cache_dir, **options
            )
        except Exception as exc:  # offline, not found, bad config or split, bad files...
            first_error = first_error or exc
            if "Unknown split" not in str(exc):
                break
    assert first_error is not None
    where = f" (config {config!r}, split {split!r})" if config else f" (split {split!r})"
    message = (
        f"could not load {shown or name!r} {'through datasets' if shown else 'from the Hugging Face hub'}: "
        f"{_reason(first_error)}{where}; "
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
) -> list[Group] | list[LabeledPair] | list[SoftGroup]:
    """Training examples from a hub dataset whose columns form triplets, groups, pairs or soft labels.

    Column names as in local files (query/positive/negative, query/positive/negatives[/scores],
    query/passage/label, query/contents/true_logit/false_logit or query/contents/score) or
    sentence-transformers style (``anchor`` for ``query``, and ``negative_1``, ``negative_2``,
    ... gathered into a group's negatives).
    """
    ds = _load(name, config, split, cache_dir)
    columns = list(ds.column_names)
    numbered = sorted(
        (c for c in columns if _NUMBERED_NEGATIVE.fullmatch(c)), key=lambda c: int(c[9:])
    )
    gather = bool(numbered) and "negatives" not in columns
    keys = [*columns, "negatives"] if gather else columns
    shape = detect_training_shape(keys, Where(name))
    if shape == "soft":
        return _soft_groups(ds, name, 0)
    records: list[Any] = []
    for i, row in enumerate(ds):
        if gather:
            row = {**row, "negatives": [row[c] for c in numbered]}
        records.append(parse_training_record(row, shape, Where(name, None, f"[{i}]."), "[0]"))
    if not records:
        raise DataError(f"split {split!r} has no rows", path=name, hint=SHAPES_HINT)
    return records


# ---------------------------------------------------------------------------- soft labels


def _rows(ds: Any, max_rows: int) -> Iterator[dict[str, Any]]:
    """Rows as dicts, read in batches (far faster than ``for row in ds``); the first ``max_rows`` if > 0."""
    if max_rows > 0 and len(ds) > max_rows:
        ds = ds.select(range(max_rows))
    for batch in ds.iter(batch_size=8192):
        names = list(batch)
        for values in zip(*batch.values(), strict=True):
            yield dict(zip(names, values, strict=True))


def _soft_groups(ds: Any, name: str, max_rows: int) -> list[SoftGroup]:
    """Validate and group a soft-label dataset's rows; errors name ``name`` and a row like ``[12].true_logit``."""
    _require_columns(ds, ("query", "contents"), name, "the dataset", SOFT_HINT)
    columns = set(ds.column_names)
    if not columns & {"true_logit", "false_logit", "score"}:
        message = f"the dataset has no teacher labels (columns: {', '.join(ds.column_names)})"
        raise DataError(message, path=name, field="true_logit", hint=SOFT_HINT)
    collector = SoftGroupCollector()
    for i, row in enumerate(_rows(ds, max_rows)):
        collector.add(row, Where(name, None, f"[{i}]."))
    if not collector.rows:
        raise DataError("the dataset has no rows", path=name, hint=SOFT_HINT)
    return collector.groups()


def load_soft_labels_hub(
    name: str,
    split: str = "train",
    *,
    config: str | None = None,
    data_files: str | None = None,
    cache_dir: str | None = None,
    max_rows: int = 0,
) -> list[SoftGroup]:
    """Soft labels from a hub dataset (or a local folder laid out like one), grouped by query.

    The columns are ``query, contents, true_logit, false_logit`` (a seq2seq teacher) or
    ``query, contents, score`` (a cross-encoder teacher), validated row by row like
    :func:`distilrank.data.read_soft_labels`. ``max_rows`` > 0 reads only the first rows.
    """
    ds = _load(name, config, split, cache_dir, data_files=data_files)
    return _soft_groups(ds, name, max_rows)


def _source(repo: str, data_files: str | None, default: str) -> tuple[str, str, str]:
    """(what to load, its data_files, the name errors show) for a repo's file or a local copy.

    A ``data_files`` naming an existing local file goes through datasets' csv/json builder.
    """
    local = Path(data_files).expanduser() if data_files else None
    if local is not None and local.is_file():
        builder = "csv" if local.suffix.lower() in (".tsv", ".csv") else "json"
        return builder, str(local), str(local)
    return repo, data_files or default, repo


def load_inranker_dataset(
    which: str = "beir",
    *,
    data_files: str | None = None,
    corpus: str | None = None,
    queries: str | None = None,
    language: str = "english",
    cache_dir: str | None = None,
    max_rows: int = 0,
) -> list[SoftGroup]:
    """InRanker's published soft labels (monoT5-3B logits), as ``InRankerTrainer`` loads them.

    ``which="beir"``: ``unicamp-dl/InRanker-BEIR`` (``inpars_beir_dataset.jsonl``: synthetic
    InPars queries on BEIR corpora), used for the second distillation stage.
    ``which="msmarco"``: ``unicamp-dl/InRanker-msmarco`` (``InRanker_msmarco.tsv``: logits and
    ids), the first stage; texts come from ``corpus`` (``pid<TAB>text``, e.g. MS MARCO's
    ``collection.tsv``) and ``queries`` (``qid<TAB>text``, ``queries.train.tsv``), or by
    default from ``unicamp-dl/mmarco`` (configs ``collection-{language}``, ``queries-{language}``).
    Any other ``which`` is a soft-label dataset name or folder for :func:`load_soft_labels_hub`.
    ``data_files`` overrides the file inside the repo, or names a local copy of it.
    ``max_rows`` > 0 reads only the first rows (InRanker stops at 12.8M for MS MARCO).
    """
    key = which.strip().lower()
    is_msmarco = key in ("msmarco", INRANKER_MSMARCO.lower())
    if (corpus or queries) and not is_msmarco:
        raise ConfigError("corpus and queries give MS MARCO texts: they only apply to which='msmarco'")
    if is_msmarco:
        return _load_inranker_msmarco(data_files, corpus, queries, language, cache_dir, max_rows)
    if key in ("beir", INRANKER_BEIR.lower()):
        path, files, name = _source(INRANKER_BEIR, data_files, INRANKER_BEIR_FILE)
        return _soft_groups(_load(path, None, "train", cache_dir, data_files=files), name, max_rows)
    return load_soft_labels_hub(which, data_files=data_files, cache_dir=cache_dir, max_rows=max_rows)


REMOTE_PREFIXES = ("hf://", "http://", "https://")
# Rank-DistiLLM (Schlatt et al., 2024): MS MARCO training queries re-ranked by RankZephyr / RankGPT-4 Turbo,
# published as TREC run files, e.g. RANK_DISTILLM + "__rankzephyr-colbert-10000-sampled-100__msmarco-passage-train-judged.run"
RANK_DISTILLM = "https://zenodo.org/records/12528410/files/"


def is_remote(spec: str) -> bool:
    """A URL or an ``hf://`` path: read through ``datasets``, not from the local disk."""
    return spec.strip().lower().startswith(REMOTE_PREFIXES)


def load_run_hub(spec: str, cache_dir: str | None = None) -> Run:
    """A TREC run file (``qid Q0 docid rank score tag``) read through ``datasets.load_dataset("text", ...)``.

    ``spec`` is what ``data_files`` takes: an ``hf://datasets/owner/name/file.run`` path, a URL such as one of
    Rank-DistiLLM's runs (:data:`RANK_DISTILLM` + file name), or a local file. Lines are checked as strictly
    as a local run's; errors name ``spec`` and the line.
    """
    from distilrank.data.readers import read_trec_run

    ds = _load("text", None, "train", cache_dir, shown=spec, data_files=spec)
    return read_trec_run(spec, lines=((i + 1, row["text"]) for i, row in enumerate(ds)))


def _cell(row: Mapping[str, Any], key: str, where: Where) -> str:
    value = row[key]
    if value is None or not str(value).strip():
        raise where.error("is empty", key, MSMARCO_HINT)
    return str(value).strip()


def _msmarco_ids(
    ds: Any, name: str, max_rows: int
) -> dict[str, tuple[list[str], list[tuple[float, float]]]]:
    """query id -> (passage ids, (false, true) logits), queries in order of first appearance."""
    groups: dict[str, tuple[list[str], list[tuple[float, float]]]] = {}
    for i, row in enumerate(_rows(ds, max_rows)):
        where = Where(name, None, f"[{i}].")
        true, false = (parse_float(_cell(row, k, where), where, k) for k in MSMARCO_COLUMNS[:2])
        docs, logits = groups.setdefault(_cell(row, "query_id", where), ([], []))
        docs.append(_cell(row, "doc_id", where))
        logits.append((false, true))
    if not groups:
        raise DataError("the dataset has no rows", path=name, hint=MSMARCO_HINT)
    return groups


def _id_texts(
    source: str | None, kind: str, language: str, needed: set[str], cache_dir: str | None
) -> tuple[dict[str, str], str]:
    """Texts of the ``needed`` ids of ``kind`` ('collection' or 'queries') and the source's name.

    Only the needed texts are kept: the MS MARCO collection has 8.8M passages.
    """
    texts: dict[str, str] = {}
    if source is not None:
        path = Path(source).expanduser()
        for _, (key, text) in iter_columns(path, ("id", "text"), "\t", maxsplit=1):
            if key in needed:
                texts.setdefault(key, text)
        return texts, str(path)
    import pyarrow as pa  # comes with datasets
    import pyarrow.compute as pc

    config = f"{kind}-{language}"
    ds = _load(MMARCO, config, "collection" if kind == "collection" else "train", cache_dir)
    _require_columns(ds, ("id", "text"), MMARCO, f"config {config!r}", "mmarco rows are {id, text}")
    wanted = pa.array(sorted(needed), pa.string())
    for table in ds.with_format("arrow").iter(batch_size=65536):
        ids = pc.cast(table["id"], pa.string())  # ids are integers in mmarco
        mask = pc.is_in(ids, value_set=wanted)  # vectorised: no Python loop over 8.8M rows
        for key, text in zip(ids.filter(mask).to_pylist(), table["text"].filter(mask).to_pylist(), strict=True):
            if isinstance(text, str) and text.strip():
                texts.setdefault(key, text)
    return texts, f"{MMARCO} ({config})"


def _check_known(
    ds: Any, name: str, max_rows: int, column: str, known: Mapping[str, str], source: str
) -> None:
    """Raise for the first row whose id has no text in ``known`` (rescans: error path only)."""
    what = "query" if column == "query_id" else "passage"
    for i, row in enumerate(_rows(ds, max_rows)):
        key = str(row[column]).strip()
        if key not in known:
            message = f"unknown {what} id {key!r}: it has no text in {source}"
            hint = "use the MS MARCO collection and train queries the soft labels were made from"
            raise Where(name, None, f"[{i}].").error(message, column, hint)


def _load_inranker_msmarco(
    data_files: str | None,
    corpus: str | None,
    queries: str | None,
    language: str,
    cache_dir: str | None,
    max_rows: int,
) -> list[SoftGroup]:
    from datasets import Features, Value

    path, files, name = _source(INRANKER_MSMARCO, data_files, INRANKER_MSMARCO_FILE)
    # ids and logits read as text, so that they are checked here (and ids keep their spelling)
    features = Features({column: Value("string") for column in MSMARCO_COLUMNS})
    # keep_default_na=False: "nan" and empty cells reach the checks below as text, not as NaN
    options = {
        "sep": "\t",
        "header": None,
        "names": list(MSMARCO_COLUMNS),
        "features": features,
        "keep_default_na": False,
    }
    ds = _load(path, None, "train", cache_dir, data_files=files, **options)
    groups = _msmarco_ids(ds, name, max_rows)
    query_text, query_source = _id_texts(queries, "queries", language, set(groups), cache_dir)
    if len(query_text) < len(groups):
        _check_known(ds, name, max_rows, "query_id", query_text, query_source)
    needed = {did for docs, _ in groups.values() for did in docs}
    doc_text, doc_source = _id_texts(corpus, "collection", language, needed, cache_dir)
    if len(doc_text) < len(needed):
        _check_known(ds, name, max_rows, "doc_id", doc_text, doc_source)
    return [
        SoftGroup(
            query_text[qid],
            tuple(doc_text[did] for did in docs),
            tuple(true - false for false, true in logits),
            tuple(logits),
        )
        for qid, (docs, logits) in groups.items()
    ]
