"""Low-level strict parsing shared by the readers: located errors, lines, columns, fields.

Every helper raises :class:`DataError` naming the file (or hub dataset), the 1-based line or a
record path such as ``[3].hits[7]``, the field, and a hint how to fix it.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilrank.data.records import Group, LabeledPair, Passage, Query, SoftGroup
from distilrank.errors import DataError

StrPath = str | os.PathLike

UTF8_HINT = "re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 old > new`"
SHAPE_FIELDS = {
    "triplet": ("query", "positive", "negative"),
    "group": ("query", "positive", "negatives"),
    "pair": ("query", "passage", "label"),
}
SHAPES_HINT = (
    "each example must be a triplet {query, positive, negative}, a group {query, positive, "
    "negatives: [...], scores: [...] (optional)}, a labeled pair {query, passage, label} or a "
    "soft label {query, contents, true_logit, false_logit} / {query, contents, score}"
)
SOFT_HINT = (
    "each soft-label row is {query, contents, true_logit, false_logit} (a seq2seq teacher, "
    "InRanker's format) or {query, contents, score} (a cross-encoder teacher)"
)
LOGIT_FIELDS = ("false_logit", "true_logit")
_INT_RE = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class Where:
    """Where a record sits: a file and line, or a source and a prefix like ``[3].hits[7].``."""

    path: str
    line: int | None = None
    prefix: str = ""

    def error(self, message: str, field: str | None = None, hint: str | None = None) -> DataError:
        name = self.prefix + field if field is not None else (self.prefix.rstrip(".") or None)
        return DataError(message, path=self.path, line=self.line, field=name, hint=hint)

    def describe(self) -> str:
        return f"line {self.line}" if self.line is not None else self.prefix.rstrip(".")


# ---------------------------------------------------------------------------- low-level helpers


def json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def require_file(path: Path) -> None:
    if path.is_dir():
        raise DataError("is a folder, expected a file", path=path, hint="pass the file itself")
    if not path.is_file():
        raise DataError("no such file", path=path, hint="check the path and the file name")


def _decode(raw: bytes, path: Path, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1})"
        raise DataError(message, path=path, line=line, hint=UTF8_HINT) from None


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text without line ending); each line decoded as strict UTF-8."""
    require_file(path)
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, 1):
            text = _decode(raw, path, line_no)
            if line_no == 1:
                text = text.removeprefix("\ufeff")
            yield line_no, text.rstrip("\r\n")


def iter_columns(
    path: Path,
    names: tuple[str, ...],
    sep: str | None,
    *,
    header: bool = False,
    maxsplit: int = -1,
    lines: Iterable[tuple[int, str]] | None = None,
) -> Iterator[tuple[int, list[str]]]:
    """Non-blank lines (of ``path``, or ``lines`` read from it) split into exactly ``len(names)`` non-empty,
    stripped columns."""
    kind = "tab" if sep == "\t" else "whitespace"
    first = True
    for line_no, text in iter_lines(path) if lines is None else lines:
        if not text.strip():
            continue
        cols = [c.strip() for c in text.split(sep, maxsplit)]
        if first and header and [c.lower() for c in cols] == list(names):
            first = False
            continue
        first = False
        if len(cols) != len(names):
            field = names[len(cols)] if len(cols) < len(names) else f"column {len(names) + 1}"
            hint = f"each line needs the columns {' '.join(names)}"
            if sep == "\t" and len(cols) < len(names) and " " in text:
                hint += ", separated by tabs, not spaces"
            message = f"expected {len(names)} {kind}-separated columns, found {len(cols)}"
            raise DataError(message, path=path, line=line_no, field=field, hint=hint)
        for name, col in zip(names, cols, strict=True):
            if not col:
                raise DataError("is empty", path=path, line=line_no, field=name, hint="fill it in")
        yield line_no, cols


