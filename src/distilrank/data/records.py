"""Typed records that flow between stages. Plain frozen dataclasses, validated on creation."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Passage:
    """A document of a corpus. ``text`` is what models read (title joined in by readers)."""

    id: str
    text: str
    title: str = ""

    @property
    def contents(self) -> str:
        return f"{self.title}. {self.text}" if self.title else self.text


@dataclass(frozen=True)
class Query:
    id: str
    text: str


@dataclass(frozen=True)
class Group:
    """One query with one positive and its negatives: the unit of listwise/pairwise training.

    Triplets are groups with one negative. ``teacher_scores`` (if given) holds one score per
    document, positive first, for distillation losses such as MarginMSE.
    """

    query: str
    positive: str
    negatives: tuple[str, ...]
    teacher_scores: tuple[float, ...] | None = None

    @property
    def documents(self) -> tuple[str, ...]:
        return (self.positive, *self.negatives)


@dataclass(frozen=True)
class LabeledPair:
    """A (query, passage) pair with a relevance label in [0, 1] (pointwise training)."""

    query: str
    passage: str
    label: float


@dataclass(frozen=True)
class SoftGroup:
    """One query's documents with a teacher's soft labels: the unit of soft-label distillation.

    ``scores`` holds the teacher's score for each document: the raw score of a cross-encoder
    teacher, or ``true_logit - false_logit`` of a seq2seq (monoT5-style) teacher, the target that
    encoder students learn. ``logits`` keeps the seq2seq teacher's ``(false_logit, true_logit)``
    pairs (InRanker's format) for the logit-MSE loss; it is ``None`` for score-only labels.
    """

    query: str
    documents: tuple[str, ...]
    scores: tuple[float, ...]
    logits: tuple[tuple[float, float], ...] | None = None


@dataclass
class RetrievalDataset:
    """A corpus, queries and graded relevance judgments (qrels), as in a BEIR folder."""

    corpus: dict[str, Passage]
    queries: dict[str, Query]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)
    name: str = "dataset"

    def judged_queries(self) -> list[str]:
        """Ids of queries with at least one relevant (grade > 0) document, in stable order."""
        return [qid for qid in self.queries if any(g > 0 for g in self.qrels.get(qid, {}).values())]


# A first-stage run: query id -> list of (doc id, score), best first.
Run = dict[str, list[tuple[str, float]]]
