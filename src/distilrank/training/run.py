"""``distilrank train``: read data, build model and task, run the loop, write the run directory."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accelerate.utils import set_seed

from distilrank.config import TrainConfig
from distilrank.data.records import Group
from distilrank.errors import ConfigError
from distilrank.io import atomic_dir
from distilrank.models.cross_encoder import CrossEncoder
from distilrank.reports import plot_comparison, plot_loss, read_log, start_run, write_metrics
from distilrank.training.loop import make_accelerator, train_loop
from distilrank.training.tasks import RerankTask, shuffle_negatives

logger = logging.getLogger(__name__)


class RerankEvaluator:
    """Evaluation on a fixed query sample of a dataset spec; the first stage is computed once."""

    def __init__(self, spec: str, split: str, top_k: int, max_queries: int, batch_size: int = 64) -> None:
        from distilrank.evaluation.run import first_stage_run, resolve_dataset

        self.dataset, given_run = resolve_dataset(spec, split)
        self.run = first_stage_run(self.dataset, given_run, top_k, max_queries)
        self.top_k, self.batch_size = top_k, batch_size

    def __call__(self, model: CrossEncoder) -> dict[str, float]:
        from distilrank.evaluation.ranking import evaluate_reranking

        scorer = lambda pairs: model.score(pairs, batch_size=self.batch_size)  # noqa: E731
        return evaluate_reranking(self.dataset, self.run, scorer, self.top_k).reranked

    def first_stage(self) -> dict[str, float]:
        from distilrank.evaluation.ranking import evaluate_reranking

        return evaluate_reranking(self.dataset, self.run, None, self.top_k).first_stage


def run_training(cfg: TrainConfig, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train a cross-encoder as ``cfg`` says; returns the metrics also written to metrics.json."""
    from distilrank.data.readers import read_training_file

    out = Path(cfg.output_dir)
    if out.exists() and (out / "model").exists() and not cfg.resume:
        raise ConfigError(f"{out} already holds a trained model; choose another output_dir or pass resume=true")
    accelerator = make_accelerator(cfg)
    examples = read_training_file(cfg.train_file)
    set_seed(cfg.seed)  # before the model: a fresh classification head is initialised at random
    model = CrossEncoder.from_pretrained(cfg.model, max_length=cfg.max_length, num_layers=cfg.num_layers)
    task = RerankTask(model, cfg.loss, cfg.group_size, cfg.max_length, cfg.margin)
    task.check(examples)
    if isinstance(examples[0], Group):
        examples = shuffle_negatives(examples, cfg.seed)
    evaluate: RerankEvaluator | None = None
    if cfg.eval_data:
        evaluate = RerankEvaluator(cfg.eval_data, cfg.eval_split, cfg.eval_top_k, cfg.eval_max_queries)
    if accelerator.is_main_process:
        start_run(out, cfg)
    accelerator.wait_for_everyone()
    result = train_loop(cfg, model, task, examples, accelerator, evaluate=evaluate, on_step=on_step)
    metrics: dict[str, Any] = {
        "train": {"steps": result.steps, "examples": result.examples_seen, "seconds": round(result.seconds, 2),
                  "final_loss": result.final_loss, "processes": accelerator.num_processes},
    }
    if accelerator.is_main_process:
        with atomic_dir(out / "model") as tmp:  # a kill mid-save leaves no half-written model
            accelerator.unwrap_model(model).save_pretrained(tmp)
        evals = [r["eval"] for r in read_log(out / "metrics.jsonl") if "eval" in r]
        if evaluate is not None and evals:
            metrics["first_stage"] = evaluate.first_stage()
            metrics["reranker"] = evals[-1]
            plot_comparison({"first stage": metrics["first_stage"], "reranker": metrics["reranker"]},
                            out / "metrics.png", title=f"{cfg.eval_data} ({cfg.eval_split})")
        plot_loss(out / "metrics.jsonl", out / "loss.png")
        write_metrics(out, metrics)
    accelerator.wait_for_everyone()
    return metrics
