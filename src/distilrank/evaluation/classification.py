"""Classification metrics (NLI): accuracy, binary and macro F1, confusion matrix (numpy only).

Definitions as in scikit-learn's ``accuracy_score``, ``f1_score(average="binary"|"macro")`` and
``confusion_matrix`` (rows: true class, columns: predicted class); a class never predicted nor
present has F1 0, as scikit-learn's ``zero_division=0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """``(C, C)`` counts: ``m[i, j]`` = examples of true class ``i`` predicted as ``j``."""
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return m


def per_class_f1(matrix: np.ndarray) -> np.ndarray:
    """``(C,)`` F1 of each class from a confusion matrix (0 where precision + recall is undefined)."""
    tp = np.diag(matrix).astype(np.float64)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    denom = predicted + actual  # 2tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], label_names: Sequence[str], positive: int = 0
) -> dict[str, Any]:
    """``accuracy``, ``macro_f1``, ``f1`` of class ``positive`` (binary tasks only), and the matrix.

    Example:
        >>> m = classification_metrics([0, 0, 1, 1], [0, 1, 1, 1], ["entailment", "not_entailment"])
        >>> m["accuracy"], round(m["f1"], 4), m["confusion_matrix"]
        (0.75, 0.6667, [[1, 1], [0, 2]])
    """
    if len(y_true) != len(y_pred) or not len(y_true):
        raise ValueError(f"need as many predictions as labels (> 0), got {len(y_pred)} and {len(y_true)}")
    matrix = confusion_matrix(y_true, y_pred, len(label_names))
    f1 = per_class_f1(matrix)
    out: dict[str, Any] = {
        "accuracy": float(np.trace(matrix) / matrix.sum()),
        "macro_f1": float(f1.mean()),
    }
    if len(label_names) == 2:
        out["f1"] = float(f1[positive])
    out["confusion_matrix"] = matrix.tolist()
    out["labels"] = list(label_names)
    return out
