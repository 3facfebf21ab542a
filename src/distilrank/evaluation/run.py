"""``distilrank eval``: dataset spec -> first stage -> rerank -> ir-measures report."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from distilrank.config import EvalConfig
from distilrank.data.records import RetrievalDataset, Run
from distilrank.errors import DataError
from distilrank.evaluation.ranking import RerankReport, evaluate_reranking
from distilrank.reports import format_table, plot_comparison, start_run, write_metrics

logger = logging.getLogger(__name__)


def resolve_dataset(spec: str, split: str) -> tuple[RetrievalDataset, Run | None]:
    """``demo`` | BEIR folder | TREC folder | hub name -> dataset (+ the run shipped with it)."""
    from distilrank.data.readers import load_dataset_spec, read_beir

    if spec == "demo" or spec.startswith("demo:"):
        from distilrank.data.demo import demo_folder

        seed = int(spec.split(":", 1)[1]) if ":" in spec else 13
        return read_beir(demo_folder(seed), split), None
    return load_dataset_spec(spec, split)


def first_stage_run(dataset: RetrievalDataset, given: Run | None, top_k: int, max_queries: int = 0,
                    run_file: str = "") -> Run:
    """The candidates to rerank: a run file, the dataset's own run, or BM25 built on the fly."""
    from distilrank.mining.retrievers import BM25Retriever

    qids = dataset.judged_queries()
    if max_queries:
        qids = qids[:max_queries]
    if run_file:
        from distilrank.data.readers import read_run_spec

        given = read_run_spec(run_file)
        unknown = [d for q in qids for d, _ in given.get(q, []) if d not in dataset.corpus]
        if unknown:
            raise DataError(f"run names document id '{unknown[0]}' that is not in the corpus "
                            f"({len(unknown)} such ids)", path=run_file,
                            hint="use the run made for this corpus")
    if given is None:
        given = BM25Retriever(dataset.corpus).search({q: dataset.queries[q].text for q in qids}, k=top_k)
    return {q: given.get(q, [])[:top_k] for q in qids}


def run_eval(cfg: EvalConfig) -> dict[str, Any]:
    from distilrank.evaluation.suite import is_suite, run_suite
    from distilrank.io import check_output_path

    if cfg.output_dir:  # before any scoring: an unwritable output_dir fails now, not after the work
        check_output_path(cfg.output_dir, folder=True, setting="output_dir")
    if is_suite(cfg.data) or cfg.inject_relevant:  # several datasets (comma-separated) or NanoBEIR: one table (evaluation/suite.py)
        return run_suite(cfg)
    dataset, given = resolve_dataset(cfg.data, cfg.split)
    run_file = "" if cfg.first_stage == "bm25" else cfg.first_stage
    run = first_stage_run(dataset, given, cfg.top_k, cfg.max_queries, run_file)  # a run file replaces given
    scorer, long_docs = None, None
    if cfg.model:
        from distilrank.inference.reranker import Reranker

        reranker = Reranker.load(cfg.model, batch_size=cfg.batch_size, max_length=cfg.max_length or None,
                                 long_documents=cfg.long_documents, passage_stride=cfg.passage_stride,
                                 max_passages=cfg.max_passages, encoder=cfg.encoder,
                                 allow_new_head=cfg.allow_new_head)
        scorer = timed = TimedScorer(lambda pairs: reranker.score(pairs, show_progress=True))
        long_docs = long_document_stats(reranker.model, dataset, run)
    report = evaluate_reranking(dataset, run, scorer, cfg.top_k, fusion_weight=cfg.fusion_weight,
                                relevance_level=cfg.relevance_level)
    first_name = "bm25" if given is None and not run_file else "first stage"
    print(render_report(report, first_name))
    result = {**report.as_dict(), "first_stage_name": first_name}
    if cfg.model:  # what the summary of a pipeline compares: model size and scoring speed
        result.update(model_size(reranker.model), **timed.as_dict())
    if long_docs:
        from distilrank.data.passages import describe_stats

        print(describe_stats(long_docs))
        result["long_documents"] = long_docs
    if cfg.output_dir:
        out = start_run(cfg.output_dir, cfg)
        write_metrics(out, result)
        systems = {first_name: report.first_stage}
        if report.reranked:
            systems["reranker"] = report.reranked
        plot_comparison(systems, out / "metrics.png", title=f"{dataset.name}: top-{cfg.top_k} reranked")
    return result


class TimedScorer:
    """A scorer that counts the pairs it scores and the seconds spent scoring them."""

    def __init__(self, score: Callable[[Sequence[tuple[str, str]]], list[float]]) -> None:
        self.score, self.pairs, self.seconds = score, 0, 0.0

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        start = time.perf_counter()
        scores = self.score(pairs)
        self.seconds += time.perf_counter() - start
        self.pairs += len(pairs)
        return scores

    def as_dict(self) -> dict[str, Any]:
        rate = self.pairs / self.seconds if self.seconds > 0 else None
        return {"pairs_scored": self.pairs, "scoring_seconds": round(self.seconds, 3),
                "pairs_per_second": None if rate is None else round(rate, 1)}


def model_size(model: Any) -> dict[str, int | None]:
    """Parameters and transformer layers of a loaded scoring model (None where unknown, e.g. ONNX)."""
    import torch

    params = sum(p.numel() for p in model.parameters()) if isinstance(model, torch.nn.Module) else None
    config = getattr(getattr(model, "model", model), "config", None)
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "num_layers", None)
    return {"model_parameters": params, "model_layers": layers}


def long_document_stats(model: Any, dataset: RetrievalDataset, run: Run) -> dict[str, Any] | None:
    """How many reranked candidates exceed the model's window, and whether they were truncated or split."""
    from distilrank.data.passages import passage_stats

    if not hasattr(model, "passages"):
        return None
    return passage_stats(model.tokenizer, candidate_pairs(dataset, run), model.max_length, model.passages)


def candidate_pairs(dataset: RetrievalDataset, run: Run) -> list[tuple[str, str]]:
    """The (query, passage) text pairs of a run's candidates, in query order, each query's best first."""
    return [(dataset.queries[q].text, dataset.corpus[d].contents) for q, hits in run.items() for d, _ in hits
            if d in dataset.corpus]


def render_report(report: RerankReport, first_name: str = "first stage") -> str:
    metrics = list(report.first_stage)
    systems = {first_name: report.first_stage}
    if report.reranked:
        systems["reranker" + (f" (fused, w={report.fusion_weight})" if report.fusion_weight else "")] = report.reranked
    what = f"top-{report.top_k} reranked" if report.reranked else f"first stage top-{report.top_k} (no model given)"
    head = (f"{report.dataset}: {report.queries} queries, {what}, "
            f"recall cap R@{report.top_k} = {report.recall_cap:.4f}, relevance level {report.relevance_level}")
    return head + "\n" + format_table(systems, metrics)
