"""Strict, validated readers for retrieval data (BEIR, TREC, rank_llm) and training files.

Every mistake in a user's file raises :class:`DataError` naming the file, the 1-based line (or,
for whole-file JSON, a record path such as ``[3].hits[7].content``), the field, and a fix.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from distilrank.data.parsing import (
    SHAPES_HINT,
    SOFT_HINT,
    SoftGroupCollector,
    StrPath,
    Where,
    add_judgment,
    detect_training_shape,
    get_field,
    id_field,
    iter_columns,
    iter_jsonl,
    json_type,
    load_json,
    no_duplicate,
    number_field,
    parse_float,
    parse_int,
    parse_training_record,
    passage_from_record,
    query_from_record,
    sort_hits,
    text_field,
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
from distilrank.errors import DataError

__all__ = [
    "iter_jsonl",
    "load_dataset_spec",
    "read_beir",
    "read_rank_llm_json",
    "read_soft_labels",
    "read_topics",
    "read_training_file",
    "read_trec_folder",
    "read_trec_qrels",
    "read_trec_run",
]

BEIR_HINT = "a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv"
TREC_HINT = (
    "a TREC folder holds a rank_llm JSON run (*.json, with passage text), qrels*.txt "
    "and optionally topics*.txt and a TREC run (trec_results*.txt or *.run)"
)
_FILE_SUFFIXES = {".jsonl", ".json", ".tsv", ".txt", ".csv", ".run"}


# ---------------------------------------------------------------------------- BEIR


def _read_beir_jsonl(path: Path, kind: str) -> dict[str, Any]:
    records: dict[str, Any] = {}
    seen: dict[str, str] = {}
    make = passage_from_record if kind == "corpus" else query_from_record
    for line_no, obj in iter_jsonl(path):
        where = Where(str(path), line_no)
        record = make(obj, where)
        no_duplicate(seen, record.id, where, "_id")
        records[record.id] = record
    if not records:
        raise DataError(f"has no {kind} records", path=path, hint=BEIR_HINT)
    return records


def _qrels_split_file(folder: Path, split: str) -> Path:
    path = folder / "qrels" / f"{split}.tsv"
    if path.is_file():
        return path
    splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
    hint = f"splits in this folder: {', '.join(splits)}" if splits else BEIR_HINT
    raise DataError(f"no qrels file for split {split!r}", path=path, hint=hint)


def read_beir(folder: StrPath, split: str = "test") -> RetrievalDataset:
    """Read a BEIR folder; only queries judged in ``qrels/<split>.tsv`` are kept."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("no such folder", path=folder, hint=BEIR_HINT)
    corpus = _read_beir_jsonl(folder / "corpus.jsonl", "corpus")
    queries = _read_beir_jsonl(folder / "queries.jsonl", "queries")
    qrels_path = _qrels_split_file(folder, split)
    qrels: dict[str, dict[str, int]] = {}
    names = ("query-id", "corpus-id", "score")
    for line_no, (qid, did, score) in iter_columns(qrels_path, names, "\t", header=True):
        where = Where(str(qrels_path), line_no)
        if qid not in queries:
            raise where.error(
                f"unknown query id {qid!r}", "query-id", "add it to queries.jsonl or drop this line"
            )
        if did not in corpus:
            raise where.error(
                f"unknown document id {did!r}",
                "corpus-id",
                "add it to corpus.jsonl or drop this line",
            )
        add_judgment(qrels, qid, did, parse_int(score, where, "score"), where, "corpus-id")
    if not qrels:
        raise DataError(
            "has no judgments", path=qrels_path, hint="add query-id/corpus-id/score lines"
        )
    kept = {qid: query for qid, query in queries.items() if qid in qrels}
    return RetrievalDataset(corpus=corpus, queries=kept, qrels=qrels, name=folder.resolve().name)


# ---------------------------------------------------------------------------- TREC formats


