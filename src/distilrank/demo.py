"""``distilrank demo``: the whole pipeline, offline, on the embedded default model and dataset.

build data -> distil a 3-layer student from the packaged 6-layer encoder (DistilBERT's losses on the
demo corpus; by default its hidden-state cosine term) -> mine BM25 negatives -> score BM25 and the
untrained student -> fine-tune it as a reranker -> evaluate.

The reranker is by default a bi-encoder (``loss=mnrl``) that scores a (query, document) pair by the
cosine of their mean-pooled embeddings; a cross-encoder loss (``loss=listwise``, ...) fine-tunes a
cross-encoder instead. ``distill_steps=0`` skips distillation and fine-tunes the packaged encoder.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from accelerate.utils import set_seed

from distilrank.config import (
    EMBEDDING_LOSSES,
    DemoConfig,
    DistillConfig,
    MineConfig,
    TrainConfig,
    config_to_dict,
)
from distilrank.data.demo import DemoSizes, build_demo_dataset, write_beir
from distilrank.data.readers import read_beir
from distilrank.evaluation.ranking import evaluate_reranking
from distilrank.evaluation.run import first_stage_run
from distilrank.io import check_output_path
from distilrank.mining.negatives import mine_to_file
from distilrank.models.bi_encoder import BiEncoder
from distilrank.models.cross_encoder import CrossEncoder, keep_first_layers
from distilrank.reports import format_table, plot_comparison, start_run, write_metrics
from distilrank.training.run import run_training

METRICS = ["nDCG@10", "MRR@10"]


def _step(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _memoized(score: Callable[[Sequence[tuple[str, str]]], list[float]]) -> Callable[..., list[float]]:
    memo: dict[tuple[str, str], float] = {}

    def scorer(pairs: Sequence[tuple[str, str]]) -> list[float]:
        missing = list(dict.fromkeys(p for p in pairs if p not in memo))
        if missing:
            memo.update(zip(missing, score(missing)))
        return [memo[p] for p in pairs]

    return scorer


def _terms(cfg: DemoConfig) -> str:
    """The distillation terms in use, e.g. ``cosine loss x1`` or ``KL x5, MLM x2, cosine loss x1``."""
    return ", ".join(f"{name} x{a:g}" for name, a in (("KL", cfg.alpha_ce), ("MLM", cfg.alpha_mlm),
                                                      ("cosine loss", cfg.alpha_cos)) if a)


def _distill_stage(cfg: DemoConfig, corpus: Path, out: Path) -> tuple[str, dict[str, Any]]:
    """Stage 1: a DistilBERT-style student from the teacher's layers, by MLM KD on the demo corpus's text."""
    _step(f"distilling a student from {cfg.model}: {cfg.distill_steps} steps on the demo corpus's text "
          f"({_terms(cfg)})")
    from distilrank.training.distill import run_distill

    report = run_distill(DistillConfig(
        data=str(corpus), teacher=cfg.model, output_dir=str(out), layers=cfg.student_layers, min_words=0,
        max_steps=cfg.distill_steps, batch_size=cfg.distill_batch_size, learning_rate=cfg.distill_learning_rate,
        alpha_ce=cfg.alpha_ce, alpha_mlm=cfg.alpha_mlm, alpha_cos=cfg.alpha_cos,
        head_fit_steps=cfg.head_fit_steps, eval_blocks=128, seed=cfg.seed, log_steps=10))
    return str(out / "model"), report


def _load_reranker(cfg: DemoConfig, path: str) -> CrossEncoder | BiEncoder:
    """The demo's reranker at ``path``: a cross-encoder, or a mean-pooling bi-encoder for an embedding loss."""
    if cfg.loss in EMBEDDING_LOSSES:
        model = BiEncoder.from_pretrained(path, max_length=cfg.max_length)
        if cfg.num_layers:
            keep_first_layers(model.model, cfg.num_layers)
        return model
    return CrossEncoder.from_pretrained(path, max_length=cfg.max_length, num_layers=cfg.num_layers,
                                        allow_new_head=True)  # training learns the head


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = Path(cfg.output_dir or f"distilrank-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    check_output_path(out, folder=True, setting="output_dir")
    start_run(out, cfg)
    _step(f"writing everything to {out}/")

    _step("building the demo dataset from the standard library's docstrings")
    splits = build_demo_dataset(cfg.seed, DemoSizes(test=cfg.test_queries))
    data_dir = write_beir(splits, out / "data")
    train, test = read_beir(data_dir, "train"), read_beir(data_dir, "test")
    _step(f"  {len(train.corpus)} documents, {len(train.queries)} train / {len(test.queries)} test queries")

    model, distilled = cfg.model, None
    if cfg.distill_steps:
        model, distilled = _distill_stage(cfg, data_dir / "corpus.jsonl", out / "distill")

    _step(f"mining {cfg.group_size - 1} BM25 negatives per train query from ranks 1-{cfg.rank_max}")
    groups = out / "train_groups.jsonl"
    mine_to_file(train, MineConfig(data=str(data_dir), output=str(groups), num_negatives=cfg.group_size - 1,
                                   rank_max=cfg.rank_max, seed=cfg.seed))

    run = first_stage_run(test, None, cfg.top_k)
    set_seed(cfg.seed)  # the untrained start's fresh head is the one training starts from
    start = _load_reranker(cfg, model)
    _step(f"scoring BM25 and the untrained starting point on top-{cfg.top_k} of {len(run)} test queries")
    before = evaluate_reranking(test, run, lambda p: start.score(p, show_progress=True), cfg.top_k)

    _step(f"fine-tuning ({cfg.loss} loss, {cfg.max_steps} steps of {cfg.batch_size} groups x {cfg.group_size} docs)")
    train_cfg = TrainConfig(
        train_file=str(groups), model=model, output_dir=str(out / "train"), loss=cfg.loss,
        max_steps=cfg.max_steps, batch_size=cfg.batch_size, group_size=cfg.group_size,
        max_length=cfg.max_length, learning_rate=cfg.learning_rate, warmup_ratio=cfg.warmup_ratio,
        num_layers=cfg.num_layers, seed=cfg.seed, log_steps=10,
    )
    train_metrics = run_training(train_cfg)
    trained = _load_reranker(cfg, str(out / "train" / "model"))
    _step("scoring the trained reranker on the test queries")
    scorer = _memoized(lambda p: trained.score(p, show_progress=True))
    after = evaluate_reranking(test, run, scorer, cfg.top_k)
    systems = {"bm25": before.first_stage, "untrained": before.reranked, "reranker": after.reranked}
    if cfg.fusion_weight:  # same scores, interpolated with BM25's: no second scoring pass
        fused = evaluate_reranking(test, run, scorer, cfg.top_k, fusion_weight=cfg.fusion_weight)
        systems[f"reranker+bm25 (w={cfg.fusion_weight})"] = fused.reranked

    recipe = (f"{cfg.loss} loss over 1 positive + {cfg.group_size - 1} BM25 negatives (ranks 1-{cfg.rank_max}), "
              f"{cfg.batch_size} queries/step, lr {cfg.learning_rate}, {cfg.max_steps} steps, "
              f"max_length {cfg.max_length}, {cfg.num_layers or 'all'} encoder layers of "
              + (f"the {distilled['student']['layers']}-layer student distilled from {cfg.model} "
                 f"({cfg.distill_steps} steps, {_terms(cfg)})" if distilled else cfg.model)
              + ("; 'reranker' is the bi-encoder's cosine alone" if cfg.loss in EMBEDDING_LOSSES
                 else "; 'reranker' is the cross-encoder's score alone")
              + (f", the fused row adds z-normalised BM25 scores with weight {cfg.fusion_weight}"
                 if cfg.fusion_weight else ""))
    metrics = {
        **systems,
        "recall_cap": before.recall_cap, "top_k": cfg.top_k, "test_queries": before.queries,
        "corpus_size": len(test.corpus), "recipe": recipe, "train": train_metrics["train"],
        "distillation": distilled,
        "config": config_to_dict(cfg), "seconds": round(time.perf_counter() - t0, 1),
    }
    write_metrics(out, metrics)
    plot_comparison({k: {m: v[m] for m in METRICS} for k, v in systems.items()}, out / "metrics.png",
                    title=f"demo test set: top-{cfg.top_k} of BM25 reranked")
    print()
    print(format_table(systems, METRICS))
    if distilled:
        print(f"\nstudent: {distilled['student']['layers']} of {distilled['teacher']['layers']} layers, "
              f"{distilled['student']['parameters'] / 1e6:.1f}M parameters (teacher "
              f"{distilled['teacher']['parameters'] / 1e6:.1f}M), encodes {distilled['speed_ratio']:.2f}x as fast")
    print(f"\nrecipe: {recipe}")
    print(f"candidates: BM25 top-{cfg.top_k} (recall cap {before.recall_cap:.3f}); "
          f"{before.queries} held-out queries; {metrics['seconds']:.0f}s in all")
    print(f"model: {out / 'train' / 'model'}   report: {out / 'metrics.json'}, {out / 'metrics.png'}")
    return metrics
