"""Bi-encoder losses as pure functions of embeddings. The model never enters a loss.

Shapes: ``B`` = queries in the batch, ``N`` = negatives per query, ``D`` = embedding size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distilrank.losses.distill import listwise_kl

DISTANCES = ("cosine", "euclidean")


def embedding_distance(a: Tensor, b: Tensor, distance: str = "cosine") -> Tensor:
    """Distance between ``a`` ``(..., D)`` and ``b`` ``(..., D)`` (broadcast): ``1 - cos`` or ``||a - b||_2``."""
    if distance == "cosine":
        return 1.0 - F.cosine_similarity(a, b, dim=-1)
    if distance == "euclidean":
        return (a - b).pow(2).sum(-1).clamp(min=1e-12).sqrt()
    raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")


def triplet_margin(anchor: Tensor, positive: Tensor, negatives: Tensor, margin: float = 0.5,
                   distance: str = "cosine") -> Tensor:
    """Triplet loss: ``mean(max(0, d(a, p) - d(a, n) + margin))`` over every (anchor, negative).

    Args:
        anchor: ``(B, D)`` query embeddings.
        positive: ``(B, D)`` embeddings of each query's relevant passage.
        negatives: ``(B, D)`` or ``(B, N, D)`` embeddings of non-relevant passages.
        margin: how much closer the positive must be than each negative.
        distance: ``"cosine"`` (``1 - cos``) or ``"euclidean"``.

    Reference: Schroff et al., 2015 (FaceNet); the query/passage triplet recipe of
    sentence-transformers' ``TripletLoss`` (euclidean, margin 5) applied to reranking.

    Example:
        >>> a, p, n = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
        >>> triplet_margin(a, p, n, margin=1.5)  # d(a,p)=0, d(a,n)=1 (cosine): max(0, 0 - 1 + 1.5)
        tensor(0.5000)
    """
    if negatives.dim() == 2:
        negatives = negatives.unsqueeze(1)  # (B, 1, D)
    d_pos = embedding_distance(anchor, positive, distance).unsqueeze(1)  # (B, 1)
    d_neg = embedding_distance(anchor.unsqueeze(1), negatives, distance)  # (B, N)
    return F.relu(d_pos - d_neg + margin).mean()


def multiple_negatives_ranking(queries: Tensor, positives: Tensor, negatives: Tensor | None = None,
                               scale: float = 20.0) -> Tensor:
    """In-batch negatives: each query must pick its own positive among every passage of the batch.

    Args:
        queries: ``(B, D)`` query embeddings.
        positives: ``(B, D)``; row ``i`` is relevant to query ``i`` and a negative for the others.
        negatives: optional ``(B, N, D)`` hard negatives, also shared by all queries of the batch.
        scale: multiplies the cosine similarities (an inverse temperature).

    Returns the cross-entropy of ``softmax(scale * cos(q_i, [P; N]))`` at ``p_i``.
    Reference: Henderson et al., 2017; sentence-transformers' ``MultipleNegativesRankingLoss``.

    Example:
        >>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> multiple_negatives_ranking(q, q, scale=1.0)  # -log(e / (e + 1))
        tensor(0.3133)
    """
    docs = positives if negatives is None else torch.cat([positives, negatives.reshape(-1, positives.shape[-1])])
    sims = F.normalize(queries, dim=-1) @ F.normalize(docs, dim=-1).T  # (B, B + B*N)
    labels = torch.arange(len(queries), device=queries.device)
    return F.cross_entropy(scale * sims, labels)


def embedding_mse(student: Tensor, teacher: Tensor) -> Tensor:
    """Embedding distillation: mean squared error between student and teacher embeddings of the same texts.

    Args:
        student: ``(T, D)`` the student's embeddings of ``T`` texts.
        teacher: ``(T, D)`` the teacher's embeddings of the same texts (a target: no gradient flows into it).

    The mean is over every element, as sentence-transformers' ``MSELoss`` takes it (Reimers & Gurevych, 2020,
    "Making Monolingual Sentence Embeddings Multilingual using Knowledge Distillation"; the same loss shrinks a
    bi-encoder to fewer layers in its model-distillation example). On unit vectors it is ``(2 - 2 cos) / D``.

    Example:
        >>> embedding_mse(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))  # ((1-0)^2 + (0-1)^2) / 2
        tensor(1.)
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student embeddings {tuple(student.shape)} and teacher embeddings {tuple(teacher.shape)} "
                         "differ in shape")
    return F.mse_loss(student, teacher.detach())


def in_batch_kl(student_queries: Tensor, student_docs: Tensor, teacher_queries: Tensor, teacher_docs: Tensor,
                temperature: float = 0.05) -> Tensor:
    """In-batch distillation: each query's distribution over *every* passage of the batch, teacher to student.

    Args:
        student_queries: ``(B, D)`` the student's query embeddings.
        student_docs: ``(N, D)`` the student's embeddings of all the batch's passages (each query's own and the
            other queries').
        teacher_queries: ``(B, D')``, teacher_docs: ``(N, D')`` the teacher's embeddings of the same texts
            (targets: no gradient flows into them; ``D'`` may differ from ``D``).
        temperature: ``T``; both sides are ``softmax(cos(q_b, d_n) / T)`` over the ``N`` passages.

    Returns :func:`~distilrank.losses.listwise_kl` of the two ``(B, N)`` cosine matrices:
    ``T^2 * mean_b KL(teacher_b || student_b)``. A group loss on a labels file scores only each query's own
    passages; here every query also learns the teacher's view of the other queries' ``N - G`` passages, at no
    labelling cost (Lin et al., 2021, "In-Batch Negatives for Knowledge Distillation with Tightly-Coupled
    Teachers for Dense Retrieval"). ``T = 0.05`` is the scale 20 at which an mnrl teacher was trained.

    Example:
        >>> q, d = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> in_batch_kl(q, d, 2 * q, 3 * d)  # the same cosines: the same distributions
        tensor(0.)
    """
    if len(student_queries) != len(teacher_queries) or len(student_docs) != len(teacher_docs):
        raise ValueError(f"in_batch_kl: the student embeds {len(student_queries)} queries and {len(student_docs)} "
                         f"passages, the teacher {len(teacher_queries)} and {len(teacher_docs)}: the same texts "
                         "are needed")
    student = F.normalize(student_queries, dim=-1) @ F.normalize(student_docs, dim=-1).T  # (B, N)
    teacher = F.normalize(teacher_queries, dim=-1) @ F.normalize(teacher_docs, dim=-1).T  # (B, N)
    return listwise_kl(student, teacher, temperature)
