"""The run directory of a task-head training (nli, qa): loop, model, metrics.json and curves.

``metrics.json`` records what ``distilrank compare`` tabulates: task, model, method (full
fine-tuning, head only, soft prompt with or without the backbone), trainable and total
parameters, training time and the last evaluation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from distilrank.config import TrainConfig
from distilrank.errors import ConfigError
from distilrank.io import atomic_dir
from distilrank.models.heads import HeadOptions
from distilrank.models.prompts import count_parameters
from distilrank.reports import plot_loss, read_log, start_run, write_metrics
from distilrank.training.loop import train_loop

logger = logging.getLogger(__name__)


def head_options(cfg: TrainConfig) -> HeadOptions:
    return HeadOptions(max_length=cfg.max_length, num_layers=cfg.num_layers, prompt_tokens=cfg.prompt_tokens,
                       prompt_method=cfg.prompt_method, freeze_backbone=cfg.freeze_backbone)


def method_name(cfg: TrainConfig) -> str:
    """``full``, ``head-only``, ``prompt-20`` (frozen backbone), ``prompt-20+backbone``, ``p-tuning-20``..."""
    if not cfg.prompt_tokens:
        return "head-only" if cfg.freeze_backbone else "full"
    name = f"{'p-tuning' if cfg.prompt_method == 'p_tuning' else 'prompt'}-{cfg.prompt_tokens}"
    return name if cfg.freeze_backbone else f"{name}+backbone"


def run_head_training(
    cfg: TrainConfig,
    accelerator: Accelerator,
    model: Any,
    task: Any,
    examples: Sequence[Any],
    evaluate: Callable[[Any], dict[str, Any]] | None,
    data_info: dict[str, Any],
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train, save ``model/`` (with its head and soft prompt), write metrics.json and the PNG curves."""
    from distilrank.compare import plot_curves

    out = Path(cfg.output_dir)
    trainable, total = count_parameters(model)
    if not trainable:
        raise ConfigError("nothing to train: the backbone is frozen and the model has no trainable head")
    if accelerator.is_main_process:
        start_run(out, cfg)
    accelerator.wait_for_everyone()
    result = train_loop(cfg, model, task, examples, accelerator, evaluate=evaluate, on_step=on_step)
    metrics: dict[str, Any] = {
        "task": cfg.task, "model": cfg.model, "method": method_name(cfg),
        "trainable_params": trainable, "total_params": total, "data": data_info,
        "train": {"steps": result.steps, "examples": result.examples_seen, "seconds": round(result.seconds, 2),
                  "final_loss": result.final_loss, "processes": accelerator.num_processes},
    }
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        with atomic_dir(out / "model") as tmp:  # a kill mid-save leaves no half-written model
            unwrapped.save_pretrained(tmp)
        evals = [r["eval"] for r in read_log(out / "metrics.jsonl") if "eval" in r]
        if evaluate is not None and not evals:  # eval_steps=0: evaluate once, at the end
            evals = [evaluate(unwrapped)]
            with (out / "metrics.jsonl").open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": result.steps, "eval": evals[0]}) + "\n")
        if evals:
            metrics["eval"] = evals[-1]
        key = "accuracy" if cfg.task == "nli" else "f1"
        plot_loss(out / "metrics.jsonl", out / "loss.png", eval_key=key)
        plot_curves(out / "metrics.jsonl", out / "curves.png", key, title=f"{cfg.task} {method_name(cfg)}")
        write_metrics(out, metrics)
    accelerator.wait_for_everyone()
    return metrics
