"""Extractive QA data (SQuAD format) and its sliding-window features.

Sources: the official SQuAD JSON (``{"data": [{"title", "paragraphs": [{"context", "qas": [{"id",
"question", "answers": [{"text", "answer_start"}]}]}]}]}``), a jsonl file or hub dataset of flat
rows ``{id, question, context, answers: {text: [...], answer_start: [...]}}`` (as ``squad`` on the
hub), e.g. ``squad`` or ``rajpurkar/squad``, or a local folder laid out like a hub repo.

An answer whose ``answer_start`` does not point at its text in the context is a
:class:`DataError` naming the record; questions without answers (SQuAD 2.0's unanswerable ones)
are skipped and counted. A long context becomes several windows of ``max_length`` tokens that
overlap by ``doc_stride``; a question that leaves no room for a window is skipped and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distilrank.data.parsing import Where, id_field, iter_jsonl, json_type, load_json, text_field
from distilrank.errors import DataError

logger = logging.getLogger(__name__)

SQUAD_HINT = ('SQuAD format: {"data": [{"paragraphs": [{"context": "...", "qas": [{"id": "...", "question": '
              '"...", "answers": [{"text": "...", "answer_start": 17}]}]}]}]}')
TOKENIZE_CHUNK = 1000  # examples tokenized per call


@dataclass(frozen=True)
class QAExample:
    """A question about a context; ``answers`` are (text, character start), the first one trained on."""

    id: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class QAData:
    examples: list[QAExample]
    unanswerable: int = 0  # questions without an answer (SQuAD 2.0), skipped


@dataclass
class QAWindows:
    """Training windows: token ids (unpadded) and the answer's token positions (0: the [CLS] token)."""

    input_ids: list[list[int]] = field(default_factory=list)
    token_type_ids: list[list[int]] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=lambda: {"question_too_long": 0, "answer_beyond_windows": 0})


def _answers(texts: Any, starts: Any, context: str, where: Where) -> tuple[tuple[str, int], ...]:
    if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
        raise where.error("answers need as many texts as answer_start values", "answers", SQUAD_HINT)
    out = []
    for k, (text, start) in enumerate(zip(texts, starts)):
        if not isinstance(text, str) or not text.strip():
            raise where.error(f"answer {k} text is {json_type(text)} or empty", "answers", "give the answer text")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise where.error(f"answer {k} answer_start must be a character offset >= 0, got {start!r}", "answers")
        found = context[start:start + len(text)]
        if found != text:
            hint = (f"context[{start}:{start + len(text)}] is {found!r}; fix answer_start"
                    + (f" (the text occurs at {context.find(text)})" if text in context else ""))
            raise where.error(f"answer {k} {text!r} does not match the context at answer_start", "answers", hint)
        out.append((text, start))
    return tuple(out)


def _example(row: Mapping[str, Any], context: str, where: Where) -> QAExample | None:
    qid = id_field(row, "id", where, SQUAD_HINT)
    question = text_field(row, "question", where, SQUAD_HINT)
    answers = row.get("answers", [])
    if isinstance(answers, Mapping):  # hub rows: {text: [...], answer_start: [...]}
        texts, starts = answers.get("text", []), answers.get("answer_start", [])
    elif isinstance(answers, list) and all(isinstance(a, Mapping) for a in answers):
        texts, starts = [a.get("text") for a in answers], [a.get("answer_start") for a in answers]
    else:
        raise where.error(f"expected a list of answers, got {json_type(answers)}", "answers", SQUAD_HINT)
    if not texts:
        return None
    return QAExample(qid, question.strip(), context, _answers(list(texts), list(starts), context, where))


def _squad_json(path: Path) -> Iterator[tuple[Mapping[str, Any], str, Where]]:
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError('expected an object with a "data" list', path=path, hint=SQUAD_HINT)
    for a, article in enumerate(data["data"]):
        for p, para in enumerate(article.get("paragraphs", []) if isinstance(article, dict) else []):
            where = Where(str(path), None, f"data[{a}].paragraphs[{p}].")
            context = text_field(para, "context", where, SQUAD_HINT)
            qas = para.get("qas")
            if not isinstance(qas, list):
                raise where.error("expected a list of questions", "qas", SQUAD_HINT)
            for q, row in enumerate(qas):
                if not isinstance(row, dict):
                    raise where.error(f"expected a question object, got {json_type(row)}", f"qas[{q}]", SQUAD_HINT)
                yield row, context, Where(str(path), None, f"data[{a}].paragraphs[{p}].qas[{q}].")


def _flat_rows(rows: Iterator[tuple[Where, Mapping[str, Any]]]) -> Iterator[tuple[Mapping[str, Any], str, Where]]:
    for where, row in rows:
        yield row, text_field(row, "context", where, SQUAD_HINT), where


