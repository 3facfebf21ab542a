"""Tasks: what a batch looks like and how its loss is computed. The loop knows nothing else."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from distilrank.config import LTR_LOSSES, SOFT_LOSSES
from distilrank.data.collate import pair_lengths
from distilrank.data.records import Group, LabeledPair, SoftGroup
from distilrank.errors import ConfigError, DataError
from distilrank.losses import (
    listwise_kl,
    listwise_softmax_ce,
    logit_mse,
    margin_mse,
    pairwise_margin,
    pointwise_bce,
)
from distilrank.losses.ltr import check_ltr_targets, ltr_loss

if TYPE_CHECKING:
    from distilrank.models.cross_encoder import CrossEncoder
    from distilrank.models.seq2seq import Seq2SeqReranker

logger = logging.getLogger(__name__)

# A reranker being trained: forward gives (N,) scores (cross-encoder) or (N, 2) [false, true] logits (seq2seq).
Student = Union["CrossEncoder", "Seq2SeqReranker"]
# pairs encoded at once when measuring seq2seq input lengths: bounds the memory of the token lists
LENGTH_CHUNK = 16384
SOFT_FORMAT = ("jsonl rows {query, contents, true_logit, false_logit} (a seq2seq teacher) or "
               "{query, contents, score} (a cross-encoder teacher), as `distilrank label` writes them")


class Task(Protocol):
    def lengths(self, examples: Sequence[Any]) -> list[int]: ...
    def collate(self, examples: Sequence[Any]) -> dict[str, Any]: ...
    def loss(self, model: Any, batch: dict[str, Any]) -> Tensor | tuple[Tensor, dict[str, Tensor]]: ...


def student_scores(output: Tensor) -> Tensor:
    """A student's ranking scores: ``(N,)`` scores as they are, ``(N, 2)`` [false, true] logits -> true - false.

    ``true - false`` ranks like monoT5's ``log_softmax([false, true])[1]`` (a monotone function of
    it), and ``pointwise_bce`` on it equals the cross-entropy on the true/false tokens that monoT5
    is trained with: ``-log softmax([f, t])[1] = -log sigmoid(t - f)``.

    Example:
        >>> student_scores(torch.tensor([[1.0, 3.0], [0.5, 0.0]]))
        tensor([ 2.0000, -0.5000])
    """
    if output.dim() == 2 and output.shape[-1] == 2:
        return output[:, 1] - output[:, 0]  # (N,)
    return output.reshape(-1)  # (N,)


def pair_token_lengths(model: Student, queries: Sequence[str], docs: Sequence[str], max_length: int) -> list[int]:
    """Exact width of each (query, doc) pair as ``model.tokenize`` encodes it (for length-grouped batches).

    A seq2seq reranker wraps pairs in its template (``Query: ... Document: ... Relevant:``), so its
    own ``encode_pairs`` measures them; a cross-encoder's pairs are measured from the texts alone.
    """
    encode = getattr(model, "encode_pairs", None)
    if encode is None:
        return pair_lengths(model.tokenizer, queries, docs, max_length)
    out: list[int] = []
    for start in range(0, len(queries), LENGTH_CHUNK):
        stop = start + LENGTH_CHUNK
        out += [len(ids) for ids in encode(list(queries[start:stop]), list(docs[start:stop]), max_length)]
    return out


@dataclass
class RerankTask:
    """Reranker training on groups (listwise, pairwise, margin_mse, bce) or labeled pairs (bce).

    Groups are cut to ``group_size`` documents (positive + first negatives). For ``bce`` a group
    becomes pairs labeled 1 (positive) and 0 (negatives). A seq2seq (monoT5-style) student is
    scored by :func:`student_scores` (true - false logit), so every loss applies to it too.

    The LTR losses (``LTR_LOSSES``: ranknet, listnet, plistmle, lambdaloss, adr_mse) read a group's
    targets as labels ``[1, 0, ..., 0]`` (positive first), or as its teacher ``scores`` when every
    group has them; ``targets`` (``labels``/``scores``/``ranks``) overrides that choice.
    """

    model: Student
    loss_name: str
    group_size: int = 8
    max_length: int = 128
    margin: float = 1.0
    targets: str = ""
    temperature: float = 1.0
    lambda_scheme: str = "ndcg2pp"

    def check(self, examples: Sequence[Any]) -> None:
        if not examples:
            raise ConfigError("the training file holds no examples")
        if isinstance(examples[0], SoftGroup):
            raise ConfigError("soft labels train with SoftLabelTask (loss=logit_mse, kl or margin_mse)")
        if self.loss_name in ("logit_mse", "kl"):
            raise ConfigError(f"loss={self.loss_name} learns from a teacher's soft labels: {SOFT_FORMAT}; this "
                              "file holds binary labels (groups, triplets or pairs): train it with loss=listwise, "
                              "pairwise or bce, or margin_mse on groups with a 'scores' list")
        if isinstance(examples[0], LabeledPair) and self.loss_name != "bce":
            raise ConfigError(f"labeled pairs {{query, passage, label}} train with loss=bce, not {self.loss_name!r}")
        if self.loss_name == "margin_mse" and any(g.teacher_scores is None for g in examples):
            raise ConfigError("loss=margin_mse needs teacher scores: groups jsonl with a 'scores' list")
        if self.loss_name in LTR_LOSSES:
            scored = all(g.teacher_scores is not None for g in examples)
            if self.targets in ("scores", "ranks") and not scored:
                raise ConfigError(f"targets={self.targets} needs teacher scores: groups jsonl with a 'scores' list "
                                  "on every line (or targets=labels: the positive is 1, the negatives 0)")
            self.targets = self.targets or ("scores" if scored else "labels")
            check_ltr_targets(self.loss_name, self.targets, self.temperature, self.lambda_scheme)

    def lengths(self, examples: Sequence[Any]) -> list[int]:
        """Padded width each example brings to a batch: its longest pair in exact tokens."""
        queries, docs, owner = [], [], []
        for k, e in enumerate(examples):
            texts = [e.passage] if isinstance(e, LabeledPair) else self._docs(e)[0]
            queries += [e.query] * len(texts)
            docs += texts
            owner += [k] * len(texts)
        widths = [0] * len(examples)
        for k, n in zip(owner, pair_token_lengths(self.model, queries, docs, self.max_length)):
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
        scores = student_scores(model(**batch["features"]))  # (B*G,) or (B,) for pairs
        if "labels" in batch:
            return pointwise_bce(scores, batch["labels"].to(scores.device))
        scores = scores.view(-1, batch["group_size"])  # (B, G): positive first
        if self.loss_name in LTR_LOSSES:
            if self.targets == "labels":
                targets = torch.zeros_like(scores)
                targets[:, 0] = 1.0
            else:
                targets = batch["teacher"].to(scores.device)  # (B, G)
            return ltr_loss(self.loss_name, scores, targets, None, self.targets, self.temperature, self.lambda_scheme)
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


def pad_groups(flat: Tensor, sizes: Sequence[int]) -> Tensor:
    """``(N,)`` values of consecutive groups of ``sizes`` -> ``(B, max(sizes))``, padded with zeros (False)."""
    return torch.nn.utils.rnn.pad_sequence(list(flat.split(list(sizes))), batch_first=True)


def split_soft_groups(groups: Sequence[SoftGroup], group_size: int, seed: int) -> list[SoftGroup]:
    """Cut each query's labelled documents into sub-groups of at most ``group_size``, after a seeded shuffle.

    Every labelled document lands in exactly one sub-group. A query with ``n`` documents gives
    ``ceil(n / group_size)`` sub-groups of near-equal sizes (they differ by at most one), so no
    lone document is left over: a sub-group of one happens only for a query labelled with a single
    document (or ``group_size=1``, the pointwise ``logit_mse`` setting). The shuffle keeps each
    document with its score and logits, and the same seed gives the same sub-groups.

    Example:
        >>> g = SoftGroup("q", ("a", "b", "c", "d", "e"), (5.0, 4.0, 3.0, 2.0, 1.0))
        >>> [len(s.documents) for s in split_soft_groups([g], group_size=4, seed=0)]
        [3, 2]
    """
    if group_size < 1:
        raise ConfigError(f"group_size must be >= 1, got {group_size}")
    rng = random.Random(seed)
    out: list[SoftGroup] = []
    for g in groups:
        order = list(range(len(g.documents)))
        rng.shuffle(order)
        parts = math.ceil(len(order) / group_size)
        base, extra = divmod(len(order), max(1, parts))
        start = 0
        for j in range(parts):
            idx = order[start : start + base + (j < extra)]
            start += len(idx)
            out.append(SoftGroup(
                g.query,
                tuple(g.documents[i] for i in idx),
                tuple(g.scores[i] for i in idx),
                tuple(g.logits[i] for i in idx) if g.logits is not None else None,
            ))
    return out


def _check_soft_group(k: int, g: Any) -> None:
    """Groups handed over from Python (not read from a file) get the checks the readers make."""
    where = f"soft-label group {k} (query {str(getattr(g, 'query', ''))[:60]!r})"
    if not isinstance(g, SoftGroup):
        raise ConfigError(f"{where} is a {type(g).__name__}, expected a SoftGroup")
    if not g.documents:
        raise DataError(f"{where} has no documents", hint="every query needs at least one labelled document")
    if len(g.scores) != len(g.documents) or (g.logits is not None and len(g.logits) != len(g.documents)):
        raise DataError(f"{where} has {len(g.documents)} documents but {len(g.scores)} scores"
                        + (f" and {len(g.logits)} logit pairs" if g.logits is not None else ""))
    values = [*g.scores, *(x for pair in g.logits or () for x in pair)]
    if not all(math.isfinite(v) for v in values):
        raise DataError(f"{where} has a NaN or infinite teacher score/logit", hint="re-label it or drop it")


@dataclass
class SoftLabelTask:
    """Student training on a teacher's soft labels: sub-groups of :class:`SoftGroup` (see :func:`split_soft_groups`).

    The student is a cross-encoder (``(N,)`` scores) or a seq2seq reranker (``(N, 2)`` [false, true]
    logits, ranking score true - false). ``loss_name``:

    * ``logit_mse``: a seq2seq student with logit labels learns the teacher's zero-centred
      [false, true] logits (:func:`~distilrank.losses.logit_mse`, InRanker). Otherwise (encoder
      student, or score-only labels) the student's score regresses on the teacher's score (MSE);
      for a seq2seq teacher that score is its logit difference true - false. Pointwise: any
      sub-group size works, ``group_size=1`` makes ``batch_size`` count pairs as InRanker does.
    * ``kl``: :func:`~distilrank.losses.listwise_kl` between the teacher's and the student's score
      distributions over each sub-group, at ``temperature``.
    * ``margin_mse``: in each sub-group, the student's margins between the teacher's best document
      and every other one match the teacher's (:func:`~distilrank.losses.margin_mse`).

    * the LTR losses (``LTR_LOSSES``): over each sub-group, the teacher's scores as targets
      (``targets``: ``scores`` by default, ``ranks`` to keep only their order, ``labels`` when the
      scores are graded labels).

    ``kl``, ``margin_mse`` and the LTR losses compare documents within a group: sub-groups of one document
    (queries labelled with a single document) carry no signal for them and are dropped by :meth:`prepare`.
    """

    model: Student
    loss_name: str
    group_size: int = 8
    max_length: int = 128
    temperature: float = 1.0
    targets: str = ""
    lambda_scheme: str = "ndcg2pp"

    @property
    def grouped(self) -> bool:
        return self.loss_name in ("kl", "margin_mse", *LTR_LOSSES)

    def check(self, examples: Sequence[Any]) -> None:
        if not examples:
            raise ConfigError("the training data holds no soft-label groups")
        if self.loss_name not in SOFT_LOSSES + LTR_LOSSES:
            raise ConfigError(f"the training data holds a teacher's soft labels (scores or [false, true] logits), "
                              f"which loss={self.loss_name} cannot learn from; use a soft-label loss: "
                              f"loss=logit_mse, kl or margin_mse, or an LTR loss ({', '.join(LTR_LOSSES)})")
        if self.loss_name in LTR_LOSSES:
            self.targets = self.targets or "scores"
            check_ltr_targets(self.loss_name, self.targets, self.temperature, self.lambda_scheme)
        for k, g in enumerate(examples):
            _check_soft_group(k, g)
        if self.grouped and all(len(g.documents) < 2 for g in examples):
            raise ConfigError(f"loss={self.loss_name} compares the documents of each query, but every query has "
                              "a single labelled document; use loss=logit_mse (pointwise), or label several "
                              "documents per query (distilrank label top_k=...)")
        seq2seq = getattr(self.model, "encode_pairs", None) is not None
        if self.loss_name == "logit_mse" and seq2seq and any(g.logits is None for g in examples):
            logger.warning("loss=logit_mse with score-only labels: the seq2seq student's true - false logit "
                           "difference learns the teacher's score (MSE), not [false, true] logits")

    def prepare(self, examples: Sequence[SoftGroup], seed: int) -> list[SoftGroup]:
        """Sub-groups to train on: :func:`split_soft_groups`, minus lone documents for grouped losses."""
        groups = split_soft_groups(examples, self.group_size, seed)
        if self.grouped:
            kept = [g for g in groups if len(g.documents) >= 2]
            if len(kept) < len(groups):
                logger.warning("loss=%s: %d queries with a single labelled document are skipped",
                               self.loss_name, len(groups) - len(kept))
            groups = kept
        return groups

    def lengths(self, examples: Sequence[SoftGroup]) -> list[int]:
        """Padded width each sub-group brings to a batch: its longest pair in exact tokens."""
        queries = [g.query for g in examples for _ in g.documents]
        docs = [d for g in examples for d in g.documents]
        widths, start = [], 0
        lengths = pair_token_lengths(self.model, queries, docs, self.max_length)
        for g in examples:
            widths.append(max(lengths[start : start + len(g.documents)]))
            start += len(g.documents)
        return widths

    def collate(self, examples: Sequence[SoftGroup]) -> dict[str, Any]:
        """All documents of the batch's sub-groups, flat (N pairs), with their teacher labels."""
        queries = [g.query for g in examples for _ in g.documents]
        docs = [d for g in examples for d in g.documents]
        return {"features": self.model.tokenize(queries, docs, self.max_length), **self.labels(examples)}

    def labels(self, examples: Sequence[SoftGroup]) -> dict[str, Any]:
        """The teacher's side of a batch: scores ``(N,)``, sub-group sizes, logits and margin_mse's pairs."""
        sizes = [len(g.documents) for g in examples]
        batch: dict[str, Any] = {
            "teacher": torch.tensor([s for g in examples for s in g.scores], dtype=torch.float32),  # (N,)
            "sizes": sizes,
        }
        if all(g.logits is not None for g in examples):
            batch["teacher_logits"] = torch.tensor([p for g in examples for p in g.logits],  # type: ignore[union-attr]
                                                   dtype=torch.float32)  # (N, 2) [false, true]
        if self.loss_name == "margin_mse":
            best, other, start = [], [], 0
            for g in examples:  # flat positions of each sub-group's teacher-best document and of the others
                top = start + max(range(len(g.scores)), key=g.scores.__getitem__)
                rest = [i for i in range(start, start + len(g.scores)) if i != top]
                best += [top] * len(rest)
                other += rest
                start += len(g.scores)
            batch["best"], batch["other"] = torch.tensor(best), torch.tensor(other)  # (M,), (M,)
        return batch

    def loss(self, model: Any, batch: dict[str, Any]) -> Tensor:
        return self.soft_loss(model(**batch["features"]), batch)  # (N,) scores or (N, 2) [false, true] logits

    def soft_loss(self, output: Tensor, batch: dict[str, Any]) -> Tensor:
        """The loss of the student's ``(N,)`` scores or ``(N, 2)`` logits against the batch's teacher labels."""
        if self.loss_name == "logit_mse" and output.dim() == 2 and "teacher_logits" in batch:
            return logit_mse(output.float(), batch["teacher_logits"].to(output.device))
        scores = student_scores(output).float()  # (N,)
        teacher = batch["teacher"].to(scores.device)  # (N,)
        if self.loss_name == "logit_mse":
            return F.mse_loss(scores, teacher)
        if self.loss_name in LTR_LOSSES:
            s, t = pad_groups(scores, batch["sizes"]), pad_groups(teacher, batch["sizes"])  # (B, G_max)
            mask = pad_groups(torch.ones_like(scores, dtype=torch.bool), batch["sizes"])
            return ltr_loss(self.loss_name, s, t, mask, self.targets, self.temperature, self.lambda_scheme)
        if self.loss_name == "margin_mse":
            best, other = batch["best"].to(scores.device), batch["other"].to(scores.device)
            return margin_mse(scores[best], scores[other], teacher[best] - teacher[other])
        return self._grouped_kl(scores, teacher, batch["sizes"])

    def _grouped_kl(self, scores: Tensor, teacher: Tensor, sizes: Sequence[int]) -> Tensor:
        """``listwise_kl`` averaged over the batch's sub-groups, which may differ in size by one."""
        s_parts, t_parts = scores.split(list(sizes)), teacher.split(list(sizes))
        total = scores.new_zeros(())
        for size in sorted(set(sizes)):
            idx = [i for i, n in enumerate(sizes) if n == size]
            s = torch.stack([s_parts[i] for i in idx])  # (B_size, size)
            t = torch.stack([t_parts[i] for i in idx])  # (B_size, size)
            total = total + listwise_kl(s, t, self.temperature) * len(idx)  # batchmean -> sum over groups
        return total / len(sizes)


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
