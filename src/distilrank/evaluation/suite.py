"""``distilrank eval`` over several datasets at once: one table of per-dataset and mean figures.

``data`` lists dataset specs separated by commas: ``demo``, BEIR folders, TREC DL folders (their
run is the first stage), BEIR hub names, and NanoBEIR datasets by hub name
(``zeta-alpha-ai/NanoMSMARCO``; or ``nanobeir:msmarco``, ``nanobeir`` for all thirteen). A NanoBEIR
repo has the configs ``corpus``, ``queries`` and ``qrels`` (split ``train``); its BM25 top-100
(an optional ``bm25`` config with ``query-id`` and ranked ``corpus-ids``) is the first stage where
given, else BM25 is built on the fly. Whether relevant documents the first stage missed were
added to the candidates (``inject_relevant``, off by default) is printed with the table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from distilrank.config import EvalConfig
from distilrank.data.records import RetrievalDataset, Run
from distilrank.errors import ConfigError, DataError
from distilrank.evaluation.ranking import rerank, score_run

logger = logging.getLogger(__name__)

NANOBEIR = {
    "climatefever": "NanoClimateFEVER", "dbpedia": "NanoDBPedia", "fever": "NanoFEVER", "fiqa2018": "NanoFiQA2018",
    "hotpotqa": "NanoHotpotQA", "msmarco": "NanoMSMARCO", "nfcorpus": "NanoNFCorpus", "nq": "NanoNQ",
    "quoraretrieval": "NanoQuoraRetrieval", "scidocs": "NanoSCIDOCS", "arguana": "NanoArguAna",
    "scifact": "NanoSciFact", "touche2020": "NanoTouche2020",
}
NANOBEIR_ORG = "zeta-alpha-ai"
NANO_HINT = "a NanoBEIR repo has configs corpus and queries (columns _id, text) and qrels (query-id, corpus-id)"
Scorer = Callable[[Sequence[tuple[str, str]]], list[float]]


def expand_specs(data: str) -> list[str]:
    """``"demo, nanobeir:msmarco"`` -> ``["demo", "zeta-alpha-ai/NanoMSMARCO"]``; ``nanobeir`` -> all thirteen."""
    out: list[str] = []
    for spec in (s.strip() for s in data.split(",")):
        if not spec:
            continue
        if spec.lower() == "nanobeir":
            out += [f"{NANOBEIR_ORG}/{name}" for name in NANOBEIR.values()]
        elif spec.lower().startswith("nanobeir:"):
            key = spec.split(":", 1)[1].lower().replace("nano", "", 1) if ":" in spec else ""
            if key not in NANOBEIR:
                raise ConfigError(f"unknown NanoBEIR dataset {spec!r}; choose from {', '.join(NANOBEIR)}")
            out.append(f"{NANOBEIR_ORG}/{NANOBEIR[key]}")
        else:
            out.append(spec)
    if not out:
        raise ConfigError("data names no dataset; give one or more specs separated by commas")
    return out


def is_nanobeir(spec: str) -> bool:
    return spec.rstrip("/").replace("\\", "/").split("/")[-1].startswith("Nano")


def is_suite(data: str) -> bool:
    return "," in data or data.lower().startswith("nanobeir") or is_nanobeir(data)


def load_nanobeir(name: str, cache_dir: str | None = None) -> tuple[RetrievalDataset, Run | None]:
    """A NanoBEIR dataset (hub name or a local folder laid out like the hub repo) and its BM25 run if given."""
    from distilrank.data.hub import _load, _records
    from distilrank.data.parsing import (
        Where,
        add_judgment,
        id_field,
        passage_from_record,
        query_from_record,
    )

    corpus = _records(_load(name, "corpus", "train", cache_dir), name, "corpus", passage_from_record)
    queries = _records(_load(name, "queries", "train", cache_dir), name, "queries", query_from_record)
    qrels: dict[str, dict[str, int]] = {}
    for i, row in enumerate(_load(name, "qrels", "train", cache_dir)):
        where = Where(name, None, f"qrels[{i}].")
        qid, did = id_field(row, "query-id", where), id_field(row, "corpus-id", where)
        if qid not in queries or did not in corpus:
            raise where.error(f"unknown {'query' if qid not in queries else 'document'} id", "query-id"
                              if qid not in queries else "corpus-id", NANO_HINT)
        grade = row.get("score")  # NanoBEIR qrels list relevant pairs only: no score column
        add_judgment(qrels, qid, did, 1 if grade is None else int(grade), where, "corpus-id")
    if not qrels:
        raise DataError("qrels has no judgments", path=name, hint=NANO_HINT)
    try:
        bm25 = _load(name, "bm25", "train", cache_dir)
    except DataError:  # most NanoBEIR repos ship no BM25 run: it is built on the fly
        bm25 = None
    run: Run | None = None
    if bm25 is not None:
        run = {}
        for i, row in enumerate(bm25):
            ids = [str(d) for d in row["corpus-ids"]]
            unknown = [d for d in ids if d not in corpus]
            if unknown:
                raise DataError(f"bm25[{i}] ranks unknown document id {unknown[0]!r}", path=name, hint=NANO_HINT)
            run[str(row["query-id"])] = [(d, float(len(ids) - r)) for r, d in enumerate(ids)]
    short = name.rstrip("/\\").replace("\\", "/").split("/")[-1]
    return RetrievalDataset(corpus, {q: queries[q] for q in qrels}, qrels, name=short), run


def inject_relevant(dataset: RetrievalDataset, run: Run) -> tuple[Run, int]:
    """Each query's relevant documents missing from its candidates, appended below them (and how many)."""
    out, added = {}, 0
    for qid, docs in run.items():
        have = {d for d, _ in docs}
        floor = min((s for _, s in docs), default=0.0)
        missing = [d for d, g in dataset.qrels.get(qid, {}).items() if g > 0 and d not in have]
        out[qid] = docs + [(d, floor - 1.0 - i) for i, d in enumerate(missing)]
        added += len(missing)
    return out, added


