"""``distilrank train``: read data, build model and task, run the loop, write the run directory.

Also runs chained stages (:func:`run_stages`), each starting from the previous stage's model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from accelerate.utils import set_seed

from distilrank.config import TrainConfig
from distilrank.data.records import Group, SoftGroup
from distilrank.errors import ConfigError
from distilrank.io import atomic_dir, check_output_path, output_lock
from distilrank.models.cross_encoder import CrossEncoder
from distilrank.reports import plot_comparison, plot_loss, read_log, start_run, write_metrics
from distilrank.training.checkpoint import check_resume, checkpoints
from distilrank.training.loop import make_accelerator, train_loop
from distilrank.training.tasks import RerankTask, SoftLabelTask, Student, shuffle_negatives

logger = logging.getLogger(__name__)


class RerankEvaluator:
    """Evaluation on a fixed query sample of a dataset spec; the first stage is computed once."""

    def __init__(self, spec: str, split: str, top_k: int, max_queries: int, batch_size: int = 64) -> None:
        from distilrank.evaluation.run import first_stage_run, resolve_dataset

        self.dataset, given_run = resolve_dataset(spec, split)
        self.run = first_stage_run(self.dataset, given_run, top_k, max_queries)
        self.top_k, self.batch_size = top_k, batch_size

    def __call__(self, model: Student) -> dict[str, float]:
        from distilrank.evaluation.ranking import evaluate_reranking

        scorer = lambda pairs: model.score(pairs, batch_size=self.batch_size)  # noqa: E731
        return evaluate_reranking(self.dataset, self.run, scorer, self.top_k).reranked

    def first_stage(self) -> dict[str, float]:
        from distilrank.evaluation.ranking import evaluate_reranking

        return evaluate_reranking(self.dataset, self.run, None, self.top_k).first_stage


def load_student(cfg: TrainConfig) -> Student:
    """The model to train: a seq2seq (monoT5-style) reranker or a cross-encoder, as the checkpoint says.

    A folder without a classification head (a bare encoder, a distill-mlm student, an embedding model)
    starts a cross-encoder whose head training learns.
    """
    from distilrank.models.kind import ModelKind, detect_model_kind
    from distilrank.models.seq2seq import Seq2SeqReranker

    kind = detect_model_kind(cfg.model, onnx=False)
    if kind in (ModelKind.CAUSAL_LM, ModelKind.ONNX):
        raise ConfigError(f"model {cfg.model} is a {kind.value.replace('_', ' ')}; train starts from an encoder, "
                          "a cross-encoder or a T5-family checkpoint")
    if kind == ModelKind.SEQ2SEQ:
        if cfg.num_layers:
            raise ConfigError(f"num_layers={cfg.num_layers} cuts an encoder's layers, but '{cfg.model}' is a "
                              "seq2seq (T5-style) model; set num_layers=0, or start from a smaller T5 checkpoint")
        return Seq2SeqReranker.from_pretrained(cfg.model, max_length=cfg.max_length)
    if not kind.has_head or kind.is_bi_encoder:
        logger.info("%s has no classification head: training starts a new one", cfg.model)
    return CrossEncoder.from_pretrained(cfg.model, max_length=cfg.max_length, num_layers=cfg.num_layers,
                                        allow_new_head=True)


def apply_passage_split(cfg: TrainConfig, model: Student, examples: Sequence[Any]) -> dict[str, Any] | None:
    """Set the long-document split the model trains (and is saved) with; count the documents it affects."""
    from distilrank.data.passages import describe_stats, passage_stats

    if not isinstance(model, CrossEncoder):
        if cfg.long_documents == "maxp":
            raise ConfigError("long_documents=maxp trains cross-encoders; a seq2seq reranker truncates long "
                              "documents (set long_documents=firstp or leave it empty)")
        return None
    model.passages = model.passages.override(cfg.long_documents, cfg.passage_stride, cfg.max_passages)
    pairs = [(e.query, d) for e in examples for d in _documents(e)]
    stats = passage_stats(model.tokenizer, pairs, model.max_length, model.passages)
    if stats["longer_than_window"]:
        print(describe_stats(stats).replace("candidates", "training pairs"))
    return stats


def _documents(example: Any) -> tuple[str, ...]:
    if isinstance(example, SoftGroup):
        return example.documents
    if isinstance(example, Group):
        return (example.positive, *example.negatives)
    return (example.passage,) if hasattr(example, "passage") else ()


def _make_task(cfg: TrainConfig, model: Student, examples: Sequence[Any]) -> RerankTask | SoftLabelTask:
    """Soft labels train with SoftLabelTask, binary labels (groups, triplets, pairs) with RerankTask."""
    task: RerankTask | SoftLabelTask
    if isinstance(examples[0] if examples else None, SoftGroup):
        task = SoftLabelTask(model, cfg.loss, cfg.group_size, cfg.max_length, cfg.temperature, cfg.targets,
                             cfg.lambda_scheme)
    else:
        task = RerankTask(model, cfg.loss, cfg.group_size, cfg.max_length, cfg.margin, cfg.targets,
                          cfg.temperature, cfg.lambda_scheme)
    try:
        task.check(examples)
    except ConfigError as exc:
        raise ConfigError(f"{cfg.train_file}: {exc}") from None
    return task


def read_examples(train_file: str) -> list[Any]:
    """Training records from a file or hub name; InRanker's two published soft-label sets by their names.

    ``unicamp-dl/InRanker-msmarco`` holds only ids and logits (texts joined from mMARCO) and
    ``unicamp-dl/InRanker-BEIR`` one jsonl file, so they go through their own loader.
    """
    from distilrank.data.hub import INRANKER_BEIR, INRANKER_MSMARCO, load_inranker_dataset
    from distilrank.data.readers import read_training_file

    if train_file.lower() in (INRANKER_BEIR.lower(), INRANKER_MSMARCO.lower()) and not Path(train_file).exists():
        return load_inranker_dataset(train_file)
    return list(read_training_file(train_file))


def run_training(
    cfg: TrainConfig, on_step: Callable[[int], None] | None = None, examples: Sequence[Any] | None = None
) -> dict[str, Any]:
    """Train a reranker as ``cfg`` says; returns the metrics also written to metrics.json.

    ``examples`` (records already loaded, e.g. by the Python API) replace reading ``cfg.train_file``.
    The run folder is checked before any work and locked while the run writes it.
    """
    out = check_output_path(cfg.output_dir, folder=True, setting="output_dir")
    with output_lock(out, "output_dir"):  # a second job on this folder stops here
        check_resume(out, cfg.resume)
        return _train(cfg, on_step, examples)


def _train(cfg: TrainConfig, on_step: Callable[[int], None] | None, examples: Sequence[Any] | None,
           ) -> dict[str, Any]:
    if cfg.task in ("nli", "qa"):  # task heads read their own data (training/nli.py, training/qa.py)
        from distilrank.training.nli import run_nli
        from distilrank.training.qa import run_qa

        return (run_nli if cfg.task == "nli" else run_qa)(cfg, on_step=on_step)
    if cfg.bi_encoder:  # loss triplet/mnrl, or encoder=bi (training/embedding.py)
        from distilrank.training.embedding import run_bi_encoder_training

        return run_bi_encoder_training(cfg, on_step=on_step, examples=examples)
    accelerator = make_accelerator(cfg)
    examples = list(examples) if examples is not None else read_examples(cfg.train_file)
    set_seed(cfg.seed)  # before the model: a fresh classification head is initialised at random
    model = load_student(cfg)
    long_docs = apply_passage_split(cfg, model, examples)
    task = _make_task(cfg, model, examples)
    if isinstance(task, SoftLabelTask):
        examples = task.prepare(examples, cfg.seed)
    elif isinstance(examples[0], Group):
        examples = shuffle_negatives(examples, cfg.seed)
    return train_and_save(cfg, model, task, examples, accelerator, on_step,
                          {"long_documents": long_docs} if long_docs else {})


def train_and_save(cfg: TrainConfig, model: Any, task: Any, examples: Sequence[Any], accelerator: Any,
                   on_step: Callable[[int], None] | None, extra: dict[str, Any], system: str = "reranker",
                   ) -> dict[str, Any]:
    """Run the loop, save ``output_dir/model`` atomically, write metrics and plots; the metrics dict.

    ``extra`` joins the metrics; ``system`` names the trained model in the evaluation plot.
    """
    out = Path(cfg.output_dir)
    evaluate = RerankEvaluator(cfg.eval_data, cfg.eval_split, cfg.eval_top_k, cfg.eval_max_queries) \
        if cfg.eval_data else None
    if accelerator.is_main_process:
        start_run(out, cfg)
    accelerator.wait_for_everyone()
    result = train_loop(cfg, model, task, examples, accelerator, evaluate=evaluate, on_step=on_step)
    metrics: dict[str, Any] = {
        "train": {"steps": result.steps, "examples": result.examples_seen, "seconds": round(result.seconds, 2),
                  "final_loss": result.final_loss, "processes": accelerator.num_processes, "model": system},
        **extra,
    }
    if accelerator.is_main_process:
        with atomic_dir(out / "model") as tmp:  # a kill mid-save leaves no half-written model
            accelerator.unwrap_model(model).save_pretrained(tmp)
        evals = [r["eval"] for r in read_log(out / "metrics.jsonl") if "eval" in r]
        if evaluate is not None and evals:
            metrics["first_stage"] = evaluate.first_stage()
            metrics["reranker"] = evals[-1]
            plot_comparison({"first stage": metrics["first_stage"], system: metrics["reranker"]},
                            out / "metrics.png", title=f"{cfg.eval_data} ({cfg.eval_split})")
        plot_loss(out / "metrics.jsonl", out / "loss.png")
        write_metrics(out, metrics)
    accelerator.wait_for_everyone()
    if cfg.push_to_hub and accelerator.is_main_process:  # after everything is saved: a failed push loses nothing
        from distilrank.hub_push import push_to_hub

        print(f"pushed {out / 'model'} to {push_to_hub(out / 'model', cfg.push_to_hub)}")
    return metrics


def _check_stages(stages: Sequence[tuple[str, TrainConfig]]) -> None:
    """What would stop a later stage, checked before the first one computes anything."""
    if not stages:
        raise ConfigError("no training stages to run")
    for name, cfg in stages:
        done = (Path(cfg.output_dir) / "model").exists()
        if done and not cfg.resume:
            raise ConfigError(f"stage '{name}': {cfg.output_dir} already holds a trained model; choose another "
                              "output_dir, or pass resume=true to skip finished stages")
        file = Path(cfg.train_file).expanduser()
        if not done and not file.exists() and file.suffix.lower() in (".jsonl", ".json", ".tsv"):
            raise ConfigError(f"stage '{name}': train_file {cfg.train_file} does not exist")


def run_stages(stages: Sequence[tuple[str, TrainConfig]], on_step: Callable[[int], None] | None = None,
               ) -> list[dict[str, Any]]:
    """Run training stages in order (see :func:`distilrank.config.load_stages`); one metrics dict each.

    Each stage's config already points its ``model`` at the previous stage's ``output_dir/model``.
    With ``resume=true`` a finished stage (its ``output_dir/model`` exists) is skipped, reporting the
    metrics it wrote, and the first unfinished one resumes from its last checkpoint.
    """
    _check_stages(stages)
    results = []
    for k, (name, cfg) in enumerate(stages):
        out = Path(cfg.output_dir)
        if cfg.resume and (out / "model").exists():
            logger.info("stage %d/%d '%s': finished earlier, skipped", k + 1, len(stages), name)
            saved = out / "metrics.json"
            metrics = json.loads(saved.read_text(encoding="utf-8")) if saved.exists() else {}
            results.append({"stage": name, "output_dir": cfg.output_dir, "skipped": True, **metrics})
            continue
        logger.info("stage %d/%d '%s': %s -> %s", k + 1, len(stages), name, cfg.model, cfg.output_dir)
        # resume=true resumes the pipeline: a stage that never wrote a checkpoint starts from step 0
        metrics = run_training(dataclasses.replace(cfg, resume=cfg.resume and bool(checkpoints(out))), on_step=on_step)
        results.append({"stage": name, "output_dir": cfg.output_dir, "skipped": False, **metrics})
    return results
