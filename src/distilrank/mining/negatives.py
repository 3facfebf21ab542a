"""Hard negatives from a first-stage ranking, written as groups jsonl.

The options follow ``sentence_transformers.util.mine_hard_negatives``: how many negatives, the
rank range they come from, absolute and relative margins against the positive's score (a guard
against unjudged positives), top or random sampling within the range, and optional rescoring of
the candidates by a model (the margins then apply to its scores).

A groups file (``retriever=given``) is mined in place: each query's candidates are the negatives its
rows already hold, in file order, so a user's BM25 negatives can be rescored by a model and the
probable false negatives (scored near the positive) dropped: NV-Retriever's TopK-PercPos filter is
``rescore_model=START relative_margin=0.05 sampling=top`` (Moreira et al., 2024).
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distilrank.config import MineConfig
from distilrank.data.records import Group, Passage, Query, RetrievalDataset, Run
from distilrank.errors import DataError
from distilrank.io import atomic_write_jsonl
from distilrank.mining.retrievers import Retriever, build_retriever

logger = logging.getLogger(__name__)

RERANK_QUERIES = 256  # queries whose candidates a cross-encoder rescores together: bounds the pairs held at once
MINE_QUERIES = 8192  # queries searched at once: bounds the rankings held

SHORT_RANGE = "rank range holds fewer non-positive documents than asked"
SHORT_MARGIN = "margin filter removed candidates"
SKIP_NO_POSITIVE = "query has no relevant (grade > 0) judgment"
SKIP_MISSING = "positive missing from the corpus"
SKIP_EMPTY = "no negative left for the positive"


@dataclass
class MiningSummary:
    queries: int = 0
    groups: int = 0
    negatives_asked: int = 0
    short: Counter = field(default_factory=Counter)  # reason -> number of groups with fewer negatives
    skipped: Counter = field(default_factory=Counter)  # reason -> queries or positives that gave no group
    seconds: float = 0.0
    retriever: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"queries": self.queries, "groups": self.groups, "negatives_per_group": self.negatives_asked,
                "groups_with_fewer_negatives": dict(self.short),
                "skipped": {k: v for k, v in self.skipped.items() if v},
                "retriever": self.retriever, "seconds": round(self.seconds, 3),
                "queries_per_second": round(self.queries / self.seconds, 2) if self.seconds else None}


def passes_margins(score: float, positive_score: float | None, cfg: MineConfig) -> bool:
    """Whether a candidate scored ``score`` is far enough below its positive to be a safe negative."""
    if positive_score is None:
        return True
    if cfg.absolute_margin is not None and score > positive_score - cfg.absolute_margin:
        return False
    return cfg.relative_margin is None or score <= positive_score * (1 - cfg.relative_margin)


def select_negatives(ranked: Sequence[tuple[str, float]], positives: set[str], cfg: MineConfig, rng: random.Random,
                     positive_score: float | None = None) -> tuple[list[str], str]:
    """Negatives from 1-based ranks [rank_min, rank_max] of ``ranked`` (positives removed first), kept only
    if they pass the margins against ``positive_score``; returns them and why there are fewer than asked
    (``""`` when there are enough)."""
    pool = [(d, s) for d, s in ranked if d not in positives][cfg.rank_min - 1 : cfg.rank_max]
    kept = [d for d, s in pool if passes_margins(s, positive_score, cfg)]
    reason = ""
    if len(kept) < cfg.num_negatives:
        reason = SHORT_RANGE if len(pool) < cfg.num_negatives else SHORT_MARGIN
    if cfg.sampling == "top" or len(kept) <= cfg.num_negatives:
        return kept[: cfg.num_negatives], reason
    return rng.sample(kept, cfg.num_negatives), reason


def groups_dataset(groups: Sequence[Group], name: str) -> tuple[RetrievalDataset, Run]:
    """Groups -> a dataset (texts keyed by first appearance: ``q0``, ``d0``..., ids that are not written out)
    and the run of their negatives.

    Rows of one query text merge: its positives are all relevant (grade 1) and its candidates are its
    rows' negatives in file order (repeats dropped); a candidate that is also one of its positives is
    removed when negatives are picked, as in any mining.
    """
    doc_ids: dict[str, str] = {}
    query_ids: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    candidates: dict[str, dict[str, None]] = {}  # query -> its negatives, in file order, each once

    def doc(text: str) -> str:
        return doc_ids.setdefault(text, f"d{len(doc_ids)}")

    for g in groups:
        qid = query_ids.setdefault(g.query, f"q{len(query_ids)}")
        qrels.setdefault(qid, {})[doc(g.positive)] = 1
        candidates.setdefault(qid, {}).update(dict.fromkeys(doc(t) for t in g.negatives))
    run: Run = {q: [(d, -float(rank)) for rank, d in enumerate(docs)] for q, docs in candidates.items()}  # file order
    corpus = {d: Passage(d, text) for text, d in doc_ids.items()}
    queries = {q: Query(q, text) for text, q in query_ids.items()}
    return RetrievalDataset(corpus, queries, qrels, name=name), run


def judged_queries(dataset: RetrievalDataset, summary: MiningSummary, max_queries: int = 0) -> list[str]:
    """Queries with a positive; judged queries without one are counted as skipped, unknown ones are an error."""
    unknown = [q for q in dataset.qrels if q not in dataset.queries]
    if unknown:
        raise DataError(f"{len(unknown)} judged query ids are not among the queries, e.g. '{unknown[0]}'",
                        path=dataset.name, hint="use the queries file that belongs to these qrels")
    qids = dataset.judged_queries()
    summary.skipped[SKIP_NO_POSITIVE] += sum(1 for q in dataset.qrels if q not in set(qids))
    return qids[:max_queries] if max_queries else qids


def rescore(dataset: RetrievalDataset, run: Run, positives: dict[str, set[str]], reranker: Any) -> Run:
    """The candidates (and each query's positives) scored by a ``Reranker`` (any model kind), best first.

    A bi-encoder scores all of ``run``'s queries in one call: it encodes each distinct text once per call, and
    the same documents come back among many queries' candidates (NFCorpus, 768 queries: 280 s -> 100 s, RESULTS.md).
    """
    out: Run = {}
    qids = list(run)
    step = max(len(qids), 1) if type(reranker.model).__name__ in ("BiEncoder", "OnnxBiEncoder") else RERANK_QUERIES
    for start in range(0, len(qids), step):
        chunk = qids[start : start + step]
        docs = {q: list(dict.fromkeys([d for d, _ in run[q]] + sorted(positives[q]))) for q in chunk}
        pairs = [(dataset.queries[q].text, dataset.corpus[d].contents) for q in chunk for d in docs[q]]
        scores = iter(reranker.score(pairs, show_progress=len(qids) > RERANK_QUERIES))
        for q in chunk:
            out[q] = sorted(((d, next(scores)) for d in docs[q]), key=lambda t: -t[1])
    return out


def _positive_scores(dataset: RetrievalDataset, qid: str, pids: list[str], ranked: Run,
                     retriever: Retriever | None) -> dict[str, float | None]:
    known = dict(ranked.get(qid, []))
    missing = [p for p in pids if p not in known]
    if missing and retriever is not None:
        known.update(zip(missing, retriever.score(dataset.queries[qid].text, [dataset.corpus[p] for p in missing])))
    return {p: known.get(p) for p in pids}


def _group_rows(dataset: RetrievalDataset, qid: str, run: Run, positives: set[str], cfg: MineConfig,
                rng: random.Random, retriever: Retriever | None, summary: MiningSummary) -> list[dict]:
    """One query's group rows, one per positive found in the corpus; shortfalls counted in ``summary``."""
    pids = sorted(positives)
    summary.skipped[SKIP_MISSING] += sum(1 for p in pids if p not in dataset.corpus)
    pids = [p for p in pids if p in dataset.corpus]
    if cfg.max_positives and len(pids) > cfg.max_positives:  # highest grades first, ties in seeded random order
        grades = dataset.qrels[qid]
        shuffled = rng.sample(pids, len(pids))
        pids = sorted(shuffled, key=lambda p: -grades[p])[: cfg.max_positives]
    margins = cfg.absolute_margin is not None or cfg.relative_margin is not None
    pos_scores = _positive_scores(dataset, qid, pids, run, retriever) if margins and pids else {}
    rows = []
    for pid in pids:
        negatives, reason = select_negatives(run.get(qid, []), positives, cfg, rng, pos_scores.get(pid))
        if not negatives:
            summary.skipped[f"{SKIP_EMPTY} ({reason})"] += 1
            continue
        if reason:
            summary.short[reason] += 1
        rows.append({
            "query": dataset.queries[qid].text,
            "positive": dataset.corpus[pid].contents,
            "negatives": [dataset.corpus[d].contents for d in negatives],
            "query_id": qid, "positive_id": pid, "negative_ids": negatives,
        })
    return rows


def mine_groups(dataset: RetrievalDataset, cfg: MineConfig, run: Run | None = None,
                retriever: Retriever | None = None) -> tuple[list[dict], MiningSummary]:
    """One group row per (query, positive): ``{query, positive, negatives, *_id(s)}``.

    ``run`` (a ranking already made) or ``retriever`` replace the retriever that ``cfg`` describes.
    Queries are searched (and rescored) ``MINE_QUERIES`` at a time, so only that many rankings are held.
    """
    t0 = time.perf_counter()
    summary = MiningSummary(negatives_asked=cfg.num_negatives, retriever=cfg.retriever)
    qids = judged_queries(dataset, summary, cfg.max_queries)
    summary.queries = len(qids)
    positives = {q: {d for d, g in dataset.qrels[q].items() if g > 0} for q in qids}
    if run is None and retriever is None:
        retriever = build_retriever(cfg.retriever, dataset.corpus, model=cfg.model, index=cfg.index,
                                    index_path=cfg.index_path, batch_size=cfg.batch_size, nlist=cfg.nlist,
                                    nprobe=cfg.nprobe)
    reranker = None
    if cfg.rescore_model:
        from distilrank.inference.reranker import Reranker

        reranker = Reranker.load(cfg.rescore_model, batch_size=cfg.batch_size)
    depth = cfg.rank_max + max((len(p) for p in positives.values()), default=0)
    rng = random.Random(cfg.seed)
    rows: list[dict] = []
    for start in range(0, len(qids), MINE_QUERIES):
        chunk = qids[start : start + MINE_QUERIES]
        part = {q: run.get(q, []) for q in chunk} if run is not None else \
            retriever.search({q: dataset.queries[q].text for q in chunk}, k=depth)  # type: ignore[union-attr]
        if reranker is not None:
            part = rescore(dataset, part, {q: {p for p in positives[q] if p in dataset.corpus} for q in chunk},
                           reranker)
        for qid in chunk:
            rows += _group_rows(dataset, qid, part, positives[qid], cfg, rng, retriever, summary)
    summary.groups = len(rows)
    summary.seconds = time.perf_counter() - t0
    return rows, summary


def mine_to_file(dataset: RetrievalDataset, cfg: MineConfig, run: Run | None = None,
                 ids: bool = True) -> MiningSummary:
    """Mined groups written atomically; ``ids=False`` leaves out the id fields (a groups file's are made up)."""
    rows, summary = mine_groups(dataset, cfg, run)
    if not ids:
        rows = [{k: v for k, v in r.items() if not k.endswith(("_id", "_ids"))} for r in rows]
    atomic_write_jsonl(Path(cfg.output), rows)
    return summary