def evaluate_one(spec: str, cfg: EvalConfig, scorer: Scorer | None) -> dict[str, Any]:
    from distilrank.evaluation.run import first_stage_run, resolve_dataset

    t0 = time.perf_counter()
    dataset, given = load_nanobeir(spec) if is_nanobeir(spec) else resolve_dataset(spec, cfg.split)
    source = "shipped run" if given is not None else "bm25 (built here)"
    run = first_stage_run(dataset, given, cfg.top_k, cfg.max_queries)
    qrels = {q: dataset.qrels[q] for q in run if q in dataset.qrels}
    row: dict[str, Any] = {"dataset": dataset.name, "queries": len(qrels), "first_stage_source": source,
                           "first_stage": score_run(qrels, run, cfg.top_k, cfg.relevance_level)}
    if scorer is not None:
        candidates, row["injected"] = inject_relevant(dataset, run) if cfg.inject_relevant else (run, 0)
        depth = max((len(d) for d in candidates.values()), default=cfg.top_k)
        reranked = rerank(dataset, candidates, scorer, depth, cfg.fusion_weight)
        row["reranker"] = score_run(qrels, reranked, cfg.top_k, cfg.relevance_level)
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def mean_row(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    names = list(rows[0][key]) if rows and key in rows[0] else []
    return {m: sum(r[key][m] for r in rows) / len(rows) for m in names}


def render_suite(result: dict[str, Any]) -> str:
    """One table: a row per dataset plus the mean, first-stage and reranked nDCG@10 / MRR@10 (+ recall cap)."""
    k, reranked = result["top_k"], "reranker" in result["mean"]
    cols = [("first_stage", "nDCG@10"), ("first_stage", "MRR@10"), ("first_stage", f"R@{k}")]
    cols += [("reranker", "nDCG@10"), ("reranker", "MRR@10")] if reranked else []
    rows = [(r["dataset"], r["queries"], r) for r in result["datasets"]] + [("mean", "", result["mean"])]
    width = max(len("dataset"), *(len(str(name)) for name, _, _ in rows))
    heads = [("1st " if part == "first_stage" else "rr ") + m for part, m in cols]
    lines = [f"{'dataset':<{width}}  {'queries':>7}  " + "  ".join(f"{h:>11}" for h in heads)]
    lines.append("-" * len(lines[0]))
    for name, n, vals in rows:
        lines.append(f"{name:<{width}}  {n!s:>7}  " + "  ".join(f"{vals[p][m]:>11.4f}" for p, m in cols))
    inject = result["inject_relevant"]
    lines.append(f"first stage: top-{k} per query (a dataset's shipped run where given, else BM25); "
                 + (f"reranker: {result['model']}; " if reranked else "no model given; ")
                 + ("missed relevant documents WERE injected into the candidates "
                    f"({result['injected']} added: reranked figures are optimistic)" if inject
                    else "missed relevant documents were NOT injected (the first stage's recall caps the reranker)"))
    return "\n".join(lines)


def run_suite(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate every dataset of ``cfg.data`` with one model load; prints and returns the table's figures."""
    if cfg.first_stage != "bm25":
        raise ConfigError("a suite takes each dataset's own first stage (its shipped run, else BM25); "
                          "first_stage=<run file> applies to a single dataset")
    scorer: Scorer | None = None
    if cfg.model:
        from distilrank.inference.reranker import Reranker

        reranker = Reranker.load(cfg.model, batch_size=cfg.batch_size, max_length=cfg.max_length or None,
                                 long_documents=cfg.long_documents, passage_stride=cfg.passage_stride,
                                 max_passages=cfg.max_passages, encoder=cfg.encoder,
                                 allow_new_head=cfg.allow_new_head)
        scorer = lambda pairs: reranker.score(pairs, show_progress=True)  # noqa: E731
    rows = [evaluate_one(spec, cfg, scorer) for spec in expand_specs(cfg.data)]
    mean = {"first_stage": mean_row(rows, "first_stage")}
    if scorer is not None:
        mean["reranker"] = mean_row(rows, "reranker")
    result = {"datasets": rows, "mean": mean, "top_k": cfg.top_k, "model": cfg.model,
              "inject_relevant": cfg.inject_relevant, "injected": sum(r.get("injected", 0) for r in rows),
              "relevance_level": cfg.relevance_level}
    print(render_suite(result))
    if cfg.output_dir:
        from distilrank.reports import start_run, write_metrics

        write_metrics(start_run(Path(cfg.output_dir), cfg), result)
    return result
