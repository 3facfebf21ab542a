"""The one training loop (Hugging Face Accelerate). A task supplies ``collate`` and ``loss``.

Runs the same under ``python`` and ``accelerate launch --num_processes N`` (each process
takes its own batches: the effective batch is ``batch_size * N * gradient_accumulation_steps``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from distilrank.config import DistillConfig, TrainConfig
from distilrank.data.collate import LengthGroupedBatchSampler
from distilrank.errors import ConfigError
from distilrank.training.checkpoint import LoopState, load_latest, save_checkpoint
from distilrank.training.schedule import warmup_linear
from distilrank.training.tasks import Task

logger = logging.getLogger(__name__)

EvalFn = Callable[[Any], dict[str, float]]


@dataclass
class TrainResult:
    steps: int
    examples_seen: int
    seconds: float
    final_loss: float


def make_accelerator(cfg: TrainConfig | DistillConfig) -> Accelerator:
    from accelerate.state import AcceleratorState

    # accelerate keeps its state per process; a second training in the same process (stages,
    # notebooks, benchmarks) may ask for another precision, so start from a clean state. The
    # process group (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    # cpu=True without CUDA lets torchrun-style launches (`accelerate launch --multi_gpu`,
    # `torchrun`) form a gloo process group on CPU-only hosts instead of N separate runs.
    try:
        return Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
    except ValueError as exc:  # e.g. fp16 without a GPU
        raise ConfigError(f"mixed_precision={cfg.mixed_precision!r} is not available here: {exc}") from None


def _optimizer(model: torch.nn.Module, cfg: TrainConfig | DistillConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # fused: one pass over the weights per step; the per-tensor CPU default makes ~6 (torch >= 2.4)
        return torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=cfg.learning_rate)


def _log(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def _trim_log(path: Path, step: int) -> None:
    """On resume, drop log rows written after the checkpoint we resume from."""
    if path.exists():
        rows = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        path.write_text("".join(ln + "\n" for ln in rows if json.loads(ln)["step"] <= step), encoding="utf-8")


def train_loop(
    cfg: TrainConfig | DistillConfig,
    model: torch.nn.Module,
    task: Task,
    examples: Sequence[Any],
    accelerator: Accelerator,
    evaluate: EvalFn | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``examples``; checkpoints, logs and evaluations go to ``cfg.output_dir``."""
    out = Path(cfg.output_dir)
    log_path = out / "metrics.jsonl"
    set_seed(cfg.seed)
    sampler = LengthGroupedBatchSampler(task.lengths(examples), cfg.batch_size, seed=cfg.seed)
    # A private generator: creating a DataLoader iterator draws a seed from it, and a draw from the
    # global RNG would shift dropout masks between a straight run and a resumed one.
    # Workers only tokenize (collate is deterministic), so a run with workers trains on the same
    # batches as one without; on a GPU, tokenizing in the main process leaves the GPU idle.
    workers = getattr(cfg, "num_workers", 0)
    loader = DataLoader(examples, batch_sampler=sampler, collate_fn=task.collate,  # type: ignore[arg-type]
                        generator=torch.Generator().manual_seed(cfg.seed), num_workers=workers,
                        persistent_workers=workers > 0, pin_memory=workers > 0 and torch.cuda.is_available())
    optimizer = _optimizer(model, cfg)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    ga = cfg.gradient_accumulation_steps
    steps_per_epoch = max(1, math.ceil(len(loader) / ga))
    total = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    warmup = getattr(cfg, "warmup_steps", 0) or int(cfg.warmup_ratio * total)  # warmup_steps > 0 wins
    sched_fn = partial(warmup_linear, warmup_steps=max(1, warmup), total_steps=total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, sched_fn)
    accelerator.register_for_checkpointing(scheduler)

    state = LoopState()
    if cfg.resume:
        state = load_latest(accelerator, out) or state
        if accelerator.is_main_process:
            _trim_log(log_path, state.step)
            logger.info("resumed from step %d", state.step)
    elif accelerator.is_main_process:
        log_path.unlink(missing_ok=True)

    bar = tqdm(total=total, initial=state.step, desc="training", unit="step", disable=not accelerator.is_main_process)
    start, window_losses, last_loss = time.perf_counter(), [], float("nan")
    window_terms: dict[str, list[torch.Tensor]] = {}
    model.train()
    while state.step < total:
        sampler.begin_epoch(state.epoch)
        batches = accelerator.skip_first_batches(loader, state.batches_in_epoch) if state.batches_in_epoch else loader
        for batch in batches:
            state.batches_in_epoch += 1
            sync = state.batches_in_epoch % ga == 0 or state.batches_in_epoch == len(loader)
            with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                loss = task.loss(model, batch)  # scalar, or (scalar, {term name: scalar}) to log its parts
                loss, terms = loss if isinstance(loss, tuple) else (loss, {})
                accelerator.backward(loss / ga)
            window_losses.append(loss.detach().float())
            for name, value in terms.items():
                window_terms.setdefault(name, []).append(value.detach().float())
            if not sync:
                continue
            if cfg.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.examples_seen += cfg.batch_size * ga * accelerator.num_processes
            bar.update(1)
            if state.step % cfg.log_steps == 0 or state.step == total:
                last_loss = accelerator.reduce(torch.stack(window_losses).mean(), "mean").item()
                parts = {f"loss_{k}": accelerator.reduce(torch.stack(v).mean(), "mean").item()
                         for k, v in window_terms.items()}
                window_losses, window_terms = [], {}
                bar.set_postfix(loss=f"{last_loss:.4f}")
                if accelerator.is_main_process:
                    _log(log_path, {"step": state.step, "epoch": state.epoch, "loss": last_loss, **parts,
                                    "lr": scheduler.get_last_lr()[0], "examples": state.examples_seen,
                                    "elapsed_s": round(time.perf_counter() - start, 2)})
            if evaluate and cfg.eval_steps and (state.step % cfg.eval_steps == 0 or state.step == total):
                if accelerator.is_main_process:
                    metrics = evaluate(accelerator.unwrap_model(model))
                    _log(log_path, {"step": state.step, "eval": metrics})
                    model.train()
                accelerator.wait_for_everyone()
            if cfg.save_steps and state.step % cfg.save_steps == 0 and state.step < total:
                save_checkpoint(accelerator, out, state, cfg.save_total_limit)
            if on_step:
                on_step(state.step)
            if state.step >= total:
                break
        else:
            state.epoch, state.batches_in_epoch = state.epoch + 1, 0
    bar.close()
    accelerator.wait_for_everyone()
    return TrainResult(state.step, state.examples_seen, time.perf_counter() - start, last_loss)
