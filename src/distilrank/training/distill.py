"""``distilrank distill-mlm``: a DistilBERT-style student from a teacher's layers, by masked-LM KD.

load teacher -> check settings -> pack the corpus into blocks (cached) -> [fit the teacher's MLM
head if it has none] -> build the student from teacher layers -> distil (the one training loop)
-> save the student as a plain Hugging Face checkpoint -> report teacher vs student.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import AutoModelForMaskedLM, PreTrainedModel

from distilrank.config import DistillConfig
from distilrank.data.collate import BlockMasker
from distilrank.errors import ConfigError, DataError
from distilrank.io import check_output_path, output_lock
from distilrank.models.cross_encoder import max_positions
from distilrank.models.student import (
    MaskedLM,
    build_student,
    check_layers,
    count_parameters,
    default_layers,
    load_teacher,
    save_student,
)
from distilrank.reports import plot_loss, read_log, start_run, write_metrics
from distilrank.training.checkpoint import check_resume
from distilrank.training.loop import make_accelerator, train_loop
from distilrank.training.mlm_task import DistillTask

logger = logging.getLogger(__name__)


def _say(accelerator: Accelerator, msg: str) -> None:
    if accelerator.is_main_process:
        print(f"[distill-mlm] {msg}", flush=True)


class MLMEvaluator:
    """Held-out MLM loss and masked-token accuracy; the masking is drawn once, so every call compares alike."""

    def __init__(self, blocks: Sequence[Sequence[int]], masker: BlockMasker, seed: int, batch_size: int = 32) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.batches = [masker([blocks[j] for j in range(i, min(i + batch_size, len(blocks)))])
                            for i in range(0, len(blocks), batch_size)]

    @torch.no_grad()
    def __call__(self, model: MaskedLM) -> dict[str, float]:
        model.eval()
        device = next(model.parameters()).device
        loss, correct, n = 0.0, 0, 0
        for batch in self.batches:
            masked = batch["labels"] != -100  # (B, L)
            _, logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device), masked.to(device))
            labels = batch["labels"][masked].to(device)  # (N,)
            loss += torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum").item()
            correct += int((logits.argmax(-1) == labels).sum())
            n += len(labels)
        return {"mlm_loss": loss / max(n, 1), "mlm_accuracy": correct / max(n, 1), "masked_tokens": n}

    @torch.no_grad()
    def tokens_per_second(self, model: MaskedLM, repeats: int = 2) -> float:
        """Encoder throughput on the held-out blocks (best of ``repeats``): the cost of scoring with it."""
        model.eval()
        device = next(model.parameters()).device
        best = float("inf")
        tokens = sum(int(b["attention_mask"].sum()) for b in self.batches)
        for _ in range(repeats):
            start = time.perf_counter()
            for b in self.batches:
                model(b["input_ids"].to(device), b["attention_mask"].to(device))
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        return tokens / best


def _check_vocab(teacher_tok: Any, student_tok: Any, student: str) -> None:
    t, s = teacher_tok.get_vocab(), student_tok.get_vocab()
    if t != s:
        differ = next((tok for tok, i in sorted(t.items(), key=lambda kv: kv[1]) if s.get(tok) != i), None)
        raise ConfigError(
            f"student '{student}' has a different vocabulary than the teacher ({len(s)} vs {len(t)} tokens"
            + (f"; first difference at token {differ!r}" if differ else "")
            + "): KD compares distributions over the same tokens. Use a student with the teacher's tokenizer, "
            "or leave student empty to build one from the teacher's layers")


def _student_source(cfg: DistillConfig, teacher: PreTrainedModel, tokenizer: Any) -> tuple[PreTrainedModel | None, str]:
    """Check the student settings before any compute; returns (a loaded student or None, a description)."""
    limit = max_positions(teacher.config)
    if limit is not None and cfg.block_size > limit:
        raise ConfigError(f"block_size {cfg.block_size} is above the teacher's maximum input length {limit}")
    if not cfg.student:
        n = teacher.config.num_hidden_layers
        layers = check_layers(cfg.layers or default_layers(n), n)
        return None, f"{len(layers)} of {n} teacher layers {layers} ({cfg.architecture} architecture)"
    student, student_tok, _ = load_teacher(cfg.student)
    _check_vocab(tokenizer, student_tok, cfg.student)
    if cfg.alpha_cos > 0 and student.config.hidden_size != teacher.config.hidden_size:
        raise ConfigError(f"alpha_cos needs equal hidden sizes: student {student.config.hidden_size}, teacher "
                          f"{teacher.config.hidden_size}; set alpha_cos=0 or build the student from the teacher")
    s_limit = max_positions(student.config)
    if s_limit is not None and cfg.block_size > s_limit:
        raise ConfigError(f"block_size {cfg.block_size} is above the student's maximum input length {s_limit}")
    return student, f"the model {cfg.student}"


def corpus_spec(data: str) -> str:
    """``demo`` (or ``demo:SEED``): the embedded demo's corpus file, as ``distilrank demo`` distils on; else ``data``."""
    if data != "demo" and not data.startswith("demo:"):
        return data
    from distilrank.data.demo import demo_folder

    seed = data.split(":", 1)[1] if ":" in data else "13"
    if not seed.isdigit():
        raise ConfigError(f"data={data!r}: write demo or demo:SEED with an integer seed, e.g. demo:13")
    return str(demo_folder(int(seed)) / "corpus.jsonl")


