"""A pipeline's summary: every eval stage in one table (``summary.md``, ``summary.json``) and one plot."""

from __future__ import annotations

from typing import Any

from distilrank.io import atomic_write_json, atomic_write_text
from distilrank.pipeline.plan import Plan

COLUMNS = ("system", "nDCG@10", "MRR@10", "params (M)", "layers", "pairs/s", "seconds")


def _figures(result: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """(first stage, reranked) metrics of an eval result; a suite (several datasets) gives its mean."""
    if "datasets" in result and "mean" in result:
        return result["mean"].get("first_stage", {}), result["mean"].get("reranker", {})
    return result.get("first_stage", {}), result.get("reranker", {})


def _row(system: str, stage: str, metrics: dict[str, float], result: dict[str, Any],
         seconds: float | None) -> dict[str, Any]:
    params = result.get("model_parameters")
    return {"system": system, "stage": stage, "nDCG@10": metrics.get("nDCG@10"), "MRR@10": metrics.get("MRR@10"),
            "params (M)": None if params is None else round(params / 1e6, 2), "layers": result.get("model_layers"),
            "pairs/s": result.get("pairs_per_second"), "seconds": seconds}


def eval_rows(plan: Plan, state: dict[str, Any]) -> list[dict[str, Any]]:
    """The first eval stage's first stage (e.g. BM25), then one row per finished eval stage."""
    rows: list[dict[str, Any]] = []
    for stage in plan.stages:
        record = state["stages"].get(stage.name, {})
        if stage.command != "eval" or record.get("status") != "done":
            continue
        result = record.get("result") or {}
        first, reranked = _figures(result)
        if not rows and reranked and first:
            rows.append(_row(result.get("first_stage_name") or "first stage", stage.name, first, {}, None))
        rows.append(_row(stage.name, stage.name, reranked or first, result if reranked else {},
                         record.get("seconds")))
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if value < 1 else f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A Markdown table (readable as plain text too)."""
    cells = [[_cell(r[c]) for c in COLUMNS] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(COLUMNS)]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) if i == 0 else v.rjust(w)
                                 for i, (v, w) in enumerate(zip(values, widths))) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(list(COLUMNS)), rule, *(line(r) for r in cells)])


def write_summary(plan: Plan, state: dict[str, Any], seconds: float) -> dict[str, Any]:
    """``summary.json``, ``summary.md`` and ``summary.png`` (nDCG@10 per eval row) in the run folder."""
    from distilrank.reports import plot_comparison

    out = plan.output_dir
    rows = eval_rows(plan, state)
    stages = [{"name": s.name, "command": s.command, "status": state["stages"].get(s.name, {}).get("status"),
               "seconds": state["stages"].get(s.name, {}).get("seconds"), "folder": str(s.folder)}
              for s in plan.stages]
    summary = {"pipeline": str(plan.path), "description": plan.description, "output_dir": str(out),
               "variables": plan.variables, "stages": stages, "evals": rows,
               "seconds_this_run": round(seconds, 1),
               "seconds_all_stages": round(sum(s["seconds"] or 0 for s in stages), 1)}
    table = format_rows(rows) if rows else "(no eval stage)"
    plot = [r for r in rows if r["nDCG@10"] is not None]
    if plot:
        plot_comparison({r["system"]: {"nDCG@10": r["nDCG@10"]} for r in plot}, out / "summary.png",
                        title=plan.description or plan.path.stem)
    summary["files"] = {"json": str(out / "summary.json"), "markdown": str(out / "summary.md"),
                        "plot": str(out / "summary.png") if plot else None}
    atomic_write_json(out / "summary.json", summary)
    md = [f"# {plan.path.stem}", "", plan.description, "", table, "",
          "| stage | command | status | seconds |", "|---|---|---|---:|"]
    md += [f"| {s['name']} | {s['command']} | {s['status']} | {_cell(s['seconds'])} |" for s in stages]
    atomic_write_text(out / "summary.md", "\n".join(md) + "\n")
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    print()
    print(format_rows(summary["evals"]) if summary["evals"] else "(no eval stage)")
    files = summary["files"]
    print(f"\n{len(summary['stages'])} stages, {summary['seconds_this_run']:.0f}s this run "
          f"({summary['seconds_all_stages']:.0f}s in all stages); summary: {files['markdown']}, {files['json']}"
          + (f", {files['plot']}" if files["plot"] else ""))
