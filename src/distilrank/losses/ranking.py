"""Ranking losses as pure functions of scores and targets. The model never enters a loss.

Shapes: ``B`` = examples in the batch, ``N`` = negatives per query.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def pointwise_bce(scores: Tensor, labels: Tensor) -> Tensor:
    """Binary cross-entropy on raw scores (logits).

    Args:
        scores: ``(B,)`` logits of (query, passage) pairs.
        labels: ``(B,)`` relevance in [0, 1] (1 = relevant; soft labels allowed).

    Returns the mean of ``-[y log σ(s) + (1-y) log(1-σ(s))]`` (Nogueira & Cho, 2019, monoBERT).

    Example:
        >>> pointwise_bce(torch.tensor([0.0]), torch.tensor([1.0]))  # log 2
        tensor(0.6931)
    """
    return F.binary_cross_entropy_with_logits(scores, labels.to(scores.dtype))


def pairwise_margin(pos: Tensor, neg: Tensor, margin: float = 1.0) -> Tensor:
    """Triplet / hinge loss on scores: ``mean(max(0, margin - (s_pos - s_neg)))``.

    Args:
        pos: ``(B,)`` scores of positives.
        neg: ``(B,)`` or ``(B, N)`` scores of negatives; each is compared with its positive.
        margin: the score gap to enforce.

    Reference: the RankNet-style margin ranking loss used by DistilBERT's reranking recipe.

    Example:
        >>> pairwise_margin(torch.tensor([2.0]), torch.tensor([1.5]), margin=1.0)
        tensor(0.5000)
    """
    if neg.dim() == 2:
        pos = pos.unsqueeze(1)  # (B, 1) against (B, N)
    return torch.clamp(margin - (pos - neg), min=0).mean()


def listwise_softmax_ce(scores: Tensor, positive_index: int = 0) -> Tensor:
    """Softmax cross-entropy over each query's list (1 positive + N negatives), a.k.a. LCE.

    Args:
        scores: ``(B, 1+N)`` scores; column ``positive_index`` holds the positive.

    Returns ``mean_b(-log softmax(scores_b)[positive_index])`` (Gao et al., 2021,
    "Rethink Training of BERT Rerankers in Multi-Stage Retrieval Pipeline").

    Example:
        >>> listwise_softmax_ce(torch.zeros(1, 4))  # uniform over 4: log 4
        tensor(1.3863)
    """
    target = torch.full((scores.shape[0],), positive_index, dtype=torch.long, device=scores.device)
    return F.cross_entropy(scores, target)


def margin_mse(pos: Tensor, neg: Tensor, teacher_margin: Tensor) -> Tensor:
    """MarginMSE: match the student's score margin to the teacher's.

    Args:
        pos: ``(B,)`` student scores of positives.
        neg: ``(B,)`` or ``(B, N)`` student scores of negatives.
        teacher_margin: same shape as ``neg``: teacher ``s_pos - s_neg``.

    Returns ``mean((s_pos - s_neg) - teacher_margin)^2`` (Hofstätter et al., 2020,
    "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge Distillation").

    Example:
        >>> margin_mse(torch.tensor([3.0]), torch.tensor([1.0]), torch.tensor([1.0]))
        tensor(1.)
    """
    if neg.dim() == 2:
        pos = pos.unsqueeze(1)  # (B, 1) against (B, N)
    return F.mse_loss(pos - neg, teacher_margin.to(pos.dtype))
