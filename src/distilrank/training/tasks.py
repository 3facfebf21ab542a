"""Tasks: what a batch looks like and how its loss is computed. The loop knows nothing else."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from distilrank.data.collate import pair_lengths
from distilrank.data.records import Group, LabeledPair
from distilrank.errors import ConfigError
from distilrank.losses import listwise_softmax_ce, margin_mse, pairwise_margin, pointwise_bce
from distilrank.models.cross_encoder import CrossEncoder


class Task(Protocol):
    def lengths(self, examples: Sequence[Any]) -> list[int]: ...
    def collate(self, examples: Sequence[Any]) -> dict[str, Any]: ...
    def loss(self, model: Any, batch: dict[str, Any]) -> Tensor: ...


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
