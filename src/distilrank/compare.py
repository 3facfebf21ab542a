"""Training curves of one run and ``distilrank compare RUN_DIR...``: a table (and bar chart) of runs.

A run directory is what ``distilrank train`` writes: ``config.yaml``, ``metrics.json`` and
``metrics.jsonl``. Reranker runs report ranking metrics (``reranker``), nli/qa runs their
last evaluation (``eval``); each row shows the model, the method (full fine-tuning, head only,
soft prompt with or without the backbone), trainable parameters, metrics and training time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distilrank.errors import DataError
from distilrank.io import atomic_open
from distilrank.reports import _pyplot, read_log

# metrics shown when present, in this order (percent-scale QA metrics are divided by 100 in the chart)
METRICS = ("accuracy", "f1", "macro_f1", "exact_match", "nDCG@10", "MRR@10", "MAP")


@dataclass(frozen=True)
class RunSummary:
    name: str
    task: str
    model: str
    method: str
    trainable_params: int | None
    total_params: int | None
    seconds: float | None
    metrics: dict[str, float] = field(default_factory=dict)


def plot_curves(log_path: str | Path, png: str | Path, metric: str, title: str = "") -> bool:
    """Two panels: training and validation loss per step; train and validation ``metric`` per step."""
    rows = read_log(log_path)
    train = [r for r in rows if "loss" in r]
    evals = [(r["step"], r["eval"]) for r in rows if "eval" in r]
    if not train:
        return False
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot([r["step"] for r in train], [r["loss"] for r in train], label="training loss (batches)")
    for key, label, style in (("train_loss", "training sample (eval mode)", "s--"), ("loss", "validation", "o-")):
        points = [(s, e[key]) for s, e in evals if key in e]
        if points:
            left.plot(*zip(*points), style, label=label)
    left.set_xlabel("step")
    left.set_ylabel("loss")
    left.legend(fontsize="small")
    for key, label, style in ((f"train_{metric}", f"training sample {metric}", "s--"), (metric, f"validation {metric}", "o-")):
        points = [(s, e[key]) for s, e in evals if key in e]
        if points:
            right.plot(*zip(*points), style, label=label)
    right.set_xlabel("step")
    right.set_ylabel(metric)
    if right.get_lines():
        right.legend(fontsize="small")
    else:
        right.text(0.5, 0.5, "no evaluation (set eval_data)", ha="center", va="center", transform=right.transAxes)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_open(png, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return True


def _scalars(values: Any) -> dict[str, float]:
    if not isinstance(values, dict):
        return {}
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("train_")}


def read_run(run_dir: str | Path) -> RunSummary:
    """What a run directory says about itself (``metrics.json`` and ``config.yaml``)."""
    folder = Path(run_dir)
    metrics_file = folder / "metrics.json"
    if not metrics_file.is_file():
        raise DataError("no metrics.json: not a finished training run", path=folder,
                        hint="pass folders written by `distilrank train` (their output_dir)")
    try:
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        config_file = folder / "config.yaml"
        config = yaml.safe_load(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DataError(f"unreadable run files: {exc}", path=folder) from None
    if not isinstance(metrics, dict) or not isinstance(config or {}, dict):
        raise DataError("metrics.json and config.yaml must each hold a mapping", path=folder)
    config = config or {}
    scores = _scalars(metrics.get("eval") or metrics.get("reranker") or metrics.get("first_stage"))
    method = metrics.get("method") or ("full" if not config.get("num_layers") else f"first {config['num_layers']} layers")
    train = metrics.get("train", {})
    return RunSummary(folder.name, metrics.get("task") or config.get("task", "rerank"),
                      str(metrics.get("model") or config.get("model", "?")), str(method),
                      metrics.get("trainable_params"), metrics.get("total_params"), train.get("seconds"), scores)


def _fmt_params(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1000:
        return str(n)
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def format_runs(runs: Sequence[RunSummary]) -> str:
    """A markdown table: run, task, model, method, trained / total parameters, metrics, seconds."""
    metrics = [m for m in METRICS if any(m in r.metrics for r in runs)]
    head = ["run", "task", "model", "method", "trained params", *metrics, "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        model = r.model if len(r.model) <= 40 else "..." + r.model[-37:]
        params = f"{_fmt_params(r.trainable_params)} / {_fmt_params(r.total_params)}"
        values = [f"{r.metrics[m]:.4f}" if m in r.metrics else "-" for m in metrics]
        seconds = f"{r.seconds:.0f}" if r.seconds is not None else "-"
        lines.append("| " + " | ".join([r.name, r.task, model, r.method, params, *values, seconds]) + " |")
    return "\n".join(lines)


def plot_runs(runs: Sequence[RunSummary], png: str | Path) -> None:
    """Grouped bars: one group per metric, one bar per run (QA percentages shown as fractions)."""
    metrics = [m for m in METRICS if any(m in r.metrics for r in runs)]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(2 + 1.8 * max(1, len(metrics)), 3.8))
    width = 0.8 / max(1, len(runs))
    for i, r in enumerate(runs):
        values = [r.metrics.get(m, math.nan) / (100.0 if m in ("exact_match", "f1") and r.task == "qa" else 1.0)
                  for m in metrics]
        bars = ax.bar([j + i * width for j in range(len(metrics))], values, width, label=f"{r.name} ({r.method})")
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks([j + width * (len(runs) - 1) / 2 for j in range(len(metrics))], metrics)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    ax.set_title("runs compared")
    fig.tight_layout()
    with atomic_open(png, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def compare_runs(run_dirs: Sequence[str], output: str = "") -> str:
    """Read the runs, return the markdown table; with ``output`` also write a PNG chart there."""
    if not run_dirs:
        raise DataError("no run directories given", hint="distilrank compare runs/a runs/b [output=compare.png]")
    runs = [read_run(d) for d in run_dirs]
    if output:
        plot_runs(runs, output)
    return format_runs(runs)