def parse_int(text: str, where: Where, field: str) -> int:
    if not _INT_RE.fullmatch(text):
        hint = "relevance grades and ranks are whole numbers such as 0, 1, 2"
        raise where.error(f"expected an integer, got {text!r}", field, hint)
    return int(text)


def parse_float(text: str, where: Where, field: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise where.error(f"expected a finite number, got {text!r}", field, "write e.g. 12.5")
    return value


def get_field(obj: Mapping[str, Any], key: str, where: Where, hint: str | None = None) -> Any:
    if key not in obj:
        hint = hint or f"the fields present are: {', '.join(map(str, obj)) or 'none'}"
        raise where.error("missing required field", key, hint)
    return obj[key]


def id_field(obj: Mapping[str, Any], key: str, where: Where, hint: str | None = None) -> str:
    value = get_field(obj, key, where, hint)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise where.error(
            f"expected a string or integer id, got {json_type(value)}", key, "write the id as text"
        )
    text = str(value).strip()
    if not text:
        raise where.error("id is empty", key, "give every record a non-empty id")
    return text


def text_field(
    obj: Mapping[str, Any],
    key: str,
    where: Where,
    hint: str | None = None,
    allow_empty: bool = False,
) -> str:
    value = get_field(obj, key, where, hint)
    if not isinstance(value, str):
        raise where.error(
            f"expected a string, got {json_type(value)}", key, "write it as quoted text"
        )
    if not allow_empty and not value.strip():
        raise where.error("is empty", key, "give a non-empty text or remove this record")
    return value


def number_field(obj: Mapping[str, Any], key: str, where: Where, hint: str | None = None) -> float:
    value = get_field(obj, key, where, hint)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise where.error(f"expected a finite number, got {value!r}", key, "write e.g. 12.5")
    return float(value)


def no_duplicate(seen: dict[str, str], key: str, where: Where, field: str) -> None:
    if key in seen:
        message = f"duplicate id {key!r} (first seen at {seen[key]})"
        raise where.error(message, field, "ids must be unique: remove or rename one of the two")
    seen[key] = where.describe()


def add_judgment(
    qrels: dict[str, dict[str, int]], qid: str, did: str, grade: int, where: Where, field: str
) -> None:
    judged = qrels.setdefault(qid, {})
    if judged.get(did, grade) != grade:
        message = f"document {did!r} is judged twice for query {qid!r} with different grades"
        raise where.error(message, field, "keep one judgment per (query, document)")
    judged[did] = grade


def sort_hits(rows: list[tuple[float, int, str]]) -> list[tuple[str, float]]:
    """(score, rank, docid) rows -> [(docid, score)] best first; ties broken by rank."""
    return [(did, score) for score, _, did in sorted(rows, key=lambda r: (-r[0], r[1]))]


def iter_jsonl(
    path: StrPath, lines: Iterable[tuple[int, str]] | None = None,
    hint: str = 'each line must hold one complete JSON object, e.g. {"query": "..."}',
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a JSON-lines file (or of ``lines`` read from it)."""
    path = Path(path)
    for line_no, text in iter_lines(path) if lines is None else lines:
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            message = f"malformed JSON: {exc.msg} at column {exc.colno}"
            raise DataError(message, path=path, line=line_no, hint=hint) from None
        if not isinstance(obj, dict):
            message = f"expected a JSON object {{...}}, got {json_type(obj)}"
            raise DataError(message, path=path, line=line_no, hint="write one object per line")
        yield line_no, obj


def load_json(path: Path) -> Any:
    require_file(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        message = f"not valid UTF-8 (byte 0x{raw[exc.start]:02x})"
        raise DataError(message, path=path, line=line, hint=UTF8_HINT) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        message = f"malformed JSON: {exc.msg} at column {exc.colno}"
        raise DataError(message, path=path, line=exc.lineno, hint="fix the JSON syntax") from None


# ---------------------------------------------------------------------------- records


def passage_from_record(obj: Mapping[str, Any], where: Where) -> Passage:
    """A BEIR corpus record ``{_id, text, title?}``; empty text is allowed if a title is given."""
    doc_id = id_field(obj, "_id", where)
    title = obj.get("title") or ""
    if not isinstance(title, str):
        raise where.error(f"expected a string, got {json_type(title)}", "title", "or leave it out")
    text = text_field(obj, "text", where, allow_empty=True)
    if not text.strip() and not title.strip():
        raise where.error("is empty and there is no title", "text", "give the passage a text")
    return Passage(id=doc_id, text=text, title=title)


def query_from_record(obj: Mapping[str, Any], where: Where) -> Query:
    """A BEIR query record ``{_id, text}``."""
    return Query(id=id_field(obj, "_id", where), text=text_field(obj, "text", where))


# ---------------------------------------------------------------------------- training examples


def detect_training_shape(keys: Iterable[str], where: Where) -> str:
    """'triplet', 'group', 'pair' or 'soft' from an example's field names.

    'soft' rows (any row with ``contents``) are grouped by query: read them with
    :class:`SoftGroupCollector`, not :func:`parse_training_record`.
    """
    present = set(keys)
    if "contents" in present:
        return "soft"
    if "negatives" in present:
        return "group"
    if "negative" in present:
        return "triplet"
    if "passage" in present or "label" in present:
        return "pair"
    message = f"cannot tell the kind of training example from its fields ({', '.join(present)})"
    raise where.error(message, hint=SHAPES_HINT)


def _negatives(obj: Mapping[str, Any], where: Where, hint: str) -> tuple[str, ...]:
    value = get_field(obj, "negatives", where, hint)
    if not isinstance(value, list) or not value:
        got = "an empty list" if isinstance(value, list) else json_type(value)
        hint = 'write e.g. "negatives": ["first negative", "second negative"]'
        raise where.error(f"expected a non-empty list of texts, got {got}", "negatives", hint)
    for k, negative in enumerate(value):
        if not isinstance(negative, str) or not negative.strip():
            problem = "is empty" if isinstance(negative, str) else f"got {json_type(negative)}"
            raise where.error(problem, f"negatives[{k}]", "every negative must be a non-empty text")
    return tuple(value)


def _scores(obj: Mapping[str, Any], n: int, where: Where) -> tuple[float, ...] | None:
    value = obj.get("scores")
    if value is None:
        return None
    hint = "give one teacher score per document: the positive first, then each negative"
    if not isinstance(value, list) or len(value) != n:
        got = f"{len(value)} items" if isinstance(value, list) else json_type(value)
        raise where.error(f"expected a list of {n} numbers, got {got}", "scores", hint)
    for k, score in enumerate(value):
        if (
            isinstance(score, bool)
            or not isinstance(score, (int, float))
            or not math.isfinite(score)
        ):
            raise where.error(f"expected a finite number, got {score!r}", f"scores[{k}]", hint)
    return tuple(float(score) for score in value)


def _label(obj: Mapping[str, Any], where: Where, hint: str) -> float:
    value = get_field(obj, "label", where, hint)
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and 0 <= value <= 1:
        return float(value)
    message = f"expected a number in [0, 1] or true/false, got {value!r}"
    raise where.error(message, "label", "use 1 for relevant and 0 for not relevant")


def parse_training_record(
    obj: Mapping[str, Any], shape: str, where: Where, first: str
) -> Group | LabeledPair:
    """One training example of a known shape; ``first`` names the example the shape came from."""
    fields = ", ".join(SHAPE_FIELDS[shape])
    hint = f"the first example ({first}) is a {shape}, so every example needs: {fields}"
    query_key = "anchor" if "query" not in obj and "anchor" in obj else "query"
    query = text_field(obj, query_key, where, hint)
    if shape == "pair":
        passage = text_field(obj, "passage", where, hint)
        return LabeledPair(query=query, passage=passage, label=_label(obj, where, hint))
    positive = text_field(obj, "positive", where, hint)
    if shape == "triplet":
        negatives: tuple[str, ...] = (text_field(obj, "negative", where, hint),)
    else:
        negatives = _negatives(obj, where, hint)
    scores = _scores(obj, 1 + len(negatives), where)
    return Group(query=query, positive=positive, negatives=negatives, teacher_scores=scores)


# ---------------------------------------------------------------------------- soft labels


def _present(obj: Mapping[str, Any], key: str) -> bool:
    # hub rows carry every column, with None where a row lacks the field
    return obj.get(key) is not None


class SoftGroupCollector:
    """Validates soft-label rows one by one and groups them by query.

    The grouping key is ``query_id`` when a row has one, else the query text; groups come in
    order of first appearance, documents in row order. Rows are not kept: only the query text
    once per group and, per document, its text and labels (tuples are built by :meth:`groups`).
    """

    def __init__(self) -> None:
        self._slot: dict[tuple[bool, str], int] = {}
        self._queries: list[str] = []
        self._docs: list[list[str]] = []
        self._scores: list[list[float]] = []
        self._logits: list[list[tuple[float, float]]] = []
        self._kind = ""  # "logit" or "score": fixed by the first row, a file holds one teacher
        self._first = ""
        self.rows = 0

    def _label(self, obj: Mapping[str, Any], where: Where) -> tuple[float, tuple[float, float] | None]:
        has_logit = any(_present(obj, k) for k in LOGIT_FIELDS)
        kind = "logit" if has_logit else "score" if _present(obj, "score") else ""
        if not kind:
            field = {"logit": "true_logit", "score": "score"}.get(self._kind)
            raise where.error("missing the teacher's label (true_logit/false_logit or score)", field, SOFT_HINT)
        if self._kind and kind != self._kind:
            message = f"a {kind} row in a file of {self._kind} rows (see the first row, {self._first})"
            field = "true_logit" if kind == "logit" else "score"
            hint = "label every row with one teacher: all true_logit + false_logit, or all score"
            raise where.error(message, field, hint)
        if kind == "score":
            return number_field(obj, "score", where, SOFT_HINT), None
        for key, other in (LOGIT_FIELDS, LOGIT_FIELDS[::-1]):
            if not _present(obj, key):
                hint = f"the row has {other}, but InRanker rows need both true_logit and false_logit"
                raise where.error("missing required field", key, hint)
        false, true = (number_field(obj, key, where) for key in LOGIT_FIELDS)
        return true - false, (false, true)

    def add(self, obj: Mapping[str, Any], where: Where) -> None:
        """Validate one row (errors name ``where`` and the field) and file it under its query."""
        query = text_field(obj, "query", where, SOFT_HINT)
        contents = text_field(obj, "contents", where, SOFT_HINT)
        score, logits = self._label(obj, where)
        if not self._kind:
            self._kind, self._first = ("logit" if logits else "score"), where.describe()
        by_id = _present(obj, "query_id")
        key = (True, id_field(obj, "query_id", where)) if by_id else (False, query)
        slot = self._slot.get(key)
        if slot is None:
            slot = self._slot[key] = len(self._queries)
            self._queries.append(query)
            self._docs.append([])
            self._scores.append([])
            self._logits.append([])
        elif by_id and self._queries[slot] != query:
            message = f"query_id {key[1]!r} has another query text than in its first row"
            raise where.error(message, "query", "one query_id must always carry the same query text")
        self._docs[slot].append(contents)
        self._scores[slot].append(score)
        if logits is not None:
            self._logits[slot].append(logits)
        self.rows += 1

    def groups(self) -> list[SoftGroup]:
        """The collected groups (empty if no row was added); texts and floats are shared, not copied."""
        logit = self._kind == "logit"
        return [
            SoftGroup(query, tuple(docs), tuple(scores), tuple(logits) if logit else None)
            for query, docs, scores, logits in zip(
                self._queries, self._docs, self._scores, self._logits, strict=True
            )
        ]
