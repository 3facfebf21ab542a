"""Extractive QA: answer post-processing over windows, and SQuAD v1.1 exact match / F1.

The metric functions follow the official ``evaluate-v1.1.py`` script (normalisation: lower case,
no punctuation, no articles a/an/the, single spaces; the best score over the gold answers;
averaged and reported in percent).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from distilrank.models.heads import Answer

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (official SQuAD v1.1)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token-overlap F1 of the normalised strings (official SQuAD v1.1)."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    common = Counter(pred) & Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: Mapping[str, str], gold: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """``exact_match`` and ``f1`` in percent over every question of ``gold`` (a missing prediction scores 0)."""
    if not gold:
        raise ValueError("no gold answers to score against")
    em = f1 = 0.0
    for qid, answers in gold.items():
        pred = predictions.get(qid)
        if pred is None:
            continue
        em += max(exact_match_score(pred, a) for a in answers)
        f1 += max(f1_score(pred, a) for a in answers)
    return {"exact_match": 100.0 * em / len(gold), "f1": 100.0 * f1 / len(gold)}


def window_candidates(start: np.ndarray, end: np.ndarray, offsets: Sequence[tuple[int, int]],
                      sequence_ids: Sequence[int | None], n_best: int, max_answer_length: int,
                      ) -> list[tuple[float, int, int]]:
    """``(score, start_char, end_char)`` spans of one window from its ``n_best`` start and end tokens.

    A span must lie inside the context (sequence 1), end at or after its start, and be at most
    ``max_answer_length`` tokens long; its score is start logit + end logit.
    """
    context = np.array([s == 1 for s in sequence_ids])  # (L,)
    width = min(len(start), len(context))
    start_masked = np.where(context[:width], start[:width], -np.inf)
    end_masked = np.where(context[:width], end[:width], -np.inf)
    starts = np.argsort(start_masked)[::-1][:n_best]
    ends = np.argsort(end_masked)[::-1][:n_best]
    out = []
    for i in starts:
        if not context[i]:
            continue
        for j in ends:
            if context[j] and i <= j < i + max_answer_length:
                out.append((float(start[i] + end[j]), int(offsets[i][0]), int(offsets[j][1])))
    return out


def best_answer(context: str, windows: Sequence[tuple[np.ndarray, np.ndarray, Any, Any]], n_best: int,
                max_answer_length: int) -> Answer:
    """The best span over all windows of one context (answers may come from any window)."""
    candidates = [c for s, e, offsets, seq in windows
                  for c in window_candidates(s, e, offsets, seq, n_best, max_answer_length)]
    if not candidates:
        return Answer("", 0, 0, float("-inf"))
    score, start, end = max(candidates)
    return Answer(context[start:end], start, end, score)


def answer_examples(model: Any, examples: Sequence[Any], batch_size: int = 32) -> dict[str, Answer]:
    """Predicted answers of a :class:`QuestionAnswerer` for QA examples, by id (too-long questions left out)."""
    from distilrank.data.qa import encode_windows, question_fits, window_logits

    fits = [e for e in examples if question_fits(model.tokenizer, e.question, model.text_length, model.doc_stride)]
    out: dict[str, Answer] = {}
    for b in range(0, len(fits), 256):
        chunk = fits[b:b + 256]
        encoded = encode_windows(model.tokenizer, [e.question for e in chunk], [e.context for e in chunk],
                                 model.text_length, model.doc_stride)
        starts, ends = window_logits(model, encoded, batch_size)
        by_example: dict[int, list[int]] = {}
        for w, owner in enumerate(encoded["overflow_to_sample_mapping"]):
            by_example.setdefault(owner, []).append(w)
        for k, windows in by_example.items():
            out[chunk[k].id] = best_answer(chunk[k].context, [
                (starts[w], ends[w], encoded["offset_mapping"][w], encoded.sequence_ids(w)) for w in windows],
                model.n_best, model.max_answer_length)
    return out


def evaluate_qa(model: Any, examples: Sequence[Any], batch_size: int = 32) -> dict[str, float]:
    """SQuAD exact match and F1 (percent) of ``model`` on ``examples``; unanswered questions score 0."""
    answers = answer_examples(model, examples, batch_size)
    gold = {e.id: [a for a, _ in e.answers] for e in examples}
    metrics = squad_metrics({k: a.text for k, a in answers.items()}, gold)
    metrics["unanswered"] = float(len(examples) - len(answers))
    return metrics
