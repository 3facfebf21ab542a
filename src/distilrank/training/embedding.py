"""Bi-encoder training (``loss=triplet`` or ``mnrl``, or soft labels with ``encoder=bi``) through the one loop.

Queries and passages are embedded separately by the same encoder; the triplet loss pulls a
query towards its positive and pushes it from its negatives by a margin over cosine or
Euclidean distance (the DistilBERT reranking recipe); multiple-negatives ranking uses every
other passage of the batch as a negative too. On a teacher's soft labels (``distilrank label``
output, ``loss=kl``, ``margin_mse`` or ``logit_mse``) the bi-encoder's score of a pair is
``scale * cos(query, passage)`` and learns the teacher's scores as a cross-encoder student does
(a cross-encoder teacher distilled into a bi-encoder, as in Hofstätter et al., 2020). The result
is a plain HF folder that
:class:`~distilrank.inference.reranker.Reranker` scores by cosine and ``distilrank mine
retriever=dense`` uses as a first stage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from torch import Tensor

from distilrank.config import EMBED_DISTILL, EMBEDDING_LOSSES, LTR_LOSSES, SOFT_LOSSES, TrainConfig
from distilrank.data.records import Group, SoftGroup
from distilrank.errors import ConfigError
from distilrank.losses.embedding import (
    embedding_mse,
    in_batch_kl,
    multiple_negatives_ranking,
    triplet_margin,
)
from distilrank.models.bi_encoder import BiEncoder
from distilrank.training.tasks import SoftLabelTask, split_soft_groups

logger = logging.getLogger(__name__)


def longest_in_tokens(model: BiEncoder, texts_per_example: Iterable[list[str]], max_length: int) -> list[int]:
    """Each example's longest text in ``model``'s tokens (truncated at ``max_length``): its padded batch width."""
    return [max(len(ids) for ids in model.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"])
            for texts in texts_per_example]


@dataclass
class EmbeddingTask:
    """Groups (query, positive, negatives) -> query ``(B, D)`` and passage ``(B, G, D)`` embeddings -> loss."""

    model: BiEncoder
    loss_name: str
    group_size: int = 8
    max_length: int = 128
    margin: float = 1.0
    distance: str = "cosine"
    scale: float = 20.0

    def check(self, examples: Sequence[Any]) -> None:
        if not examples:
            raise ConfigError("the training file holds no examples")
        if not all(isinstance(e, Group) for e in examples):
            raise ConfigError(f"loss={self.loss_name} trains a bi-encoder on triplets or groups {{query, positive, "
                              f"negatives}}; this file holds {type(examples[0]).__name__} records")
        if self.loss_name in LTR_LOSSES:
            raise ConfigError(f"a bi-encoder trains loss={self.loss_name} on a teacher's soft labels (distilrank label "
                              "writes them); on binary groups or triplets train it with loss=mnrl or triplet")
        if self.loss_name not in EMBEDDING_LOSSES:
            raise ConfigError(f"loss={self.loss_name} learns a teacher's soft labels, but this file holds binary "
                              "labels (groups or triplets); train the bi-encoder with loss=mnrl or triplet, or "
                              "label the pairs first (distilrank label)")

    def lengths(self, examples: Sequence[Group]) -> list[int]:
        """Padded width each group brings to a batch: its longest text in tokens."""
        return longest_in_tokens(self.model, ([g.query, *g.documents[: self.group_size]] for g in examples),
                                 self.max_length)

    def collate(self, examples: Sequence[Group]) -> dict[str, Any]:
        size = min(min(self.group_size, len(g.documents)) for g in examples)
        docs = [d for g in examples for d in g.documents[:size]]
        return {"queries": self.model.tokenize([g.query for g in examples], self.max_length),
                "docs": self.model.tokenize(docs, self.max_length), "group_size": size}

    def loss(self, model: Any, batch: dict[str, Any]) -> Tensor:
        q = model(**batch["queries"])  # (B, D)
        d = model(**batch["docs"]).view(len(q), batch["group_size"], -1)  # (B, G, D): positive first
        if self.loss_name == "triplet":
            return triplet_margin(q, d[:, 0], d[:, 1:], self.margin, self.distance)
        return multiple_negatives_ranking(q, d[:, 0], d[:, 1:] if d.shape[1] > 1 else None, self.scale)


@dataclass
class EmbeddingSoftLabelTask(SoftLabelTask):
    """A bi-encoder learning a teacher's soft labels: the score of (q, d) is ``scale * cos(q, d)``.

    Sub-groups, checks and losses are :class:`~distilrank.training.tasks.SoftLabelTask`'s; only the
    features differ: each query is embedded once, each document once, and document ``i`` is scored
    against the query of its sub-group (``owner[i]``).
    """

    scale: float = 20.0

    def check(self, examples: Sequence[Any]) -> None:
        if self.loss_name not in SOFT_LOSSES + LTR_LOSSES:
            raise ConfigError(f"the training data holds a teacher's soft labels, which loss={self.loss_name} cannot "
                              "learn from; a bi-encoder learns them with encoder=bi and loss=kl, margin_mse or "
                              f"logit_mse, or an LTR loss ({', '.join(LTR_LOSSES)})")
        super().check(examples)

    def lengths(self, examples: Sequence[SoftGroup]) -> list[int]:
        """Padded width each sub-group brings to a batch: its longest text (query or document) in tokens."""
        return longest_in_tokens(self.model, ([g.query, *g.documents] for g in examples), self.max_length)

    def collate(self, examples: Sequence[SoftGroup]) -> dict[str, Any]:
        owner = [i for i, g in enumerate(examples) for _ in g.documents]
        return {"queries": self.model.tokenize([g.query for g in examples], self.max_length),
                "docs": self.model.tokenize([d for g in examples for d in g.documents], self.max_length),
                "owner": torch.tensor(owner), **self.labels(examples)}

    def loss(self, model: Any, batch: dict[str, Any]) -> Tensor:
        q = F.normalize(model(**batch["queries"]), dim=-1)  # (B, D)
        d = F.normalize(model(**batch["docs"]), dim=-1)  # (N, D)
        scores = self.scale * (q[batch["owner"].to(q.device)] * d).sum(-1)  # (N,)
        return self.soft_loss(scores, batch)


@dataclass
class EmbeddingDistillTask:
    """A bi-encoder learning a teacher bi-encoder online, from the training texts alone (no labels are read).

    ``loss_name``:

    * ``embed_mse``: the student's unit embeddings of every text (queries and documents) regress on the
      teacher's (:func:`~distilrank.losses.embedding_mse`), the recipe of sentence-transformers'
      model-distillation example (``MSELoss``), which shrinks a bi-encoder to fewer layers. Both models must
      embed in the same size.
    * ``embed_kl``: each query's softmax over its cosines to *every* document of the batch (its own and the
      other queries') matches the teacher's, at ``temperature`` (:func:`~distilrank.losses.in_batch_kl`): the
      teacher's judgement of ``batch_size x group_size`` documents per query and step, not only of the query's
      own ``group_size``. Any embedding sizes.

    Records are groups, triplets or a teacher's soft labels (only the texts are read); each record's documents
    are cut into sub-groups of at most ``group_size`` after a seeded shuffle (:func:`split_soft_groups`), so every
    document is read once per epoch. Each model reads the texts through its own tokenizer, so the teacher may
    have another vocabulary.
    """

    model: BiEncoder
    teacher: BiEncoder
    loss_name: str = "embed_mse"
    group_size: int = 8
    max_length: int = 128
    temperature: float = 0.05

    def check(self, examples: Sequence[Any]) -> None:
        if not examples:
            raise ConfigError("the training file holds no examples")
        if not all(isinstance(e, Group | SoftGroup) for e in examples):
            raise ConfigError(f"loss={self.loss_name} reads the texts of groups, triplets or soft labels "
                              f"{{query, documents}}; this file holds {type(examples[0]).__name__} records")
        if self.loss_name == "embed_mse" and self.teacher.dim != self.model.dim:
            raise ConfigError(f"the teacher's embeddings have {self.teacher.dim} dimensions and the student's "
                              f"{self.model.dim}: embed_mse needs the same size (build the student from the "
                              "teacher's layers, e.g. distilrank distill-mlm, or use loss=embed_kl)")

    def prepare(self, examples: Sequence[Group | SoftGroup], seed: int) -> list[SoftGroup]:
        """Each record's query with sub-groups of its documents (texts only; the scores are not read)."""
        texts = [e if isinstance(e, SoftGroup) else SoftGroup(e.query, e.documents, (0.0,) * len(e.documents))
                 for e in examples]
        return split_soft_groups(texts, self.group_size, seed)

    def lengths(self, examples: Sequence[SoftGroup]) -> list[int]:
        """Padded width each sub-group brings to a batch: its longest text in the student's tokens."""
        return longest_in_tokens(self.model, ([e.query, *e.documents] for e in examples), self.max_length)

    def collate(self, examples: Sequence[SoftGroup]) -> dict[str, Any]:
        texts = [t for e in examples for t in (e.query, *e.documents)]
        is_query = torch.tensor([k == 0 for e in examples for k in range(1 + len(e.documents))])
        return {"student": self.model.tokenize(texts, self.max_length),
                "teacher": self.teacher.tokenize(texts, self.max_length), "is_query": is_query}

    def loss(self, model: Any, batch: dict[str, Any]) -> Tensor:
        with torch.no_grad():
            target = F.normalize(self.teacher(**batch["teacher"]), dim=-1)  # (T, D')
        student = F.normalize(model(**batch["student"]), dim=-1)  # (T, D)
        if self.loss_name == "embed_mse":
            return embedding_mse(student, target)
        q = batch["is_query"].to(student.device)  # (T,): each sub-group's query, then its documents
        return in_batch_kl(student[q], student[~q], target[q], target[~q], self.temperature)


