"""``distilrank label``: a teacher's soft labels for (query, document) pairs, as jsonl.

A seq2seq (monoT5-style) teacher writes ``{query, contents, true_logit, false_logit}`` rows,
exactly InRanker's custom-dataset format; a cross-encoder teacher writes ``{query, contents,
score}``. Inputs with ids (BEIR, TREC) add ``query_id`` and ``doc_id``.

The job is split by queries into ``n`` shards (``shard=i/n``) so that n processes or GPUs share
it and a query's documents never straddle two files. Rows go to ``<output>.partial`` in chunks,
each flushed and fsynced, beside a ``<output>.partial.json`` fingerprint of the job; a killed run
started again with the same settings continues after the last complete row, and the finished
file is renamed into place, so ``output`` is never half-written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from distilrank.config import LabelConfig, parse_shard
from distilrank.data.records import Group, LabeledPair
from distilrank.errors import ConfigError, DataError
from distilrank.io import atomic_write_json, check_output_path, output_lock

logger = logging.getLogger(__name__)

LOGITS, SCORES = "logits", "scores"  # the kinds of labels: seq2seq [false, true] logits, or one score


@dataclass(frozen=True)
class LabelQuery:
    """One query and the documents to label for it; ids only when the input has them (BEIR, TREC)."""

    text: str
    docs: tuple[str, ...]
    query_id: str | None = None
    doc_ids: tuple[str, ...] | None = None


class Pairs:
    """The (query, document) pairs of a list of queries, in order: query by query, documents in order.

    Pairs are located by index without materialising one object per pair (millions of pairs).
    ``first_query`` is the index of ``queries[0]`` in the whole input, for error messages.
    """

    def __init__(self, queries: Sequence[LabelQuery], first_query: int = 0) -> None:
        self.queries = list(queries)
        self.first_query = first_query
        self.offsets = [0]  # offsets[q]: index of query q's first pair
        for q in self.queries:
            self.offsets.append(self.offsets[-1] + len(q.docs))

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, start: int, stop: int) -> Iterator[tuple[int, int]]:
        """(query index, document index) of pairs ``start .. stop-1``."""
        qi = bisect_right(self.offsets, start) - 1
        di = start - self.offsets[qi]
        for _ in range(start, stop):
            while di >= len(self.queries[qi].docs):
                qi, di = qi + 1, 0
            yield qi, di
            di += 1

    def digest(self) -> str:
        """sha256 of every id and text, in order: a resumed job must label the very same pairs."""
        h = hashlib.sha256()
        for q in self.queries:
            h.update(json.dumps([q.query_id, q.text, q.doc_ids, q.docs], ensure_ascii=False).encode())
        return h.hexdigest()


# ---------------------------------------------------------------------------- inputs


def queries_from_examples(examples: Sequence[Group | LabeledPair]) -> list[LabelQuery]:
    """Groups, triplets or labeled pairs -> one entry per distinct query text, in order of first appearance.

    A query's documents are each group's positive then negatives, in file order; the same
    (query, document) pair met again (triplet files repeat the positive) is labelled once.
    """
    docs: dict[str, dict[str, None]] = {}
    for example in examples:
        texts = example.documents if isinstance(example, Group) else (example.passage,)
        seen = docs.setdefault(example.query, {})
        for text in texts:
            seen.setdefault(text)
    return [LabelQuery(query, tuple(texts)) for query, texts in docs.items()]


def queries_from_dataset(cfg: LabelConfig) -> list[LabelQuery]:
    """A BEIR/TREC folder or hub dataset: each judged query of ``cfg.split`` with its first-stage top-k.

    Only judged queries are kept (that is what :func:`first_stage_run` returns), which suits
    labelling train splits; queries the first stage returns nothing for are skipped with a warning.
    """
    from distilrank.evaluation.run import first_stage_run, resolve_dataset

    dataset, given = resolve_dataset(cfg.data, cfg.split)
    run_file = "" if cfg.first_stage == "bm25" else cfg.first_stage
    run = first_stage_run(dataset, None if run_file else given, cfg.top_k, cfg.max_queries, run_file)
    queries, empty = [], []
    for qid, hits in run.items():
        if not hits:
            empty.append(qid)
            continue
        ids = tuple(did for did, _ in hits)
        docs = tuple(dataset.corpus[did].contents for did in ids)
        queries.append(LabelQuery(dataset.queries[qid].text, docs, qid, ids))
    if empty:
        logger.warning("%d queries have no first-stage candidates and are skipped, e.g. %r", len(empty), empty[0])
    return queries


def read_label_input(cfg: LabelConfig) -> list[LabelQuery]:
    """The queries to label, in a deterministic order, checked non-empty (texts included)."""
    from distilrank.data.readers import is_training_file, read_training_file

    if is_training_file(cfg.data):
        queries = queries_from_examples(read_training_file(Path(cfg.data).expanduser()))
        queries = queries[: cfg.max_queries] if cfg.max_queries else queries
    else:
        queries = queries_from_dataset(cfg)
    if not queries:
        raise DataError("no (query, document) pairs to label", path=cfg.data,
                        hint="check split, max_queries and the first-stage run")
    for qi, q in enumerate(queries):
        name = f"query {qi}" + (f" (id {q.query_id!r})" if q.query_id is not None else "")
        if not q.text.strip():
            raise DataError(f"{name} has an empty text", path=cfg.data, field="query", hint="fill it in or drop it")
        for di, doc in enumerate(q.docs):
            if not doc.strip():
                doc_name = f"document {di}" + (f" (id {q.doc_ids[di]!r})" if q.doc_ids else "")
                raise DataError(f"{doc_name} of {name} has an empty text", path=cfg.data, field="contents",
                                hint="give every document a text or drop it")
    return queries


# ---------------------------------------------------------------------------- shards and resuming


def shard_bounds(n_items: int, index: int, n: int) -> tuple[int, int]:
    """[start, stop) of the ``index``-th of ``n`` contiguous near-equal slices of ``n_items``.

    >>> [shard_bounds(5, i, 2) for i in range(2)]
    [(0, 3), (3, 5)]
    """
    base, extra = divmod(n_items, n)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


def shard_path(output: str | Path, index: int, n: int) -> Path:
    """``labels.jsonl`` -> ``labels.0-of-4.jsonl`` when ``n > 1``; unchanged otherwise."""
    path = Path(output)
    return path if n == 1 else path.with_name(f"{path.stem}.{index}-of-{n}{path.suffix}")


def _resolved(spec: str) -> str:
    """A local path made absolute (a resumed run may start elsewhere); a hub name as is."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def job_fingerprint(cfg: LabelConfig, pairs: Pairs, kind: str) -> dict[str, Any]:
    """What must not change between a killed run and its resumption (batch and chunk sizes may)."""
    return {
        "teacher": _resolved(cfg.teacher), "data": _resolved(cfg.data), "split": cfg.split,
        "first_stage": cfg.first_stage if cfg.first_stage == "bm25" else _resolved(cfg.first_stage),
        "top_k": cfg.top_k, "max_queries": cfg.max_queries, "max_length": cfg.max_length, "bf16": cfg.bf16,
        "shard": cfg.shard, "pairs": len(pairs), "labels": kind, "sha256": pairs.digest(),
        **{k: getattr(cfg, k) for k in ("template", "true_token", "false_token") if getattr(cfg, k)},
    }