def read_trec_run(path: StrPath, lines: Iterable[tuple[int, str]] | None = None) -> Run:
    """A TREC run (``qid Q0 docid rank score tag``), each query sorted by score, ties by rank.

    ``lines`` (line number, text) are the file's lines when they were read elsewhere (e.g. by ``datasets``).
    """
    path = Path(path)
    rows: dict[str, list[tuple[float, int, str]]] = {}
    seen: dict[str, str] = {}
    names = ("qid", "Q0", "docid", "rank", "score", "tag")
    for line_no, (qid, _, did, rank, score, _) in iter_columns(path, names, None, lines=lines):
        where = Where(str(path), line_no)
        no_duplicate(seen, f"{qid} {did}", where, "docid")
        row = (parse_float(score, where, "score"), parse_int(rank, where, "rank"), did)
        rows.setdefault(qid, []).append(row)
    if not rows:
        raise DataError(
            "the run is empty", path=path, hint="write lines `qid Q0 docid rank score tag`"
        )
    return {qid: sort_hits(hits) for qid, hits in rows.items()}


def read_trec_qrels(path: StrPath) -> dict[str, dict[str, int]]:
    """TREC qrels (``qid iter docid grade``) as query id -> doc id -> grade."""
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    for line_no, (qid, _, did, grade) in iter_columns(
        path, ("qid", "iter", "docid", "grade"), None
    ):
        where = Where(str(path), line_no)
        add_judgment(qrels, qid, did, parse_int(grade, where, "grade"), where, "docid")
    if not qrels:
        raise DataError("has no judgments", path=path, hint="write lines `qid 0 docid grade`")
    return qrels


def read_topics(path: StrPath) -> dict[str, Query]:
    """Topics as ``qid<TAB>text`` lines."""
    path = Path(path)
    topics: dict[str, Query] = {}
    seen: dict[str, str] = {}
    for line_no, (qid, text) in iter_columns(path, ("qid", "text"), "\t", maxsplit=1):
        no_duplicate(seen, qid, Where(str(path), line_no), "qid")
        topics[qid] = Query(id=qid, text=text)
    if not topics:
        raise DataError("has no topics", path=path, hint="write lines `qid<TAB>query text`")
    return topics


def _read_hits(
    hits: list[Any], where: Where, corpus: dict[str, Passage], first_seen: dict[str, str]
) -> tuple[str, list[tuple[str, float]]]:
    qid: str | None = None
    rows: list[tuple[float, int, str]] = []
    dup: dict[str, str] = {}
    for j, hit in enumerate(hits):
        at = Where(where.path, None, f"{where.prefix}hits[{j}].")
        if not isinstance(hit, dict):
            raise at.error(f"expected an object, got {json_type(hit)}", hint="see rank_llm format")
        hit_qid, did = id_field(hit, "qid", at), id_field(hit, "docid", at)
        content = text_field(hit, "content", at)
        rank = number_field(hit, "rank", at)
        if not rank.is_integer():
            raise at.error(f"expected an integer, got {rank}", "rank", "ranks are 1, 2, 3, ...")
        score = number_field(hit, "score", at)
        if qid is not None and hit_qid != qid:
            message = f"qid {hit_qid!r} differs from the first hit's qid {qid!r}"
            raise at.error(message, "qid", "all hits of one entry belong to one query")
        qid = hit_qid
        no_duplicate(dup, did, at, "docid")
        if did in corpus and corpus[did].text != content:
            message = f"document {did!r} has a different text than at {first_seen[did]}"
            raise at.error(message, "content", "one docid must always carry the same text")
        corpus[did] = Passage(id=did, text=content)
        first_seen.setdefault(did, at.describe())
        rows.append((score, int(rank), did))
    assert qid is not None
    return qid, sort_hits(rows)


def read_run_spec(spec: str) -> Run:
    """A run to rerank or learn from: a rank_llm ``.json``, a TREC run file, or a remote TREC run (a URL or
    ``hf://datasets/...`` path, read through ``datasets``; see :func:`distilrank.data.hub.load_run_hub`)."""
    from distilrank.data.hub import is_remote, load_run_hub

    if is_remote(spec):
        return load_run_hub(spec)
    return read_rank_llm_json(spec)[2] if spec.endswith(".json") else read_trec_run(spec)


