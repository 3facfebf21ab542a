"""Sentence-pair classification data (NLI): GLUE TSV, SNLI/MNLI-style jsonl, or a hub dataset.

A local ``.tsv`` needs a header naming its premise column (``sentence1`` or ``premise``), its
hypothesis column (``sentence2`` or ``hypothesis``) and its label column (``label`` or
``gold_label``), as GLUE's RTE and MNLI files have. A ``.jsonl`` file holds one object
``{premise, hypothesis, label}`` per line (``sentence1``/``sentence2``/``gold_label`` accepted too),
the label a name or a class index. Any other name is a hub dataset (``datasets.load_dataset``),
optionally with a config after a colon: ``snli``, ``nyu-mll/glue:rte``, or a local folder laid out
like a hub repo.

Rows without a gold label (SNLI's ``-`` / ``-1``: annotators did not agree) are skipped and
counted; any other label outside the label set, or an empty premise or hypothesis, is a
:class:`DataError` naming the file and line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilrank.data.parsing import Where, iter_jsonl, iter_lines, text_field
from distilrank.errors import DataError

logger = logging.getLogger(__name__)

BINARY_LABELS = ("entailment", "not_entailment")  # GLUE RTE / QNLI order
THREE_WAY_LABELS = ("entailment", "neutral", "contradiction")  # SNLI / MNLI order (hub class indices)
NO_GOLD = ("-", "-1", -1)  # SNLI: no annotator majority; skipped, not an error
PREMISE_KEYS = ("premise", "sentence1")
HYPOTHESIS_KEYS = ("hypothesis", "sentence2")
LABEL_KEYS = ("label", "gold_label")
NLI_HINT = ("each example needs a premise (premise/sentence1), a hypothesis (hypothesis/sentence2) and a "
            "label (label/gold_label)")


@dataclass(frozen=True)
class NLIExample:
    """One (premise, hypothesis) pair and its class index into the data's label names."""

    premise: str
    hypothesis: str
    label: int


@dataclass(frozen=True)
class NLIData:
    examples: list[NLIExample]
    label_names: tuple[str, ...]
    skipped: int = 0  # rows without a gold label


def infer_labels(raw: Iterable[Any]) -> tuple[str, ...]:
    """The label set of raw labels: binary (RTE) when they fit it, else 3-way (SNLI/MNLI).

    Integers index the set: 0/1 are binary, 0/1/2 three-way. Other names need ``labels=...``.
    """
    values = {str(v).strip().lower() for v in raw if v not in NO_GOLD and str(v).strip() not in NO_GOLD}
    digits = {v for v in values if v.isdigit()}
    names = values - digits
    if digits <= {"0", "1"} and names <= set(BINARY_LABELS):
        return BINARY_LABELS
    if digits <= {"0", "1", "2"} and names <= set(THREE_WAY_LABELS):
        return THREE_WAY_LABELS
    unknown = sorted(values - set(BINARY_LABELS) - set(THREE_WAY_LABELS) - {"0", "1", "2"}) or sorted(values)
    raise DataError(f"cannot infer the label set: unknown labels {unknown[:5]}",
                    hint=f"set labels=name1,name2,... in the config (class order), e.g. labels={','.join(BINARY_LABELS)}")


def label_index(value: Any, names: Sequence[str], where: Where, field: str) -> int | None:
    """The class index of a raw label (a name or an index); ``None`` for a row without a gold label."""
    if value in NO_GOLD or (isinstance(value, str) and value.strip() in NO_GOLD):
        return None
    if isinstance(value, bool):
        value = str(value)
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        k = int(value)
        if 0 <= k < len(names):
            return k
        raise where.error(f"class index {k} is outside the label set {list(names)} (0..{len(names) - 1})", field,
                          "fix the label, or set labels=... to the data's label names in class order")
    text = str(value).strip().lower()
    lowered = [n.lower() for n in names]
    if text in lowered:
        return lowered.index(text)
    raise where.error(f"label {value!r} is not one of {list(names)}", field,
                      "fix the label, or set labels=... to the data's label names in class order")


def _pick(obj: Mapping[str, Any], keys: Sequence[str], where: Where) -> str:
    for key in keys:
        if key in obj:
            return key
    raise where.error(f"missing field (one of {', '.join(keys)})", keys[0], NLI_HINT)


