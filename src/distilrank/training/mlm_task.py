"""DistilBERT's masked-LM distillation task: soft MLM targets at temperature T, the MLM loss and the hidden-state
cosine term (a task for :func:`distilrank.training.loop.train_loop`, like those of :mod:`distilrank.training.tasks`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from distilrank.data.collate import BlockMasker
from distilrank.losses import hidden_cosine, kd_kl, mlm_ce


@dataclass
class DistillTask:
    """Masked-LM knowledge distillation (DistilBERT): loss = alpha_ce * kd_kl + alpha_mlm * mlm_ce + alpha_cos * cos.

    ``kd_kl`` compares temperature-softened teacher and student MLM distributions at the masked
    positions, ``mlm_ce`` is the student's MLM loss there, and ``hidden_cosine`` pulls the student's
    last hidden states towards the teacher's at every non-padding position. A term whose alpha is
    0 is not computed, and without ``alpha_ce`` and ``alpha_cos`` the teacher is not run at all.
    ``model`` and ``teacher`` are :class:`distilrank.models.student.MaskedLM` modules.
    """

    masker: BlockMasker
    teacher: Any = None
    temperature: float = 2.0
    alpha_ce: float = 5.0
    alpha_mlm: float = 2.0
    alpha_cos: float = 1.0
    autocast: Callable[[], AbstractContextManager[Any]] = field(default=contextlib.nullcontext)

    def lengths(self, examples: Sequence[Any]) -> list[int]:
        return examples.lengths() if hasattr(examples, "lengths") else [len(e) for e in examples]

    def collate(self, examples: Sequence[Any]) -> dict[str, Any]:
        return self.masker.pad(examples)

    def loss(self, model: Any, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        # masked here, not in collate: the RNG draws then line up with checkpoints (exact resume)
        attention = batch["attention_mask"]
        ids, labels = self.masker.mask(batch["input_ids"], attention) if "labels" not in batch else (
            batch["input_ids"], batch["labels"])
        masked = labels != -100  # (B, L)
        wants_logits = self.alpha_ce > 0 or self.alpha_mlm > 0
        hidden, logits = model(ids, attention, masked if wants_logits else None)  # (B, L, H), (N, V)
        t_hidden = t_logits = None
        if self.alpha_ce > 0 or self.alpha_cos > 0:
            with torch.no_grad(), self.autocast():
                t_hidden, t_logits = self.teacher(ids, attention, masked if self.alpha_ce > 0 else None)
        terms: dict[str, Tensor] = {}
        has_masked = bool(masked.any())  # a batch of tiny blocks may have no masked token
        if self.alpha_ce > 0:
            terms["ce"] = kd_kl(logits, t_logits, self.temperature) if has_masked else logits.sum() * 0
        if self.alpha_mlm > 0:
            terms["mlm"] = mlm_ce(logits, labels[masked]) if has_masked else logits.sum() * 0
        if self.alpha_cos > 0:
            keep = attention.bool()  # (B, L)
            terms["cos"] = hidden_cosine(hidden[keep], t_hidden[keep].to(hidden.dtype))  # (T, H) real tokens
        alphas = {"ce": self.alpha_ce, "mlm": self.alpha_mlm, "cos": self.alpha_cos}
        total = sum(alphas[k] * v for k, v in terms.items())
        return total, terms  # type: ignore[return-value]
