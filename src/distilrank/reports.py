"""Run directories: resolved config, metrics.json, metrics.jsonl and PNG plots."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from distilrank.config import save_config
from distilrank.io import atomic_open, atomic_write_json

logger = logging.getLogger(__name__)


def start_run(output_dir: str | Path, cfg: Any) -> Path:
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    return out


def write_metrics(output_dir: str | Path, metrics: Mapping[str, Any]) -> None:
    atomic_write_json(Path(output_dir) / "metrics.json", dict(metrics))


def read_log(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def plot_loss(log_path: str | Path, png: str | Path, eval_key: str = "nDCG@10") -> bool:
    """Training loss, its logged parts (``loss_*``) and the evaluation metric ``eval_key`` per step."""
    rows = read_log(log_path)
    train = [r for r in rows if "loss" in r]
    if not train:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [r["step"] for r in train]
    ax.plot(steps, [r["loss"] for r in train], label="training loss", color="tab:blue")
    for name in sorted({k for r in train for k in r if k.startswith("loss_")}):
        ax.plot(steps, [r.get(name, float("nan")) for r in train], "--", linewidth=1, label=name[5:])
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    evals = [r for r in rows if "eval" in r and eval_key in r["eval"]]
    if evals:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in evals], [r["eval"][eval_key] for r in evals], "o-", color="tab:orange",
                 label=f"eval {eval_key}")
        ax2.set_ylabel(eval_key)
    if evals or len(ax.get_lines()) > 1:
        fig.legend(loc="upper right", fontsize="small")
    ax.set_title("training")
    fig.tight_layout()
    with atomic_open(png, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return True


def plot_comparison(systems: Mapping[str, Mapping[str, float]], png: str | Path, title: str = "") -> None:
    """Grouped bars: one group per metric, one bar per system (e.g. bm25 vs reranker)."""
    plt = _pyplot()
    names = list(systems)
    metrics = [m for m in next(iter(systems.values())) if all(m in systems[s] for s in names)]
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(metrics), 3.5))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(metrics))]
        bars = ax.bar(xs, [systems[name][m] for m in metrics], width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(metrics))], metrics)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    with atomic_open(png, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (readable as plain text too): the first column left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) if i == 0 else v.rjust(w)
                                 for i, (v, w) in enumerate(zip(values, widths))) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(head), rule, *(line(row) for row in rows)])


def format_table(systems: Mapping[str, Mapping[str, float]], metrics: list[str], label: str = "system") -> str:
    width = max(len(label), *(len(s) for s in systems))
    lines = [f"{label:<{width}}  " + "  ".join(f"{m:>8}" for m in metrics)]
    lines.append("-" * len(lines[0]))
    for name, vals in systems.items():
        lines.append(f"{name:<{width}}  " + "  ".join(f"{vals.get(m, float('nan')):>8.4f}" for m in metrics))
    return "\n".join(lines)
