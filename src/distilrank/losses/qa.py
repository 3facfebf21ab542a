"""Extractive-QA losses: gold-span cross-entropy and start/end logit distillation (pure functions)."""

from __future__ import annotations

import torch  # noqa: F401  (doctest examples)
import torch.nn.functional as F
from torch import Tensor

from distilrank.losses.distill import kd_kl

PAD_LOGIT = -1e4  # padding positions get (almost) no probability in the softened distributions


def span_ce(start_logits: Tensor, end_logits: Tensor, start_positions: Tensor, end_positions: Tensor) -> Tensor:
    """``(CE(start) + CE(end)) / 2``, the loss of BERT's SQuAD head.

    Args:
        start_logits, end_logits: ``(B, L)`` logits over the tokens of each window.
        start_positions, end_positions: ``(B,)`` gold token positions (0, the [CLS] token, when
            the window does not contain the answer).

    Example:
        >>> span_ce(torch.zeros(1, 4), torch.zeros(1, 4), torch.tensor([1]), torch.tensor([2]))  # log 4
        tensor(1.3863)
    """
    return (F.cross_entropy(start_logits, start_positions) + F.cross_entropy(end_logits, end_positions)) / 2


def span_kd_kl(start_logits: Tensor, end_logits: Tensor, teacher_start: Tensor, teacher_end: Tensor,
               temperature: float = 2.0, mask: Tensor | None = None) -> Tensor:
    """Distillation of a teacher QA model: ``(kd_kl(start) + kd_kl(end)) / 2`` over each window's tokens.

    Each term is ``T^2 * batchmean KL(softmax(t / T) || softmax(s / T))`` (see
    :func:`distilrank.losses.distill.kd_kl`), as distilbert-base-uncased-distilled-squad was trained
    (Sanh et al. 2019, ``examples/research_projects/distillation/run_squad_w_distillation.py``).

    Args:
        start_logits, end_logits: ``(B, L)`` student logits.
        teacher_start, teacher_end: ``(B, L)`` teacher logits on the same tokens (detached here).
        temperature: ``T`` > 0.
        mask: optional ``(B, L)`` attention mask; padding positions are set to a very low logit
            in both distributions so they carry no probability.
    """
    if mask is not None:
        pad = ~mask.bool()
        start_logits, end_logits = start_logits.masked_fill(pad, PAD_LOGIT), end_logits.masked_fill(pad, PAD_LOGIT)
        teacher_start, teacher_end = teacher_start.masked_fill(pad, PAD_LOGIT), teacher_end.masked_fill(pad, PAD_LOGIT)
    return (kd_kl(start_logits, teacher_start, temperature) + kd_kl(end_logits, teacher_end, temperature)) / 2