def load_embedding_teacher(cfg: TrainConfig, device: torch.device) -> BiEncoder:
    """The teacher of ``loss=embed_mse`` or ``embed_kl``: a bi-encoder folder, frozen, on the training device."""
    from distilrank.models.kind import ModelKind, detect_model_kind

    kind = detect_model_kind(cfg.teacher)
    if kind not in (ModelKind.BI_ENCODER, ModelKind.ST_BI_ENCODER):
        raise ConfigError(f"teacher '{cfg.teacher}' is a {kind.value} model; loss={cfg.loss} learns the "
                          "embeddings of a bi-encoder (a sentence-transformers embedding model or a folder that "
                          "distilrank train saved as a bi-encoder)")
    teacher = BiEncoder.from_pretrained(cfg.teacher, max_length=cfg.max_length)
    teacher.eval().requires_grad_(False)
    return teacher.to(device)


def load_bi_encoder(cfg: TrainConfig) -> BiEncoder:
    from distilrank.models.cross_encoder import keep_first_layers

    model = BiEncoder.from_pretrained(cfg.model, pooling=cfg.pooling, max_length=cfg.max_length)
    if cfg.num_layers:
        keep_first_layers(model.model, cfg.num_layers)
    return model


def run_bi_encoder_training(cfg: TrainConfig, on_step: Callable[[int], None] | None = None,
                            examples: Sequence[Any] | None = None) -> dict[str, Any]:
    """Train a bi-encoder as ``cfg`` says (binary labels: ``loss`` triplet or mnrl; soft labels: kl, margin_mse,
    logit_mse or an LTR loss; a teacher bi-encoder online: embed_mse or embed_kl); the model goes to
    ``output_dir/model``."""
    from distilrank.training.loop import make_accelerator
    from distilrank.training.run import read_examples, train_and_save
    from distilrank.training.tasks import shuffle_negatives

    accelerator = make_accelerator(cfg)
    examples = list(examples) if examples is not None else read_examples(cfg.train_file)
    set_seed(cfg.seed)
    model = load_bi_encoder(cfg)
    task: EmbeddingTask | EmbeddingSoftLabelTask | EmbeddingDistillTask
    if cfg.loss in EMBED_DISTILL:
        task = EmbeddingDistillTask(model, load_embedding_teacher(cfg, accelerator.device), cfg.loss, cfg.group_size,
                                    cfg.max_length, cfg.temperature)
    elif examples and isinstance(examples[0], SoftGroup):
        task = EmbeddingSoftLabelTask(model, cfg.loss, cfg.group_size, cfg.max_length, cfg.temperature,  # type: ignore[arg-type]
                                      cfg.targets, cfg.lambda_scheme, scale=cfg.scale)
    else:
        task = EmbeddingTask(model, cfg.loss, cfg.group_size, cfg.max_length, cfg.margin, cfg.distance, cfg.scale)
    try:
        task.check(examples)
    except ConfigError as exc:
        raise ConfigError(f"{cfg.train_file}: {exc}") from None
    if isinstance(task, EmbeddingSoftLabelTask | EmbeddingDistillTask):
        examples = task.prepare(examples, cfg.seed)
    elif isinstance(task, EmbeddingTask):
        examples = shuffle_negatives(examples, cfg.seed)
    return train_and_save(cfg, model, task, examples, accelerator, on_step, {}, system="bi-encoder")
