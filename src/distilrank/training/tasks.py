"""Tasks: what a batch looks like and how its loss is computed. The loop knows nothing else."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from distilrank.data.collate import BlockMasker, pair_lengths
from distilrank.data.records import Group, LabeledPair
from distilrank.errors import ConfigError
from distilrank.losses import (
    hidden_cosine,
    kd_kl,
    listwise_softmax_ce,
    margin_mse,
    mlm_ce,
    pairwise_margin,
    pointwise_bce,
)
from distilrank.models.cross_encoder import CrossEncoder


class Task(Protocol):
    def lengths(self, examples: Sequence[Any]) -> list[int]: ...
    def collate(self, examples: Sequence[Any]) -> dict[str, Any]: ...
    def loss(self, model: Any, batch: dict[str, Any]) -> Tensor | tuple[Tensor, dict[str, Tensor]]: ...


@dataclass
class RerankTask:
    """Cross-encoder training on groups (listwise, pairwise, margin_mse, bce) or labeled pairs (bce).

    Groups are cut to ``group_size`` documents (positive + first negatives). For ``bce`` a group
    becomes pairs labeled 1 (positive) and 0 (negatives).
    """

    model: CrossEncoder
    loss_name: str
    group_size: int = 8
    max_length: int = 128
    margin: float = 1.0

    def check(self, examples: Sequence[Any]) -> None:
        if not examples:
            raise ConfigError("the training file holds no examples")
        if isinstance(examples[0], LabeledPair) and self.loss_name != "bce":
            raise ConfigError(f"labeled pairs {{query, passage, label}} train with loss=bce, not {self.loss_name!r}")
        if self.loss_name == "margin_mse" and any(g.teacher_scores is None for g in examples):
            raise ConfigError("loss=margin_mse needs teacher scores: groups jsonl with a 'scores' list")

    def lengths(self, examples: Sequence[Any]) -> list[int]:
        """Padded width each example brings to a batch: its longest pair in exact tokens."""
        queries, docs, owner = [], [], []
        for k, e in enumerate(examples):
            texts = [e.passage] if isinstance(e, LabeledPair) else self._docs(e)[0]
            queries += [e.query] * len(texts)
            docs += texts
            owner += [k] * len(texts)
        widths = [0] * len(examples)
        for k, n in zip(owner, pair_lengths(self.model.tokenizer, queries, docs, self.max_length)):
            widths[k] = max(widths[k], n)
        return widths

    def _docs(self, group: Group) -> tuple[list[str], list[float] | None]:
        n = min(self.group_size, len(group.documents))
        scores = list(group.teacher_scores[:n]) if group.teacher_scores is not None else None
        return list(group.documents[:n]), scores

    def collate(self, examples: Sequence[Any]) -> dict[str, Any]:
        if isinstance(examples[0], LabeledPair):
            features = self.model.tokenize([e.query for e in examples], [e.passage for e in examples], self.max_length)
            return {"features": features, "labels": torch.tensor([float(e.label) for e in examples])}
        # groups: pad every group to the batch's smallest common size so the scores form (B, G)
        size = min(min(self.group_size, len(g.documents)) for g in examples)
        queries, docs, teacher = [], [], []
        for g in examples:
            d, s = self._docs(g)
            queries += [g.query] * size
            docs += d[:size]
            if s is not None:
                teacher.append(s[:size])
        batch: dict[str, Any] = {"features": self.model.tokenize(queries, docs, self.max_length), "group_size": size}
        if teacher and len(teacher) == len(examples):
            batch["teacher"] = torch.tensor(teacher)  # (B, G)
        return batch

    def loss(self, model: Any, batch: dict[str, Any]) -> Tensor:
        scores = model(**batch["features"])  # (B*G,) or (B,) for pairs
        if "labels" in batch:
            return pointwise_bce(scores, batch["labels"].to(scores.device))
        scores = scores.view(-1, batch["group_size"])  # (B, G): positive first
        if self.loss_name == "listwise":
            return listwise_softmax_ce(scores)
        if self.loss_name == "pairwise":
            return pairwise_margin(scores[:, 0], scores[:, 1:], self.margin)
        if self.loss_name == "margin_mse":
            t = batch["teacher"].to(scores.device)  # (B, G)
            return margin_mse(scores[:, 0], scores[:, 1:], t[:, :1] - t[:, 1:])
        labels = torch.zeros_like(scores)
        labels[:, 0] = 1.0
        return pointwise_bce(scores.reshape(-1), labels.reshape(-1))


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


def shuffle_negatives(groups: Sequence[Group], seed: int) -> list[Group]:
    """A fixed, seeded shuffle of each group's negatives so group_size cuts are unbiased."""
    rng = random.Random(seed)
    out = []
    for g in groups:
        order = list(range(len(g.negatives)))
        rng.shuffle(order)
        scores = g.teacher_scores
        if scores is not None:
            scores = (scores[0], *[scores[1 + i] for i in order])
        out.append(Group(g.query, g.positive, tuple(g.negatives[i] for i in order), scores))
    return out
