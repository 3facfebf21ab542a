"""Hard negatives from a first-stage ranking, written as groups jsonl."""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distilrank.config import MineConfig
from distilrank.data.records import RetrievalDataset, Run
from distilrank.io import atomic_write_jsonl
from distilrank.mining.retrievers import BM25Retriever

logger = logging.getLogger(__name__)


@dataclass
class MiningSummary:
    queries: int = 0
    groups: int = 0
    negatives_asked: int = 0
    short: Counter = field(default_factory=Counter)  # reason -> number of groups with fewer negatives

    def as_dict(self) -> dict[str, Any]:
        return {"queries": self.queries, "groups": self.groups, "negatives_per_group": self.negatives_asked,
                "groups_with_fewer_negatives": dict(self.short)}


def select_negatives(ranked: list[str], positives: set[str], cfg: MineConfig, rng: random.Random) -> list[str]:
    """Negatives from 1-based ranks [rank_min, rank_max] of ``ranked`` with positives removed."""
    pool = [d for d in ranked if d not in positives][cfg.rank_min - 1 : cfg.rank_max]
    if cfg.sampling == "top" or len(pool) <= cfg.num_negatives:
        return pool[: cfg.num_negatives]
    return rng.sample(pool, cfg.num_negatives)


def mine_groups(dataset: RetrievalDataset, cfg: MineConfig, run: Run | None = None) -> tuple[list[dict], MiningSummary]:
    """One group row per (query, positive): ``{query, positive, negatives, *_id(s)}``."""
    qids = dataset.judged_queries()
    if run is None:
        retriever = BM25Retriever(dataset.corpus)
        run = retriever.search({q: dataset.queries[q].text for q in qids}, k=cfg.rank_max + 50)
    rng = random.Random(cfg.seed)
    rows, summary = [], MiningSummary(queries=len(qids), negatives_asked=cfg.num_negatives)
    for qid in qids:
        judged = dataset.qrels.get(qid, {})
        positives = {d for d, g in judged.items() if g > 0}
        ranked = [d for d, _ in run.get(qid, [])]
        negatives = select_negatives(ranked, positives, cfg, rng)
        for pid in sorted(positives):
            if pid not in dataset.corpus:
                summary.short["positive missing from corpus (skipped)"] += 1
                continue
            if len(negatives) < cfg.num_negatives:
                reason = "no negatives in rank range" if not negatives else "rank range has too few documents"
                summary.short[reason] += 1
            if not negatives:
                continue
            rows.append({
                "query": dataset.queries[qid].text,
                "positive": dataset.corpus[pid].contents,
                "negatives": [dataset.corpus[d].contents for d in negatives],
                "query_id": qid, "positive_id": pid, "negative_ids": negatives,
            })
    summary.groups = len(rows)
    return rows, summary


def mine_to_file(dataset: RetrievalDataset, cfg: MineConfig, run: Run | None = None) -> MiningSummary:
    rows, summary = mine_groups(dataset, cfg, run)
    atomic_write_jsonl(Path(cfg.output), rows)
    return summary
