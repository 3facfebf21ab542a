"""Learning-to-rank losses over each query's list of documents (pure functions of scores and targets).

Shapes: ``B`` = queries (lists) in the batch, ``G`` = documents per list. Every loss takes the
student's ``scores`` ``(B, G)``, the ``targets`` ``(B, G)`` and an optional boolean ``mask``
``(B, G)`` (False: a padding slot, for lists of different lengths). ``target_kind`` says what the
targets are:

* ``"labels"``: graded relevance labels (0 = not relevant, higher = more relevant; binary groups
  are labels ``[1, 0, ..., 0]``);
* ``"scores"``: a teacher's scores (any real scale; higher = better);
* ``"ranks"``: a teacher's ranking, given as each document's rank (1 = best), as a listwise LLM
  teacher's permutation gives them (:func:`ranks_from_permutation`).

A loss that cannot use a kind raises :class:`~distilrank.errors.ConfigError` naming the ones it can
(``listnet`` needs a score scale, which a ranking does not have). Every loss runs in fp32 with
autocast off, whatever the dtype of its inputs (bf16/fp16 scores under mixed precision are
upcast), and detaches the targets: gradients reach the student's scores only.

The semantics follow sentence-transformers' cross-encoder losses (``RankNetLoss``, ``ListNetLoss``,
``PListMLELoss`` with ``respect_input_order=False``, ``LambdaLoss``, ``ADRMSELoss``) on the same
logits and labels; ``tests/test_ltr_losses.py`` checks them against hand-computed values and, when
sentence-transformers is installed, against its classes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from distilrank.errors import ConfigError

TARGET_KINDS = ("labels", "scores", "ranks")
LAMBDA_SCHEMES = ("ndcg2pp", "lambdarank", "ndcg2", "ndcg1", "none")
PAD_SCORE = -1e16  # padded documents' scores: after every real one in a descending sort


def _fp32(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Run ``fn`` with autocast off for the scores' device: its arithmetic stays in fp32."""

    @wraps(fn)
    def run(scores: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        with torch.autocast(device_type=scores.device.type, enabled=False):
            return fn(scores, *args, **kwargs)

    return run


def _prepare(name: str, scores: Tensor, targets: Tensor, mask: Tensor | None, kind: str,
             allowed: Sequence[str] = TARGET_KINDS) -> tuple[Tensor, Tensor, Tensor]:
    """fp32 scores, detached fp32 *relevance keys* (higher = better) and a bool mask, all ``(B, G)``."""
    if kind not in TARGET_KINDS:
        raise ConfigError(f"{name}: target kind must be one of {TARGET_KINDS}, got {kind!r}")
    if kind not in allowed:
        raise ConfigError(f"{name} cannot learn from teacher {kind}: it needs {' or '.join(allowed)} (a ranking "
                          "has no score scale); use ranknet, plistmle, lambdaloss or adr_mse for rankings")
    if scores.dim() != 2 or scores.shape != targets.shape:
        raise ValueError(f"{name}: scores and targets must both be (B, G) with the same shape, got "
                         f"{tuple(scores.shape)} and {tuple(targets.shape)}")
    mask = torch.ones_like(scores, dtype=torch.bool) if mask is None else mask.to(scores.device).bool()
    if mask.shape != scores.shape:
        raise ValueError(f"{name}: mask must be (B, G) like the scores, got {tuple(mask.shape)}")
    key = targets.detach().to(device=scores.device, dtype=torch.float32)
    if kind == "ranks":
        key = -key  # rank 1 is the best: the highest key
    return scores.float(), key, mask


def ranks_from_permutation(permutation: Sequence[int]) -> list[int]:
    """Each document's rank (1 = best) from a permutation listing document indices best first.

    Example:
        >>> ranks_from_permutation([2, 0, 1])  # document 2 first, then 0, then 1
        [2, 3, 1]
    """
    ranks = [0] * len(permutation)
    for position, doc in enumerate(permutation):
        ranks[doc] = position + 1
    return ranks


def target_ranks(key: Tensor, mask: Tensor) -> Tensor:
    """``(B, G)`` ranks (1 = best) of the relevance keys within each list; ties share their mean rank."""
    valid_j = mask.unsqueeze(1)  # (B, 1, G)
    greater = ((key.unsqueeze(1) > key.unsqueeze(2)) & valid_j).sum(-1).float()  # (B, G): docs strictly better
    equal = ((key.unsqueeze(1) == key.unsqueeze(2)) & valid_j).sum(-1).float()  # (B, G): incl. itself
    return greater + (equal + 1.0) / 2.0


@_fp32
def ranknet(scores: Tensor, targets: Tensor, mask: Tensor | None = None, target_kind: str = "labels",
            sigma: float = 1.0) -> Tensor:
    """RankNet: logistic loss on every pair of documents whose targets differ.

    Returns the mean over pairs ``(i, j)`` of the same list with target ``i`` better than ``j`` of
    ``log2(1 + exp(-sigma * (s_i - s_j)))`` (sentence-transformers' ``RankNetLoss``, binary log).
    Only the targets' order is used, so any target kind works. Reference: Burges et al., 2005,
    "Learning to Rank using Gradient Descent".

    Example:
        >>> ranknet(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]))  # log2(2)
        tensor(1.)
    """
    s, key, mask = _prepare("ranknet", scores, targets, mask, target_kind)
    pairs = (key.unsqueeze(2) > key.unsqueeze(1)) & mask.unsqueeze(2) & mask.unsqueeze(1)  # (B, G, G): i beats j
    diffs = s.unsqueeze(2) - s.unsqueeze(1)  # (B, G, G): s_i - s_j
    losses = F.softplus(-sigma * diffs)[pairs] / math.log(2)
    return losses.sum() / max(losses.numel(), 1)


@_fp32
def listnet(scores: Tensor, targets: Tensor, mask: Tensor | None = None, target_kind: str = "labels",
            temperature: float = 1.0) -> Tensor:
    """ListNet (top-one): cross-entropy between the targets' and the scores' softmax over each list.

    Returns ``mean_b(-sum_i softmax(t_b / T)_i * log softmax(s_b / T)_i)`` over valid documents
    (sentence-transformers' ``ListNetLoss`` at ``T = 1``). Targets: labels or teacher scores; a
    ranking has no scale to soften, so ``"ranks"`` is refused. Reference: Cao et al., 2007,
    "Learning to Rank: From Pairwise Approach to Listwise Approach".

    Example:
        >>> listnet(torch.zeros(1, 2), torch.tensor([[1.0, 1.0]]))  # uniform vs uniform: log 2
        tensor(0.6931)
    """
    s, key, mask = _prepare("listnet", scores, targets, mask, target_kind, ("labels", "scores"))
    log_p = F.log_softmax((s / temperature).masked_fill(~mask, PAD_SCORE), dim=-1)  # (B, G)
    p_t = F.softmax((key / temperature).masked_fill(~mask, float("-inf")), dim=-1)  # (B, G)
    return -(p_t * log_p.masked_fill(~mask, 0.0)).sum(-1).mean()


@_fp32
def plistmle(scores: Tensor, targets: Tensor, mask: Tensor | None = None, target_kind: str = "labels",
             weighted: bool = True) -> Tensor:
    """Position-aware ListMLE: weighted Plackett-Luce likelihood of the target order.

    Documents are sorted by target (best first; ties keep their input order). With ``n`` valid
    documents the log-likelihood of position ``k`` is ``s_(k) - logsumexp(s_(k), ..., s_(n))``;
    position weights ``2^(n - k) - 1`` normalised to sum to 1 (``weighted=False``: plain ListMLE,
    weight 1 each). Returns the mean over lists of ``-sum_k w_k log p_k`` (sentence-transformers'
    ``PListMLELoss`` with ``respect_input_order=False``). Reference: Lan et al., 2014,
    "Position-Aware ListMLE: A Sequential Learning Process for Ranking".

    Example:
        >>> plistmle(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]))  # weights [1, 0]: -log(1/2)
        tensor(0.6931)
    """
    s, key, mask = _prepare("plistmle", scores, targets, mask, target_kind)
    order = key.masked_fill(~mask, float("-inf")).argsort(dim=-1, descending=True, stable=True)  # (B, G)
    s_sorted, m_sorted = s.gather(1, order), mask.gather(1, order)  # padding last
    masked = s_sorted.masked_fill(~m_sorted, torch.finfo(s.dtype).min)
    log_norm = torch.flip(torch.logcumsumexp(torch.flip(masked, [1]), dim=1), [1])  # (B, G): logsumexp from k on
    log_p = (s_sorted - log_norm).masked_fill(~m_sorted, 0.0)  # (B, G)
    if weighted:
        n = m_sorted.sum(-1, keepdim=True).float()  # (B, 1)
        k = torch.arange(1, s.shape[1] + 1, device=s.device).float()  # (G,)
        w = (torch.pow(2.0, 1 - k) - torch.pow(2.0, 1 - n)).clamp(min=0) * m_sorted  # (2^(n-k) - 1) / 2^(n-1)
        log_p = log_p * w / (w.sum(-1, keepdim=True) + 1e-10)
    return -log_p.sum(-1).mean()


def _lambda_weights(scheme: str, gain: Tensor, discount: Tensor, mu: float) -> Tensor:
    """``(B, G, G)`` pair weights of a LambdaLoss scheme (Wang et al., 2018, table 1)."""
    if scheme == "none":
        return torch.ones_like(gain).unsqueeze(2)
    if scheme == "ndcg1":
        return (gain / discount).unsqueeze(2)
    inv = 1.0 / discount  # (1, G)
    lambdarank = (inv[:, :, None] - inv[:, None, :]).abs() * (gain[:, :, None] - gain[:, None, :]).abs()
    if scheme == "lambdarank":
        return lambdarank
    pos = torch.arange(1, gain.shape[1] + 1, device=gain.device)
    delta = (pos[:, None] - pos[None, :]).abs()  # (G, G): |i - j|
    deltas = (1.0 / discount[0, delta - 1].abs() - 1.0 / discount[0, delta].abs()).abs()
    deltas.fill_diagonal_(0.0)
    ndcg2 = deltas[None] * (gain[:, :, None] - gain[:, None, :]).abs()
    return ndcg2 if scheme == "ndcg2" else mu * ndcg2 + lambdarank


@_fp32
def lambda_loss(scores: Tensor, targets: Tensor, mask: Tensor | None = None, target_kind: str = "labels",
                scheme: str = "ndcg2pp", k: int | None = None, sigma: float = 1.0, mu: float = 10.0) -> Tensor:
    """LambdaLoss: pairwise logistic losses weighted by their effect on NDCG (Wang et al., 2018).

    Documents are sorted by the student's scores; each pair ``(i, j)`` with a greater gain at ``i``
    adds ``-w_ij * log2 sigmoid(sigma * (s_i - s_j))``, averaged over those pairs. Gains are
    ``(2^rel - 1) / maxDCG``: ``rel`` is the label for ``"labels"`` (negative labels count as 0),
    and ``1 / rank`` for a teacher's ranking (``"ranks"``) or for the ranking its ``"scores"`` induce
    (a score scale is arbitrary; its order is not). ``scheme``: ``ndcg2pp`` (NDCG-Loss2++, ``mu *
    NDCG-Loss2 + LambdaRank``, the paper's best), ``lambdarank``, ``ndcg2``, ``ndcg1`` or ``none``
    (RankNet). ``k``: only pairs with one document in the student's top ``k`` count (NDCG@k).
    Same values as sentence-transformers' ``LambdaLoss`` with the matching weighting scheme.

    Example:
        >>> lambda_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), scheme="none")  # ranknet: log2(2)
        tensor(1.)
    """
    if scheme not in LAMBDA_SCHEMES:
        raise ConfigError(f"lambda_loss: scheme must be one of {LAMBDA_SCHEMES}, got {scheme!r}")
    s, key, mask = _prepare("lambda_loss", scores, targets, mask, target_kind)
    rel = key.clamp(min=0.0) if target_kind == "labels" else 1.0 / target_ranks(key, mask)  # (B, G)
    rel = rel.masked_fill(~mask, float("-inf"))
    n = s.shape[1]
    s_sorted, by_pred = s.masked_fill(~mask, PAD_SCORE).sort(descending=True, dim=-1)  # (B, G)
    rel_ideal, _ = rel.sort(descending=True, dim=-1)
    rel_by_pred = rel.gather(1, by_pred)  # (B, G)
    true_diffs = rel_by_pred[:, :, None] - rel_by_pred[:, None, :]  # (B, G, G)
    pairs = torch.isfinite(true_diffs) & ((true_diffs > 0) if scheme != "ndcg1" else True)
    top = torch.zeros((n, n), dtype=torch.bool, device=s.device)
    top[: k or n, :] = True
    top[:, : k or n] = True
    discount = torch.log2(1.0 + torch.arange(1, n + 1, device=s.device).float())[None, :]  # (1, G)
    max_dcg = ((torch.pow(2.0, rel_ideal.clamp(min=0)) - 1) / discount)[:, : k or n].sum(-1).clamp(min=1e-10)
    gain = (torch.pow(2.0, rel_by_pred.clamp(min=0)) - 1) / max_dcg[:, None]  # (B, G)
    weights = _lambda_weights(scheme, gain, discount, mu)
    diffs = (s_sorted[:, :, None] - s_sorted[:, None, :]).clamp(min=-1e8, max=1e8)  # (B, G, G)
    losses = (weights * F.logsigmoid(sigma * diffs) / math.log(2))[pairs & top]
    return -losses.sum() / max(losses.numel(), 1)


@_fp32
def adr_mse(scores: Tensor, targets: Tensor, mask: Tensor | None = None, target_kind: str = "labels",
            alpha: float = 1.0) -> Tensor:
    """ADR-MSE: discounted squared error between target ranks and the scores' approximate ranks.

    The approximate rank of document ``i`` is ``1 + sum_{j != i} sigmoid(alpha * (s_j - s_i))``
    (ApproxRank, differentiable); the target rank ``r_i`` is its rank in the list by the targets
    (1 = best; tied targets share their mean rank). Returns the mean over valid documents of
    ``(r_i - approx_i)^2 / log2(r_i + 1)``. Any target kind works (only the order is used); a
    teacher's ranking of a longer list is re-ranked within the group. Reference: Schlatt et al.,
    2024, "Rank-DistiLLM: Closing the Effectiveness Gap Between Cross-Encoders and LLMs for
    Passage Re-Ranking"; sentence-transformers' ``ADRMSELoss``.

    Example:
        >>> adr_mse(torch.zeros(1, 2), torch.tensor([[1.0, 2.0]]), target_kind="ranks")  # approx ranks 1.5, 1.5
        tensor(0.2039)
    """
    s, key, mask = _prepare("adr_mse", scores, targets, mask, target_kind)
    true_ranks = target_ranks(key, mask)  # (B, G)
    pairwise = torch.sigmoid(alpha * (s.unsqueeze(1) - s.unsqueeze(2))) * mask.unsqueeze(1)  # (B, G, G): [i, j]
    approx = 1.0 + pairwise.sum(-1) - 0.5 * mask.float()  # (B, G): the j = i term is sigmoid(0) = 0.5
    loss = (true_ranks - approx).pow(2) / torch.log2(true_ranks + 1.0) * mask
    return loss.sum() / mask.sum().clamp(min=1)


LTR_LOSSES: dict[str, Callable[..., Tensor]] = {
    "ranknet": ranknet, "listnet": listnet, "plistmle": plistmle, "lambdaloss": lambda_loss, "adr_mse": adr_mse,
}


def ltr_loss(name: str, scores: Tensor, targets: Tensor, mask: Tensor | None, kind: str,
             temperature: float = 1.0, scheme: str = "ndcg2pp") -> Tensor:
    """The LTR loss ``name`` (a key of ``LTR_LOSSES``) of ``(B, G)`` scores against ``(B, G)`` targets.

    ``targets`` are graded labels (``kind="labels"``) or teacher scores; with ``kind="ranks"`` only the
    order of the teacher's scores counts: they become ranks within each list (a listwise teacher's
    rows carry ``score = -rank``, so its ranking comes back exactly). ``temperature`` softens listnet,
    ``scheme`` weighs lambdaloss.
    """
    if kind == "ranks":
        valid = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask
        targets = target_ranks(targets.float(), valid)  # (B, G), 1 = best
    options = {"listnet": {"temperature": temperature}, "lambdaloss": {"scheme": scheme}}.get(name, {})
    return LTR_LOSSES[name](scores, targets, mask, kind, **options)


def check_ltr_targets(name: str, kind: str, temperature: float, scheme: str) -> None:
    """Fail before training when LTR loss ``name`` cannot use target ``kind`` (e.g. listnet on a ranking)."""
    ltr_loss(name, torch.zeros(1, 2), torch.zeros(1, 2), None, kind, temperature, scheme)
