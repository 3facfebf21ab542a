"""Reranking evaluation: first stage vs reranker, every figure computed by ir-measures."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ir_measures
import numpy as np

from distilrank.data.records import RetrievalDataset, Run

logger = logging.getLogger(__name__)

Scorer = Callable[[Sequence[tuple[str, str]]], list[float]]


def measures(k: int, rel: int = 1) -> dict[str, Any]:
    """Our metric names -> ir-measures objects. ``rel``: minimum grade counted relevant."""
    return {
        "nDCG@10": ir_measures.nDCG @ 10,
        "MRR@10": ir_measures.RR(rel=rel) @ 10,
        "MAP": ir_measures.AP(rel=rel),
        f"R@{k}": ir_measures.R(rel=rel) @ k,
    }


def score_run(qrels: dict[str, dict[str, int]], run: Run, k: int, rel: int = 1) -> dict[str, float]:
    """Mean metrics over queries with a relevant document; queries absent from ``run`` count as zeros."""
    named = measures(k, rel)
    judged = {q: docs for q, docs in qrels.items() if any(g >= rel for g in docs.values())}
    qrels_list = [ir_measures.Qrel(q, d, g) for q, docs in judged.items() for d, g in docs.items()]
    # ties broken by rank: ir-measures sorts by score, so nudge equal scores apart
    scored = [
        ir_measures.ScoredDoc(q, d, float(s) - 1e-9 * i)
        for q, docs in run.items() if q in judged for i, (d, s) in enumerate(docs)
    ]
    # ir-measures counts judged queries missing from the run as zeros, as it should
    agg = ir_measures.calc_aggregate(list(named.values()), qrels_list, scored)
    return {name: float(agg.get(m, 0.0)) for name, m in named.items()}


def _znorm(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-6) if len(x) > 1 else np.zeros_like(x)


def rerank(
    dataset: RetrievalDataset, run: Run, scorer: Scorer, top_k: int, fusion_weight: float = 0.0
) -> Run:
    """Rescore the top-``top_k`` of every query in ``run``; below it the first-stage order stays.

    With ``fusion_weight`` w > 0 the final score is ``w * z(first) + (1-w) * z(reranker)``,
    z = per-query standardisation (a classic interpolation with first-stage scores).
    """
    pairs, slices = [], {}
    for qid, docs in run.items():
        head = [d for d, _ in docs[:top_k]]
        slices[qid] = (len(pairs), len(head))
        pairs += [(dataset.queries[qid].text, dataset.corpus[d].contents) for d in head]
    scores = np.asarray(scorer(pairs), dtype=np.float64)
    out: Run = {}
    for qid, docs in run.items():
        start, n = slices[qid]
        s = scores[start : start + n]
        if fusion_weight > 0:
            first = np.asarray([x for _, x in docs[:n]], dtype=np.float64)
            s = fusion_weight * _znorm(first) + (1 - fusion_weight) * _znorm(s)
        head = sorted(zip([d for d, _ in docs[:n]], s.tolist()), key=lambda t: -t[1])
        # documents below the cut keep their order, placed under every reranked one
        floor = min((x for _, x in head), default=0.0)
        tail = [(d, floor - 1.0 - i) for i, (d, _) in enumerate(docs[n:])]
        out[qid] = head + tail
    return out


@dataclass
class RerankReport:
    dataset: str
    queries: int
    top_k: int
    first_stage: dict[str, float]
    reranked: dict[str, float] = field(default_factory=dict)
    relevance_level: int = 1
    fusion_weight: float = 0.0

    @property
    def recall_cap(self) -> float:
        """Share of relevant documents inside the reranked candidates: no reranker can beat it."""
        return self.first_stage[f"R@{self.top_k}"]

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "queries": self.queries, "top_k": self.top_k,
                "relevance_level": self.relevance_level, "fusion_weight": self.fusion_weight,
                "recall_cap": self.recall_cap, "first_stage": self.first_stage, "reranker": self.reranked}


def evaluate_reranking(
    dataset: RetrievalDataset,
    run: Run,
    scorer: Scorer | None,
    top_k: int,
    *,
    fusion_weight: float = 0.0,
    relevance_level: int = 1,
) -> RerankReport:
    """First-stage metrics and, with a scorer, metrics after reranking the top-``top_k``."""
    qrels = {q: dataset.qrels[q] for q in run if q in dataset.qrels}
    cut = {q: docs[:top_k] for q, docs in run.items()}
    report = RerankReport(dataset.name, len(qrels), top_k, score_run(qrels, cut, top_k, relevance_level),
                          relevance_level=relevance_level, fusion_weight=fusion_weight)
    if scorer is not None:
        report.reranked = score_run(qrels, rerank(dataset, cut, scorer, top_k, fusion_weight), top_k, relevance_level)
    return report
