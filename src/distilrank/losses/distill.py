"""Distillation losses as pure functions of logits, scores and hidden states.

The DistilBERT recipe (``kd_kl``, ``mlm_ce``, ``hidden_cosine``) and soft-label reranker
distillation (``logit_mse``, InRanker; ``listwise_kl`` over a query's documents).

Shapes: ``N`` = rows (masked positions, or tokens), ``V`` = vocabulary size, ``H`` = hidden size,
``B`` = query groups, ``G`` = documents per group. Teacher tensors are detached inside each loss:
gradients reach the student only.

References: Sanh et al., 2019, "DistilBERT, a distilled version of BERT: smaller, faster,
cheaper and lighter"; huggingface/transformers ``examples/research_projects/distillation/distiller.py``;
Laitz et al., 2024, "InRanker: Distilled Rankers for Zero-shot Information Retrieval".
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def _check_same_shape(name: str, student: Tensor, teacher: Tensor, dims: str) -> None:
    if student.dim() != 2 or student.shape != teacher.shape:
        raise ValueError(
            f"{name}: student and teacher must both be {dims} with the same shape, got "
            f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)}"
        )


def kd_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 2.0) -> Tensor:
    """Soft-target distillation: KL divergence from the teacher's to the student's softened distribution.

    Args:
        student_logits: ``(N, V)`` student logits, one row per distilled position.
        teacher_logits: ``(N, V)`` teacher logits for the same rows (detached here).
        temperature: ``T`` > 0; both distributions are ``softmax(logits / T)``.

    Returns ``T^2 * mean_n KL(softmax(t_n / T) || softmax(s_n / T))``, i.e.
    ``KLDivLoss(reduction="batchmean")(log_softmax(s / T), softmax(t / T)) * T**2``, exactly as
    DistilBERT's distiller. The ``T^2`` factor keeps gradient magnitudes comparable across
    temperatures (Hinton et al., 2015, "Distilling the Knowledge in a Neural Network").

    Example:
        >>> kd_kl(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 2.0]]))  # same logits
        tensor(0.)
    """
    _check_same_shape("kd_kl", student_logits, teacher_logits, "(N, V)")
    return _softened_kl("kd_kl", student_logits, teacher_logits, temperature)


def _softened_kl(name: str, student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """``T^2 * batchmean KL(softmax(teacher / T) || softmax(student / T))`` over the last dim."""
    if temperature <= 0:
        raise ValueError(f"{name}: temperature must be > 0, got {temperature}")
    log_p_student = F.log_softmax(student / temperature, dim=-1)  # (N, V)
    p_teacher = F.softmax(teacher.detach().to(student.dtype) / temperature, dim=-1)  # (N, V)
    return F.kl_div(log_p_student, p_teacher, reduction="batchmean") * temperature**2


def mlm_ce(logits: Tensor, labels: Tensor) -> Tensor:
    """Masked-language-modelling loss: mean cross-entropy of the true token at each row.

    Args:
        logits: ``(N, V)`` logits at the masked positions.
        labels: ``(N,)`` token ids in ``[0, V)``.

    Returns ``mean_n(-log softmax(logits_n)[labels_n])`` (Devlin et al., 2019, BERT; the
    ``L_mlm`` term of DistilBERT).

    Example:
        >>> mlm_ce(torch.zeros(1, 4), torch.tensor([2]))  # uniform over 4: log 4
        tensor(1.3863)
    """
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"mlm_ce: expected logits (N, V) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    return F.cross_entropy(logits, labels.long())


def hidden_cosine(student: Tensor, teacher: Tensor) -> Tensor:
    """Align hidden-state directions: mean of ``1 - cos(student_n, teacher_n)``.

    Args:
        student: ``(N, H)`` student hidden states (e.g. last layer, non-padding tokens).
        teacher: ``(N, H)`` teacher hidden states for the same rows (detached here).

    Returns the value of ``CosineEmbeddingLoss`` with target 1 for every row (the ``L_cos`` term
    of DistilBERT): 0 for parallel vectors, 1 for orthogonal ones, 2 for opposite ones.

    Example:
        >>> hidden_cosine(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]]))  # orthogonal
        tensor(1.)
    """
    _check_same_shape("hidden_cosine", student, teacher, "(N, H)")
    cos = F.cosine_similarity(student, teacher.detach().to(student.dtype), dim=-1)  # (N,)
    return (1 - cos).mean()


def logit_mse(student: Tensor, teacher: Tensor, center: bool = True) -> Tensor:
    """InRanker's loss: mean squared error between student and teacher ``[false, true]`` logits.

    Args:
        student: ``(B, 2)`` the student's ``[false_logit, true_logit]`` at the first decoder step.
        teacher: ``(B, 2)`` the teacher's logits for the same (query, document) pairs (detached).
        center: zero-centre each teacher row first (subtract the mean of its pair), exactly as
            InRanker's ``load_custom_dataset`` does (``false -= avg; true -= avg``): a logit pair
            is defined up to a shared constant (only ``true - false`` sets the relevance score),
            so the student is asked for the centred pair rather than the teacher's offset.

    Returns ``mean_{b,k}(student_bk - target_bk)^2`` over all ``2B`` entries (``MSELoss()`` as in
    InRanker's ``T5Trainer.compute_loss``). Reference: Laitz et al., 2024, "InRanker: Distilled
    Rankers for Zero-shot Information Retrieval".

    Example:
        >>> logit_mse(torch.tensor([[-1.0, 1.0]]), torch.tensor([[4.0, 6.0]]))  # centred: [-1, 1]
        tensor(0.)
    """
    _check_same_shape("logit_mse", student, teacher, "(B, 2)")
    if student.shape[1] != 2:
        raise ValueError(f"logit_mse: expected (B, 2) [false, true] logits, got {tuple(student.shape)}")
    target = teacher.detach().to(student.dtype)  # (B, 2)
    if center:
        target = target - target.mean(dim=1, keepdim=True)  # (B, 2), each row sums to 0
    return F.mse_loss(student, target)


def listwise_kl(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """Listwise distillation: KL divergence between the teacher's and the student's softmax over
    each query's documents.

    Args:
        student: ``(B, G)`` student scores, one row per query group of ``G`` documents.
        teacher: ``(B, G)`` teacher scores for the same documents (detached here), e.g.
            cross-encoder scores or a seq2seq teacher's ``true_logit - false_logit``.
        temperature: ``T`` > 0; both distributions are ``softmax(scores / T)``.

    Returns ``T^2 * mean_b KL(softmax(t_b / T) || softmax(s_b / T))`` (``batchmean``: averaged
    over the ``B`` groups), the soft-target loss of Hinton et al., 2015, "Distilling the Knowledge
    in a Neural Network", applied to a query's ranked list as in ``kd_kl``. Adding a constant to
    a row of either side leaves the loss unchanged: only score differences within a group matter.

    Example:
        >>> listwise_kl(torch.tensor([[0.0, 1.0]]), torch.tensor([[5.0, 6.0]]))  # same softmax
        tensor(0.)
    """
    _check_same_shape("listwise_kl", student, teacher, "(B, G)")
    return _softened_kl("listwise_kl", student, teacher, temperature)
