"""Distillation losses (the DistilBERT recipe) as pure functions of logits and hidden states.

Shapes: ``N`` = rows (masked positions, or tokens), ``V`` = vocabulary size, ``H`` = hidden size.
Teacher tensors are detached inside each loss: gradients reach the student only.

Reference: Sanh et al., 2019, "DistilBERT, a distilled version of BERT: smaller, faster,
cheaper and lighter"; huggingface/transformers ``examples/research_projects/distillation/distiller.py``.
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
    if temperature <= 0:
        raise ValueError(f"kd_kl: temperature must be > 0, got {temperature}")
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)  # (N, V)
    p_teacher = F.softmax(teacher_logits.detach().to(student_logits.dtype) / temperature, dim=-1)  # (N, V)
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