def _load_blocks(cfg: DistillConfig, tokenizer: Any, accelerator: Accelerator) -> tuple[Any, Any, dict[str, Any]]:
    """Tokenize and pack the corpus once (main process first), split off the held-out blocks."""
    from distilrank.data.text import build_block_store

    cache = Path(cfg.cache_dir or Path(cfg.output_dir) / "cache")
    new = [p for p in (cache, *cache.parents) if not p.exists()]  # folders this call creates
    try:
        with accelerator.main_process_first():
            blocks, summary = build_block_store(
                corpus_spec(cfg.data), tokenizer, cfg.block_size, cache, text_field=cfg.text_field,
                min_words=cfg.min_words, hub_config=cfg.data_config or None, hub_split=cfg.data_split,
                max_blocks=cfg.max_blocks, show_progress=accelerator.is_main_process)
        if len(blocks) < 2:
            raise DataError(f"the corpus gives only {len(blocks)} block(s) of {cfg.block_size} tokens; distillation "
                            "needs more text (or a smaller block_size)", path=cfg.data)
    except BaseException:  # bad data leaves no empty cache/ (or output folder) behind
        if accelerator.is_main_process:
            for folder in new:  # the cache first, then the parents this call created, if left empty
                if folder == cache:
                    shutil.rmtree(folder, ignore_errors=True)
                else:
                    _rmdir_if_empty(folder)
        raise
    held = min(cfg.eval_blocks, max(1, len(blocks) // 10))  # never more than a tenth of a small corpus
    return blocks.subset(range(len(blocks) - held)), blocks.subset(range(len(blocks) - held, len(blocks))), summary


def _rmdir_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()


def fit_teacher_head(cfg: DistillConfig, teacher: PreTrainedModel, tokenizer: Any, train_blocks: Any,
                     masker: BlockMasker) -> PreTrainedModel:
    """Fit a missing MLM head with the teacher's encoder frozen (MLM loss only); saved under teacher_head/."""
    head_dir = Path(cfg.output_dir) / "teacher_head"
    if cfg.resume and (head_dir / "model").is_dir():
        return AutoModelForMaskedLM.from_pretrained(head_dir / "model").eval()
    fit_cfg = dataclasses.replace(cfg, output_dir=str(head_dir), max_steps=cfg.head_fit_steps,
                                  learning_rate=cfg.head_fit_lr, eval_steps=0)
    accelerator = make_accelerator(fit_cfg)
    if accelerator.is_main_process:
        head_dir.mkdir(parents=True, exist_ok=True)
    wrapper = MaskedLM(teacher)
    wrapper.freeze_encoder()
    task = DistillTask(masker, None, alpha_ce=0.0, alpha_mlm=1.0, alpha_cos=0.0)
    train_loop(fit_cfg, wrapper, task, train_blocks, accelerator)
    teacher = accelerator.unwrap_model(wrapper).model
    if accelerator.is_main_process:
        save_student(teacher, tokenizer, head_dir / "model")
    accelerator.wait_for_everyone()
    return teacher.eval()


def run_distill(cfg: DistillConfig, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Distil a student as ``cfg`` says; returns the report also written to metrics.json.

    The output folder is checked before any work and locked while the run writes it; the corpus is
    read and checked before any MLM head is fitted, and bad data leaves no cache behind.
    """
    out = check_output_path(cfg.output_dir, folder=True, setting="output_dir")
    with output_lock(out, "output_dir"):  # a second job on this folder stops here
        head_fitted = cfg.resume and (out / "teacher_head" / "model").is_dir() and not (out / "model").exists()
        check_resume(out, cfg.resume and not head_fitted, "distilled model")  # a fitted head is resumable state
        return _distill(cfg, on_step)


def _distill(cfg: DistillConfig, on_step: Callable[[int], None] | None) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    accelerator = make_accelerator(cfg)
    teacher, tokenizer, has_head = load_teacher(cfg.teacher)
    loaded_student, student_desc = _student_source(cfg, teacher, tokenizer)
    train_blocks, held_blocks, corpus = _load_blocks(cfg, tokenizer, accelerator)  # before any head is fitted
    alpha_ce = cfg.alpha_ce
    fit_head = not has_head and cfg.teacher_head == "fit" and (cfg.alpha_ce > 0 or cfg.alpha_mlm > 0)
    if not has_head and cfg.alpha_ce > 0:
        _say(accelerator, f"the teacher {cfg.teacher} has no MLM head: " + (
            f"fitting one first ({cfg.head_fit_steps} steps, encoder frozen)" if fit_head
            else "running without the KL term (teacher_head=skip_kl)"))
        alpha_ce = alpha_ce if fit_head else 0.0
    elif not has_head and fit_head:  # alpha_mlm > 0: the student's MLM head starts from the fitted teacher head
        _say(accelerator, f"the teacher {cfg.teacher} has no MLM head: fitting one first ({cfg.head_fit_steps} "
                          "steps, encoder frozen) to start the student's")
    _say(accelerator, f"corpus: {corpus['documents']} documents, {corpus['blocks']} blocks of {cfg.block_size} "
                      f"tokens ({len(held_blocks)} held out){' (cached)' if corpus['cached'] else ''}")
    masker = BlockMasker(tokenizer, cfg.mlm_probability, cfg.whole_word_mask)
    evaluator = MLMEvaluator(held_blocks, masker, cfg.seed)
    if fit_head:
        teacher = fit_teacher_head(cfg, teacher, tokenizer, train_blocks, masker)
        accelerator = make_accelerator(cfg)  # a fresh one: its checkpoints hold the student alone

    set_seed(cfg.seed)
    student = MaskedLM(loaded_student if loaded_student is not None else build_student(
        teacher, check_layers(cfg.layers or default_layers(teacher.config.num_hidden_layers),
                              teacher.config.num_hidden_layers), cfg.architecture))
    if alpha_ce == 0 and cfg.alpha_mlm == 0:
        student.freeze_head()
    teacher_lm = MaskedLM(teacher).eval().to(accelerator.device)
    for p in teacher_lm.parameters():
        p.requires_grad_(False)
    _say(accelerator, f"student: {student_desc}, {count_parameters(student.model) / 1e6:.2f}M parameters "
                      f"(teacher {count_parameters(teacher) / 1e6:.2f}M)")
    task = DistillTask(masker, teacher_lm if alpha_ce > 0 or cfg.alpha_cos > 0 else None, cfg.temperature,
                       alpha_ce, cfg.alpha_mlm, cfg.alpha_cos, autocast=accelerator.autocast)
    if accelerator.is_main_process:
        start_run(out, cfg)
    accelerator.wait_for_everyone()
    result = train_loop(cfg, student, task, train_blocks, accelerator,
                        evaluate=evaluator if cfg.eval_steps else None, on_step=on_step)
    report: dict[str, Any] = {}
    if accelerator.is_main_process:
        trained = accelerator.unwrap_model(student)
        save_student(trained.model, tokenizer, out / "model")
        report = _report(cfg, result, corpus, evaluator, teacher_lm, trained, has_head, fit_head)
        report["terms"] = {"alpha_ce": alpha_ce, "alpha_mlm": cfg.alpha_mlm, "alpha_cos": cfg.alpha_cos}
        write_metrics(out, report)
        plot_loss(out / "metrics.jsonl", out / "loss.png", eval_key="mlm_accuracy")
        _print_report(report, out)
    accelerator.wait_for_everyone()
    return report


def _report(cfg: DistillConfig, result: Any, corpus: dict[str, Any], evaluator: MLMEvaluator,
            teacher: MaskedLM, student: MaskedLM, has_head: bool, fit_head: bool) -> dict[str, Any]:
    head = "own" if has_head else ("fitted (encoder frozen)" if fit_head else "none (random; KL term skipped)")
    teacher_speed = evaluator.tokens_per_second(teacher)
    student_speed = evaluator.tokens_per_second(student)
    fit_log = read_log(Path(cfg.output_dir) / "teacher_head" / "metrics.jsonl") if fit_head else []
    return {
        "teacher": {"model": cfg.teacher, "mlm_head": head, "parameters": count_parameters(teacher.model),
                    "layers": teacher.model.config.num_hidden_layers, **evaluator(teacher),
                    "tokens_per_second": round(teacher_speed, 1)},
        "student": {"parameters": count_parameters(student.model), "architecture": type(student.model).__name__,
                    "layers": student.model.config.num_hidden_layers, **evaluator(student),
                    "tokens_per_second": round(student_speed, 1)},
        "speed_ratio": round(student_speed / teacher_speed, 3),
        "train": {"steps": result.steps, "blocks": result.examples_seen, "seconds": round(result.seconds, 1),
                  "final_loss": result.final_loss,
                  "head_fit_seconds": fit_log[-1]["elapsed_s"] if fit_log else 0.0},
        "corpus": {k: v for k, v in corpus.items() if k != "path"},
    }


def _print_report(report: dict[str, Any], out: Path) -> None:
    t, s = report["teacher"], report["student"]
    print(f"\n{'':10}{'params':>10}{'layers':>8}{'MLM loss':>10}{'MLM acc':>9}{'tokens/s':>10}")
    for name, row in (("teacher", t), ("student", s)):
        print(f"{name:10}{row['parameters'] / 1e6:>9.2f}M{row['layers']:>8}{row['mlm_loss']:>10.3f}"
              f"{row['mlm_accuracy']:>9.3f}{row['tokens_per_second']:>10.0f}")
    print(f"\nstudent scores {report['speed_ratio']:.2f}x as fast; teacher MLM head: {t['mlm_head']}; "
          f"held-out: {t['masked_tokens']} masked tokens")
    print(f"model: {out / 'model'}   report: {out / 'metrics.json'}, {out / 'loss.png'}")