def read_squad(spec: str, split: str = "train", max_examples: int = 0) -> QAData:
    """QA examples from a SQuAD JSON file, a flat jsonl file or a hub dataset (``name`` or ``name:config``)."""
    from distilrank.data.readers import _looks_local

    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == ".jsonl":
        source = _flat_rows((Where(str(path), n), obj) for n, obj in iter_jsonl(path))
    elif path.is_file():
        source = _squad_json(path)
    elif path.is_dir() or not _looks_local(spec):
        from distilrank.data.hub import _load

        name, _, config = spec.partition(":")
        ds = _load(name, config or None, split, None)
        source = _flat_rows((Where(name, None, f"{split}[{i}]."), row) for i, row in enumerate(ds))
    else:
        raise DataError("no such file or folder", path=path, hint="a SQuAD .json file, a .jsonl file or a hub name")
    examples, unanswerable, seen = [], 0, set()
    for row, context, where in source:
        example = _example(row, context, where)
        if example is None:
            unanswerable += 1
            continue
        if example.id in seen:
            raise where.error(f"duplicate question id {example.id!r}", "id", "ids must be unique")
        seen.add(example.id)
        examples.append(example)
        if max_examples and len(examples) >= max_examples:
            break
    if not examples:
        raise DataError("holds no answerable questions", path=spec, hint=SQUAD_HINT)
    if unanswerable:
        logger.warning("%s: skipped %d questions without answers (SQuAD 2.0 style)", spec, unanswerable)
    return QAData(examples, unanswerable)


# ---------------------------------------------------------------------------- windows


def question_fits(tokenizer: Any, question: str, max_length: int, doc_stride: int) -> bool:
    """Whether a window of ``max_length`` leaves more than ``doc_stride`` context tokens after the question."""
    n = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    return n + tokenizer.num_special_tokens_to_add(pair=True) + doc_stride < max_length


def check_question_fits(tokenizer: Any, question: str, max_length: int, doc_stride: int = 0) -> None:
    from distilrank.errors import ConfigError

    if not question_fits(tokenizer, question, max_length, doc_stride):
        raise ConfigError(f"the question is too long for a window of {max_length} tokens (doc_stride {doc_stride}); "
                          "shorten it or raise max_length")


def encode_windows(tokenizer: Any, questions: Sequence[str], contexts: Sequence[str], max_length: int,
                   doc_stride: int) -> Any:
    """Each (question, context) as windows of ``max_length`` tokens overlapping by ``doc_stride``."""
    return tokenizer(list(questions), list(contexts), truncation="only_second", max_length=max_length,
                     stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)


def answer_positions(encoded: Any, window: int, start_char: int, end_char: int) -> tuple[int, int] | None:
    """Token positions of the character span ``[start_char, end_char)`` in a window, or None if outside."""
    seq = encoded.sequence_ids(window)
    offsets = encoded["offset_mapping"][window]
    ctx = [i for i, s in enumerate(seq) if s == 1]
    if not ctx or offsets[ctx[0]][0] > start_char or offsets[ctx[-1]][1] < end_char:
        return None
    start = next(i for i in ctx if offsets[i][1] > start_char)
    end = next(i for i in reversed(ctx) if offsets[i][0] < end_char)
    return start, end


def build_windows(tokenizer: Any, examples: Sequence[QAExample], max_length: int, doc_stride: int) -> QAWindows:
    """Training windows labelled with the first answer's token span ([CLS] = 0 where a window lacks it)."""
    out = QAWindows()
    kept = []
    for e in examples:
        if question_fits(tokenizer, e.question, max_length, doc_stride):
            kept.append(e)
        else:
            out.skipped["question_too_long"] += 1
    for chunk_start in range(0, len(kept), TOKENIZE_CHUNK):
        chunk = kept[chunk_start:chunk_start + TOKENIZE_CHUNK]
        encoded = encode_windows(tokenizer, [e.question for e in chunk], [e.context for e in chunk], max_length,
                                 doc_stride)
        by_example: dict[int, list[int]] = {}
        for w, owner in enumerate(encoded["overflow_to_sample_mapping"]):
            by_example.setdefault(owner, []).append(w)
        for k, windows in by_example.items():
            text, start = chunk[k].answers[0]
            spans = [answer_positions(encoded, w, start, start + len(text)) for w in windows]
            if all(s is None for s in spans):
                out.skipped["answer_beyond_windows"] += 1  # the answer is longer than any window's context
                continue
            for w, span in zip(windows, spans):
                out.input_ids.append(encoded["input_ids"][w])
                if "token_type_ids" in encoded:
                    out.token_type_ids.append(encoded["token_type_ids"][w])
                out.starts.append(span[0] if span else 0)
                out.ends.append(span[1] if span else 0)
    if out.skipped["question_too_long"] or out.skipped["answer_beyond_windows"]:
        logger.warning("QA windows: skipped %s", out.skipped)
    return out


def window_logits(model: Any, encoded: Any, batch_size: int) -> tuple[list[Any], list[Any]]:
    """Start and end logits (numpy, one array per window, unpadded) of every window in ``encoded``."""
    import torch

    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in encoded]
    n = len(encoded["input_ids"])
    starts: list[Any] = []
    ends: list[Any] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for b in range(0, n, batch_size):
                rows = [{k: encoded[k][i] for k in keys} for i in range(b, min(n, b + batch_size))]
                batch = model.tokenizer.pad(rows, return_tensors="pt").to(model.device)
                s, e = model(**batch)  # (B, L), (B, L)
                for i, row in enumerate(rows):
                    width = len(row["input_ids"])
                    starts.append(s[i, :width].float().cpu().numpy())
                    ends.append(e[i, :width].float().cpu().numpy())
    finally:
        model.train(was_training)
    return starts, ends