def read_rank_llm_json(path: StrPath) -> tuple[dict[str, Query], dict[str, Passage], Run]:
    """A rank_llm run: ``[{"query": str, "hits": [{content, qid, docid, rank, score}]}]``."""
    path = Path(path)
    data = load_json(path)
    hint = 'the file must be a list of {"query": ..., "hits": [...]} objects'
    if not isinstance(data, list) or not data:
        raise DataError(
            f"expected a non-empty JSON list, got {json_type(data)}", path=path, hint=hint
        )
    queries: dict[str, Query] = {}
    corpus: dict[str, Passage] = {}
    run: Run = {}
    first_seen: dict[str, str] = {}
    for i, entry in enumerate(data):
        where = Where(str(path), None, f"[{i}].")
        if not isinstance(entry, dict):
            raise where.error(f"expected an object, got {json_type(entry)}", hint=hint)
        text = text_field(entry, "query", where)
        hits = get_field(entry, "hits", where)
        if not isinstance(hits, list) or not hits:
            raise where.error("expected a non-empty list of hits", "hits", hint)
        qid, ranked = _read_hits(hits, where, corpus, first_seen)
        if qid in queries:
            message = f"query id {qid!r} repeats an earlier entry"
            raise where.error(message, "hits[0].qid", "merge the two entries or drop one")
        queries[qid] = Query(id=qid, text=text)
        run[qid] = ranked
    return queries, corpus, run


def _one(folder: Path, patterns: Iterable[str], what: str) -> Path | None:
    found = sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()})
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DataError(f"found several {what}s ({names})", path=folder, hint="keep only one")
    return found[0] if found else None


def read_trec_folder(folder: StrPath) -> tuple[RetrievalDataset, Run]:
    """A folder with a rank_llm JSON run, qrels and topics; returns the dataset and the run."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("no such folder", path=folder, hint=TREC_HINT)
    json_run = _one(folder, ["*.json"], "JSON run")
    trec_run = _one(folder, ["trec_results*.txt", "*.run"], "TREC run")
    qrels_file = _one(folder, ["qrels*.txt"], "qrels file")
    topics_file = _one(folder, ["topics*.txt"], "topics file")
    if json_run is None:
        if trec_run is not None:
            message = "passage text is needed, but a TREC run holds only ids and scores"
            raise DataError(message, path=trec_run, hint="add the rank_llm JSON run; " + TREC_HINT)
        raise DataError("no first-stage run found", path=folder, hint=TREC_HINT)
    if qrels_file is None:
        raise DataError("no qrels*.txt file", path=folder, hint=TREC_HINT)
    json_queries, corpus, run = read_rank_llm_json(json_run)
    topics = json_queries if topics_file is None else read_topics(topics_file)
    missing = [qid for qid in run if qid not in topics]
    if missing:
        message = f"{len(missing)} queries of {json_run.name} are missing, e.g. {missing[0]!r}"
        raise DataError(message, path=topics_file, hint="use the topics that belong to the run")
    queries = {qid: topics[qid] for qid in run}
    qrels = {qid: judged for qid, judged in read_trec_qrels(qrels_file).items() if qid in queries}
    if not qrels:
        message = f"no judgments for any query of {json_run.name}"
        raise DataError(message, path=qrels_file, hint="use the qrels that belong to the run")
    return RetrievalDataset(corpus, queries, qrels, name=folder.resolve().name), run


# ---------------------------------------------------------------------------- training files


def _looks_local(spec: str) -> bool:
    """Whether a name that does not exist was meant as a local path rather than a hub name."""
    return (
        spec.startswith((".", "/", "~"))
        or "\\" in spec
        or (os.sep != "/" and os.sep in spec)
        or spec.count("/") > 1
        or Path(spec).suffix.lower() in _FILE_SUFFIXES
    )


TRAINING_SUFFIXES = (".jsonl", ".tsv")


def is_training_file(spec: str) -> bool:
    """Whether a ``data=`` spec names a training file (groups, triplets, pairs, soft labels) rather than a
    dataset folder or hub name: an existing file, or a missing path with a training file's suffix."""
    path = Path(spec).expanduser()
    return path.is_file() or (not path.exists() and path.suffix.lower() in TRAINING_SUFFIXES)


