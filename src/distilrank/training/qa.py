"""``distilrank train task=qa``: extractive question answering (SQuAD) with sliding windows.

Each training example is one window of ``max_length`` tokens labelled with the answer's token
span ([CLS] when the window lacks it). Loss: the gold-span cross-entropy, or with a ``teacher``
QA model ``alpha_kd * span_kd_kl(T) + (1 - alpha_kd) * span_ce`` (DistilBERT's SQuAD recipe).
Evaluation: SQuAD exact match / F1 and the validation loss on ``eval_data``, plus exact match / F1
on a fixed sample of training questions (the train curve).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from accelerate.utils import set_seed
from torch import Tensor

from distilrank.config import TrainConfig
from distilrank.data.qa import QAExample, QAWindows, build_windows, read_squad, window_logits
from distilrank.errors import ConfigError
from distilrank.evaluation.qa import evaluate_qa
from distilrank.losses.qa import span_ce, span_kd_kl
from distilrank.models.heads import HeadOptions, QuestionAnswerer
from distilrank.training.head_run import head_options, run_head_training

logger = logging.getLogger(__name__)

TRAIN_SAMPLE = 100  # training questions answered at each evaluation for the train curve


def windows_as_rows(windows: QAWindows) -> list[dict[str, Any]]:
    rows = []
    for i in range(len(windows.input_ids)):
        row: dict[str, Any] = {"input_ids": windows.input_ids[i], "start": windows.starts[i], "end": windows.ends[i]}
        if windows.token_type_ids:
            row["token_type_ids"] = windows.token_type_ids[i]
        rows.append(row)
    return rows


@dataclass
class QATask:
    """Windows -> padded batches; loss = span cross-entropy (+ distillation from ``teacher``)."""

    model: QuestionAnswerer
    teacher: QuestionAnswerer | None = None
    temperature: float = 2.0
    alpha_kd: float = 0.5

    def lengths(self, examples: Sequence[dict[str, Any]]) -> list[int]:
        return [len(e["input_ids"]) for e in examples]

    def collate(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        keys = [k for k in ("input_ids", "token_type_ids") if k in examples[0]]
        features = self.model.tokenizer.pad([{k: e[k] for k in keys} for e in examples], return_tensors="pt")
        return {"features": features, "start": torch.tensor([e["start"] for e in examples]),
                "end": torch.tensor([e["end"] for e in examples])}

    def loss(self, model: Any, batch: dict[str, Any]) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        start, end = model(**batch["features"])  # (B, L), (B, L)
        start, end = start.float(), end.float()
        ce = span_ce(start, end, batch["start"].to(start.device), batch["end"].to(start.device))
        if self.teacher is None:
            return ce
        with torch.no_grad():
            t_start, t_end = self.teacher(**batch["features"].to(start.device))  # (B, L), (B, L)
        kd = span_kd_kl(start, end, t_start.float(), t_end.float(), self.temperature,
                        batch["features"]["attention_mask"].to(start.device))
        return self.alpha_kd * kd + (1 - self.alpha_kd) * ce, {"kd": kd, "ce": ce}


def window_loss(model: QuestionAnswerer, windows: QAWindows, batch_size: int = 32) -> float:
    """Mean gold-span cross-entropy over labelled windows (the validation loss)."""
    encoded = {"input_ids": windows.input_ids, "attention_mask": [[1] * len(x) for x in windows.input_ids]}
    if windows.token_type_ids:
        encoded["token_type_ids"] = windows.token_type_ids
    starts, ends = window_logits(model, encoded, batch_size)
    losses = []
    for s, e, a, b in zip(starts, ends, windows.starts, windows.ends):
        ls = -(s[a] - np.logaddexp.reduce(s))
        le = -(e[b] - np.logaddexp.reduce(e))
        losses.append((ls + le) / 2)
    return float(np.mean(losses)) if losses else float("nan")


class QAEvaluator:
    """Exact match / F1 and loss on the evaluation questions, exact match / F1 on a training sample."""

    def __init__(self, model: QuestionAnswerer, eval_examples: Sequence[QAExample],
                 train_sample: Sequence[QAExample]) -> None:
        self.eval_examples, self.train_sample = list(eval_examples), list(train_sample)
        self.windows = build_windows(model.tokenizer, self.eval_examples, model.text_length, model.doc_stride)

    def __call__(self, model: QuestionAnswerer) -> dict[str, Any]:
        out: dict[str, Any] = dict(evaluate_qa(model, self.eval_examples))
        out["loss"] = window_loss(model, self.windows)
        train = evaluate_qa(model, self.train_sample)
        out.update(train_exact_match=train["exact_match"], train_f1=train["f1"])
        return out


def load_teacher(cfg: TrainConfig, student: QuestionAnswerer, device: torch.device) -> QuestionAnswerer:
    teacher = QuestionAnswerer.from_pretrained(cfg.teacher, HeadOptions(max_length=student.text_length))
    if teacher.tokenizer.get_vocab() != student.tokenizer.get_vocab():
        raise ConfigError(f"teacher '{cfg.teacher}' has another vocabulary than the student '{cfg.model}': its "
                          "start/end logits would refer to other tokens; use a teacher with the same tokenizer")
    teacher.eval().requires_grad_(False)
    return teacher.to(device)


def run_qa(cfg: TrainConfig, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train an extractive QA model as ``cfg`` says (task=qa); returns the metrics written to metrics.json."""
    from distilrank.training.loop import make_accelerator

    accelerator = make_accelerator(cfg)
    train = read_squad(cfg.train_file, "train")
    set_seed(cfg.seed)  # before the model: the fresh qa_outputs head and soft prompt are random
    model = QuestionAnswerer.from_pretrained(cfg.model, head_options(cfg))
    model.doc_stride = cfg.doc_stride or model.max_length // 4
    model.max_answer_length, model.n_best = cfg.max_answer_length, cfg.n_best
    windows = build_windows(model.tokenizer, train.examples, model.text_length, model.doc_stride)
    rows = windows_as_rows(windows)
    if not rows:
        raise ConfigError(f"{cfg.train_file}: no training window holds an answer (max_length {cfg.max_length})")
    info: dict[str, Any] = {"train_examples": len(train.examples), "train_windows": len(rows),
                            "train_unanswerable_skipped": train.unanswerable, **windows.skipped}
    evaluate = None
    if cfg.eval_data:
        dev = read_squad(cfg.eval_data, cfg.eval_split, cfg.eval_max_examples)
        sample = train.examples[:: max(1, len(train.examples) // TRAIN_SAMPLE)][:TRAIN_SAMPLE]
        evaluate = QAEvaluator(model, dev.examples, sample)
        info.update(eval_examples=len(dev.examples))
    teacher = load_teacher(cfg, model, accelerator.device) if cfg.teacher else None
    task = QATask(model, teacher, cfg.temperature, cfg.alpha_kd)
    return run_head_training(cfg, accelerator, model, task, rows, evaluate, info, on_step)
