"""LLM-era teachers for ``distilrank label``: causal-LM (pointwise) teachers and teacher ensembles.

* A decoder-only teacher (``AutoModelForCausalLM``) is scored by :class:`~distilrank.models.causal.CausalReranker`
  with ``template`` / ``true_token`` / ``false_token`` and writes ``true_logit`` / ``false_logit`` rows like
  a monoT5 teacher. Its settings are checked from the tokenizer and config before data or weights load.
* ``teacher=a,b,...`` labels with each teacher in turn (each run resumable on its own), then combines
  them: each teacher's scores are z-normalised within each query and averaged (Hofstätter et al., 2020,
  "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge Distillation", ensemble
  teachers). Rows carry the mean as ``score`` and each teacher's own score under ``teacher_scores``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from distilrank.config import LabelConfig, parse_shard
from distilrank.errors import ConfigError, DataError
from distilrank.io import atomic_write_jsonl

CAUSAL_OPTIONS = ("template", "true_token", "false_token")


def causal_overrides(cfg: LabelConfig) -> dict[str, str]:
    return {name: getattr(cfg, name) for name in CAUSAL_OPTIONS}


def check_teacher_options(cfg: LabelConfig, how: str) -> None:
    """Causal settings fit the teacher: checked from its tokenizer and config (no weights, no data)."""
    given = [name for name, value in causal_overrides(cfg).items() if value]
    if how != "causal":
        if given:
            raise ConfigError(f"{', '.join(given)} apply to causal-LM (decoder-only) teachers; {cfg.teacher} is "
                              f"scored as a {how} model")
        return
    from transformers import AutoConfig, AutoTokenizer

    from distilrank.models.causal import CausalSettings, answer_token_id
    from distilrank.models.cross_encoder import max_positions, resolve_model_path

    path = resolve_model_path(cfg.teacher)
    settings = CausalSettings.read(path, **causal_overrides(cfg))
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the tokenizer/config of teacher '{cfg.teacher}': {exc}") from None
    answer_token_id(tokenizer, settings.true_token, "true_token", cfg.teacher)
    answer_token_id(tokenizer, settings.false_token, "false_token", cfg.teacher)
    limit = max_positions(config)
    if limit is not None and cfg.max_length > limit:
        raise ConfigError(f"max_length={cfg.max_length} is larger than the context of teacher '{cfg.teacher}' "
                          f"({limit} tokens); set max_length <= {limit}")


def load_causal_teacher(cfg: LabelConfig, dtype: Any) -> Any:
    """The causal-LM teacher with the label command's prompt settings, on CUDA when available."""
    import torch

    from distilrank.models.causal import CausalReranker

    teacher = CausalReranker.from_pretrained(cfg.teacher, max_length=cfg.max_length or None, dtype=dtype,
                                             **causal_overrides(cfg))
    return teacher.to("cuda") if torch.cuda.is_available() else teacher


# ---------------------------------------------------------------------------- ensembles


def ensemble_teachers(teacher: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``; an empty name or a teacher named twice is an error."""
    names = [t.strip() for t in teacher.split(",")]
    if any(not n for n in names):
        raise ConfigError(f"teacher={teacher!r} has an empty name; list teachers as teacher=a,b")
    if len(set(names)) != len(names):
        raise ConfigError(f"teacher={teacher!r} names a teacher twice")
    return names


def zscore(values: list[float]) -> list[float]:
    """``(v - mean) / std`` (population std); all zeros when the values do not vary (one document, ties).

    Example:
        >>> zscore([1.0, 3.0])
        [-1.0, 1.0]
    """
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return [0.0 if std == 0 else (v - mean) / std for v in values]


def row_score(row: dict[str, Any]) -> float:
    """A labelled row's ranking score: ``score``, or ``true_logit - false_logit``."""
    return row["score"] if "score" in row else row["true_logit"] - row["false_logit"]


def _read_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def combine_teachers(files: list[Path], names: list[str]) -> list[dict[str, Any]]:
    """Rows of the same pairs labelled by several teachers -> one row each with the z-score mean ``score``."""
    tables = [_read_rows(f) for f in files]
    if len({len(t) for t in tables}) != 1:
        raise DataError(f"the teachers labelled different numbers of pairs ({[len(t) for t in tables]})",
                        path=str(files[0]), hint="delete the per-teacher files and label again")
    keys = [r.get("query_id", r["query"]) for r in tables[0]]
    spans, start = [], 0  # consecutive rows of one query
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            spans.append((start, i))
            start = i
    out = [dict(r) for r in tables[0]]
    for row in out:
        for field in ("score", "true_logit", "false_logit"):
            row.pop(field, None)
    for a, b in spans:
        z = [zscore([row_score(t[i]) for i in range(a, b)]) for t in tables]  # (teachers, docs)
        for k, i in enumerate(range(a, b)):
            out[i]["score"] = sum(z_t[k] for z_t in z) / len(z)
            out[i]["teacher_scores"] = {n: row_score(t[i]) for n, t in zip(names, tables)}
    return out


def run_ensemble(cfg: LabelConfig) -> dict[str, Any]:
    """Label with every teacher of ``cfg.teacher`` (``a,b,...``), then write their combined rows."""
    from distilrank.labeling import run_label, shard_path

    names = ensemble_teachers(cfg.teacher)
    index, n = parse_shard(cfg.shard)
    output = shard_path(cfg.output, index, n)
    base = Path(cfg.output)
    files, summaries = [], []
    for k, name in enumerate(names):
        sub = dataclasses.replace(cfg, teacher=name, output=str(base.with_name(f"{base.stem}.teacher{k}{base.suffix}")))
        own = shard_path(sub.output, index, n)
        if not own.exists():  # a finished teacher of a killed ensemble run is not labelled again
            summaries.append(run_label(sub))
        files.append(own)
    rows = combine_teachers(files, names)
    atomic_write_jsonl(output, rows)
    for f in files:
        f.unlink()
    print(f"combined {len(names)} teachers (z-scores per query, averaged) over {len(rows)} pairs -> {output}")
    return {"pairs": len(rows), "output": str(output), "shard": cfg.shard, "teachers": names,
            "per_teacher": summaries}