def _complete_lines(path: Path) -> int:
    """Number of newline-terminated lines; a trailing incomplete line (a kill mid-write) is cut off."""
    count = end = size = 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            n = block.count(b"\n")
            if n:
                count += n
                end = size + block.rfind(b"\n") + 1
            size += len(block)
    if end < size:
        logger.info("%s: dropping an incomplete last line (%d bytes)", path, size - end)
        os.truncate(path, end)
    return count


def resume_point(partial: Path, sidecar: Path, fingerprint: dict[str, Any]) -> int:
    """Pairs already labelled in ``partial`` by the same job (0 when there is no partial file)."""
    if not partial.exists():
        return 0
    fix = f"delete {partial} (and {sidecar.name}) to start over"
    try:
        saved = json.loads(sidecar.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{partial} exists but its job description {sidecar.name} is missing; {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"{sidecar} is not valid JSON; {fix}") from None
    if saved != fingerprint:
        differ = [k for k in fingerprint if not isinstance(saved, dict) or saved.get(k) != fingerprint[k]]
        raise ConfigError(f"{partial} was written by another labelling job ({', '.join(differ) or 'settings'} "
                          f"differ); {fix}, or go back to that job's settings to resume it")
    done = _complete_lines(partial)
    if done > fingerprint["pairs"]:
        raise ConfigError(f"{partial} holds {done} rows but the job has only {fingerprint['pairs']} pairs; {fix}")
    return done


# ---------------------------------------------------------------------------- scoring


def load_teacher(cfg: LabelConfig) -> Any:
    """The teacher (cross-encoder or seq2seq reranker), in bfloat16 if asked, on CUDA when available."""
    import torch

    from distilrank.models.kind import load_scorer

    dtype = torch.bfloat16 if cfg.bf16 else None
    if any(getattr(cfg, k) for k in ("template", "true_token", "false_token")):  # a causal LM, own prompt
        from distilrank.labeling_llm import load_causal_teacher

        return load_causal_teacher(cfg, dtype)
    teacher = load_scorer(cfg.teacher, encoder=cfg.encoder, allow_new_head=cfg.allow_new_head,
                          max_length=cfg.max_length or None, dtype=dtype)
    if torch.cuda.is_available():
        teacher.to("cuda")
    return teacher


def score_pairs(teacher: Any, kind: str, pairs: Sequence[tuple[str, str]], batch_size: int) -> list[dict[str, float]]:
    """The label fields of each pair, in input order (the models sort by length and batch inside)."""
    if kind == LOGITS:
        logits = teacher.score_logits(pairs, batch_size=batch_size)
        return [{"true_logit": true, "false_logit": false} for false, true in logits]
    return [{"score": s} for s in teacher.score(pairs, batch_size=batch_size)]


def label_row(query: LabelQuery, di: int, label: dict[str, float]) -> dict[str, Any]:
    """One output row; ``query_id``/``doc_id`` only when the input has ids."""
    row: dict[str, Any] = {} if query.query_id is None else {"query_id": query.query_id}
    row["query"] = query.text
    if query.doc_ids is not None:
        row["doc_id"] = query.doc_ids[di]
    row["contents"] = query.docs[di]
    row.update(label)
    return row


def _check_finite(pairs: Pairs, qi: int, di: int, label: dict[str, float], source: str) -> None:
    bad = [k for k, v in label.items() if not math.isfinite(v)]
    if bad:
        q = pairs.queries[qi]
        ids = f" (query id {q.query_id!r}, doc id {q.doc_ids[di]!r})" if q.doc_ids else ""
        message = (f"the teacher returned {label[bad[0]]} as {bad[0]} for query {pairs.first_query + qi} "
                   f"{q.text[:60]!r}, document {di}{ids}")
        raise DataError(message, path=source, hint="check the teacher: its weights, max_length, and try bf16=false")


def label_range(teacher: Any, kind: str, pairs: Pairs, start: int, out: IO[str], cfg: LabelConfig,
                progress: Any = None) -> None:
    """Label pairs ``start..`` chunk by chunk, appending each chunk's rows to ``out``, flushed and fsynced.

    Chunks end at multiples of ``cfg.chunk_size``, so a resumed run batches the rest as an
    uninterrupted one would. A chunk is checked whole before any of it is written.
    """
    pos = start
    while pos < len(pairs):
        stop = min(len(pairs), (pos // cfg.chunk_size + 1) * cfg.chunk_size)
        where = list(pairs.locate(pos, stop))
        texts = [(pairs.queries[qi].text, pairs.queries[qi].docs[di]) for qi, di in where]
        labels = score_pairs(teacher, kind, texts, cfg.batch_size)
        for (qi, di), label in zip(where, labels, strict=True):
            _check_finite(pairs, qi, di, label, cfg.data)
        out.write("".join(json.dumps(label_row(pairs.queries[qi], di, label), ensure_ascii=False) + "\n"
                          for (qi, di), label in zip(where, labels, strict=True)))
        out.flush()
        os.fsync(out.fileno())
        if progress is not None:
            progress.update(stop - pos)
        pos = stop


# ---------------------------------------------------------------------------- entry point


def check_not_labelled(output: Path) -> None:
    """A finished label file is never written again: one clear error before any work."""
    if output.exists():
        raise ConfigError(f"{output} already exists (labelled before?); delete it or choose another output=...")


def run_label(cfg: LabelConfig, split: bool = True) -> dict[str, Any]:
    """Label this shard of ``cfg.data`` with ``cfg.teacher`` into its output file; returns a summary.

    Under torchrun / accelerate launch (``split``) each process labels a slice and the main process merges
    them into the same file (:mod:`distilrank.labeling_parallel`).

    Summary keys: pairs, queries, seconds (this call), pairs_per_second (pairs scored by this
    call / scoring time), output, shard, resumed_from (pairs found done in a partial file).
    """
    from distilrank.labeling_parallel import process_rank, run_split

    rank, world = process_rank()
    if split and world > 1:
        return run_split(cfg, rank, world, lambda part: run_label(part, split=False))
    began = time.perf_counter()
    index, n = parse_shard(cfg.shard)
    output = shard_path(cfg.output, index, n)
    check_output_path(output, folder=False)
    with output_lock(output):  # a second job on this output stops here, before it reads or writes anything
        check_not_labelled(output)
        if cfg.mode == "listwise":  # one ranking per query from a listwise LLM or a published run
            from distilrank.labeling_listwise import run_listwise

            return run_listwise(cfg)
        if "," in cfg.teacher:  # an ensemble: each teacher labels, then their z-scores are averaged
            from distilrank.labeling_llm import run_ensemble

            return run_ensemble(cfg)
        return _label_shard(cfg, output, index, n, began)


def _label_shard(cfg: LabelConfig, output: Path, index: int, n: int, began: float) -> dict[str, Any]:
    """:func:`run_label`'s work on one shard, under the output's lock."""
    from tqdm.auto import tqdm

    from distilrank.models.kind import detect_model_kind, scorer_kind

    # reads small files only: a teacher that cannot score fails before any data is read
    how = scorer_kind(cfg.teacher, detect_model_kind(cfg.teacher, onnx=False), cfg.encoder, cfg.allow_new_head)
    from distilrank.labeling_llm import check_teacher_options

    check_teacher_options(cfg, how)  # causal-LM prompt and answer tokens, from the tokenizer alone
    kind = LOGITS if how in ("seq2seq", "causal") else SCORES
    queries = read_label_input(cfg)
    first, last = shard_bounds(len(queries), index, n)
    pairs = Pairs(queries[first:last], first_query=first)
    if not pairs.queries:
        logger.warning("shard %s of %d queries is empty; writing an empty %s", cfg.shard, len(queries), output)
    fingerprint = job_fingerprint(cfg, pairs, kind)
    partial = output.with_name(output.name + ".partial")
    sidecar = output.with_name(output.name + ".partial.json")
    done = resume_point(partial, sidecar, fingerprint)
    # Loaded before anything is written: a teacher that cannot load leaves no files behind.
    teacher = load_teacher(cfg) if done < len(pairs) else None
    if done:
        print(f"resuming {partial} at pair {done} of {len(pairs)}")
    else:
        atomic_write_json(sidecar, fingerprint)  # first the sidecar: a partial file never lacks one
        partial.write_bytes(b"")
    scoring = 0.0
    if teacher is not None:
        scoring = time.perf_counter()
        with partial.open("a", encoding="utf-8", newline="") as out, \
                tqdm(total=len(pairs), initial=done, desc="labelling", unit="pair", dynamic_ncols=True) as bar:
            label_range(teacher, kind, pairs, done, out, cfg, bar)
        scoring = time.perf_counter() - scoring
    os.replace(partial, output)
    sidecar.unlink(missing_ok=True)
    seconds = time.perf_counter() - began
    rate = (len(pairs) - done) / scoring if scoring > 0 else 0.0
    summary = {"pairs": len(pairs), "queries": len(pairs.queries), "seconds": round(seconds, 3),
               "pairs_per_second": round(rate, 1), "output": str(output), "shard": cfg.shard, "resumed_from": done}
    print(f"labelled {len(pairs)} pairs of {len(pairs.queries)} queries ({rate:.1f} pairs/s) -> {output}")
    return summary