def _example(obj: Mapping[str, Any], names: Sequence[str], where: Where) -> NLIExample | None:
    premise = text_field(obj, _pick(obj, PREMISE_KEYS, where), where, NLI_HINT)
    hypothesis = text_field(obj, _pick(obj, HYPOTHESIS_KEYS, where), where, NLI_HINT)
    key = _pick(obj, LABEL_KEYS, where)
    label = label_index(obj[key], names, where, key)
    return None if label is None else NLIExample(premise.strip(), hypothesis.strip(), label)


def _tsv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    header: list[str] = []
    for line_no, text in iter_lines(path):
        if not text.strip():
            continue
        cols = text.split("\t")
        if not header:
            header = [c.strip().lower() for c in cols]
            if not (set(header) & set(PREMISE_KEYS) and set(header) & set(HYPOTHESIS_KEYS)):
                raise DataError(f"the first line must be a header naming the columns, got {cols[:6]}", path=path,
                                line=line_no, hint="GLUE style: index<TAB>sentence1<TAB>sentence2<TAB>label")
            if not set(header) & set(LABEL_KEYS):
                raise DataError("no label column (label or gold_label): an unlabeled test file cannot train or "
                                "evaluate", path=path, line=line_no, hint="use the train or dev file")
            continue
        if len(cols) != len(header):
            raise DataError(f"expected {len(header)} tab-separated columns as in the header, found {len(cols)}",
                            path=path, line=line_no, hint="a text must not contain a tab")
        yield line_no, dict(zip(header, cols))


def _rows_from_file(path: Path) -> Iterator[tuple[Where, Mapping[str, Any]]]:
    if path.suffix.lower() == ".tsv":
        for line_no, row in _tsv_rows(path):
            yield Where(str(path), line_no), row
    else:
        for line_no, obj in iter_jsonl(path, hint='each line must be one object {"premise", "hypothesis", "label"}'):
            yield Where(str(path), line_no), obj


def _rows_from_hub(spec: str, split: str) -> tuple[list[tuple[Where, Mapping[str, Any]]], tuple[str, ...] | None]:
    from distilrank.data.hub import _load

    name, _, config = spec.partition(":")
    ds = _load(name, config or None, split, None)
    feature = getattr(ds, "features", {}).get("label") if hasattr(ds, "features") else None
    names = tuple(feature.names) if getattr(feature, "names", None) else None
    return [(Where(name, None, f"{split}[{i}]."), row) for i, row in enumerate(ds)], names


def _inferred_labels(rows: Sequence[tuple[Where, Mapping[str, Any]]]) -> tuple[str, ...]:
    """:func:`infer_labels` over the rows; an unknown label is reported at its file and line."""
    try:
        return infer_labels(r.get(_pick(r, LABEL_KEYS, w)) for w, r in rows)
    except DataError as exc:
        known = {*BINARY_LABELS, *THREE_WAY_LABELS, "0", "1", "2", *map(str, NO_GOLD)}
        for where, row in rows:
            key = _pick(row, LABEL_KEYS, where)
            if str(row[key]).strip().lower() not in known:
                raise where.error(f"label {row[key]!r} is not an NLI label I know", key, exc.hint) from None
        raise


def read_nli(spec: str, split: str = "train", labels: Sequence[str] = ()) -> NLIData:
    """NLI examples from a ``.tsv``/``.jsonl`` file or a hub dataset (``name`` or ``name:config``).

    ``labels`` fixes the label names in class order; empty: a hub dataset's own class names, else
    inferred (binary entailment/not_entailment, or entailment/neutral/contradiction).
    """
    from distilrank.data.readers import _looks_local

    path = Path(spec).expanduser()
    hub_names = None
    if path.is_file():
        rows: list[tuple[Where, Mapping[str, Any]]] = list(_rows_from_file(path))
    elif path.is_dir() or not _looks_local(spec):
        rows, hub_names = _rows_from_hub(spec, split)
    else:
        raise DataError("no such file or folder", path=path, hint="check the path (a .tsv or .jsonl NLI file)")
    names = tuple(labels) or hub_names or _inferred_labels(rows)
    examples, skipped = [], 0
    for where, row in rows:
        example = _example(row, names, where)
        if example is None:
            skipped += 1
        else:
            examples.append(example)
    if not examples:
        raise DataError("holds no labeled examples", path=spec, hint=NLI_HINT)
    if skipped:
        logger.warning("%s: skipped %d rows without a gold label", spec, skipped)
    return NLIData(examples, names, skipped)