def _read_triples_tsv(path: Path) -> list[Group]:
    groups = [
        Group(query=query, positive=positive, negatives=(negative,))
        for _, (query, positive, negative) in iter_columns(
            path, ("query", "positive", "negative"), "\t"
        )
    ]
    if not groups:
        raise DataError("has no triples", path=path, hint="write `query<TAB>positive<TAB>negative`")
    return groups


def read_soft_labels(path: StrPath) -> list[SoftGroup]:
    """A teacher's soft labels: jsonl rows grouped by query into :class:`SoftGroup` records.

    Rows are ``{query, contents, true_logit, false_logit}`` (a seq2seq teacher; InRanker's
    custom-dataset format, read as is) or ``{query, contents, score}`` (a cross-encoder
    teacher); one file holds one kind. Other fields are ignored, except ``query_id``: when
    present it is the grouping key instead of the query text. Groups come in order of first
    appearance, documents in file order.
    """
    file = Path(path).expanduser()
    collector = SoftGroupCollector()
    for line_no, obj in iter_jsonl(file, hint=f"each line must hold one JSON object; {SOFT_HINT}"):
        collector.add(obj, Where(str(file), line_no))
    if not collector.rows:
        raise DataError("has no soft-label rows", path=file, hint=SOFT_HINT)
    return collector.groups()


def read_training_file(path: StrPath) -> list[Group] | list[LabeledPair] | list[SoftGroup]:
    """Training examples from a .jsonl file (triplets, groups, labeled pairs or soft labels) or a
    triples .tsv.

    A file whose first row has ``contents`` holds soft labels: see :func:`read_soft_labels`.
    A name that is not an existing path and does not look like one (``owner/name``) is loaded
    from the Hugging Face hub.
    """
    file = Path(path).expanduser()
    if not file.exists():
        if _looks_local(str(path)):
            raise DataError("no such file or folder", path=file, hint="check the path")
        from distilrank.data.hub import load_training_hub

        return load_training_hub(str(path))
    if file.is_dir():
        raise DataError(
            "is a folder, expected a training file", path=file, hint="pass a .jsonl/.tsv"
        )
    if file.suffix.lower() == ".tsv":
        return _read_triples_tsv(file)
    records: list[Any] = []
    shape, first = "", ""
    for line_no, obj in iter_jsonl(file):
        where = Where(str(file), line_no)
        if not shape:
            shape, first = detect_training_shape(obj.keys(), where), f"line {line_no}"
            if shape == "soft":  # rows are grouped by query: a reader of its own
                return read_soft_labels(file)
        records.append(parse_training_record(obj, shape, where, first))
    if not records:
        raise DataError("has no training examples", path=file, hint=SHAPES_HINT)
    return records


# ---------------------------------------------------------------------------- dispatch


def load_dataset_spec(spec: str, split: str) -> tuple[RetrievalDataset, Run | None]:
    """An evaluation dataset from a BEIR folder, a TREC folder or a Hugging Face hub name.

    Returns the dataset and, for a TREC folder, its first-stage run (else ``None``).
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "corpus.jsonl").is_file():
            return read_beir(path, split), None
        if any(path.glob("*.json")) or any(path.glob("trec_results*")) or any(path.glob("*.run")):
            return read_trec_folder(path)
        raise DataError(
            "is neither a BEIR nor a TREC folder", path=path, hint=f"{BEIR_HINT}; {TREC_HINT}"
        )
    if path.exists():
        raise DataError("is a file, expected a dataset folder", path=path, hint=BEIR_HINT)
    if _looks_local(spec):
        hint = "check the path, or pass a Hugging Face dataset name such as BeIR/scifact"
        raise DataError("no such file or folder", path=path, hint=hint)
    from distilrank.data.hub import load_beir_hub

    return load_beir_hub(spec, split), None
