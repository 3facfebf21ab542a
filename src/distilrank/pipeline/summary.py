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


def speed_results(plan: Plan, state: dict[str, Any]) -> list[dict[str, Any]]:
    """The results of the finished ``speed`` stages (models timed back to back), with their stage names."""
    out = []
    for stage in plan.stages:
        record = state["stages"].get(stage.name, {})
        if stage.command == "speed" and record.get("status") == "done" and record.get("result"):
            out.append({"stage": stage.name, **record["result"]})
    return out


def speed_text(speeds: list[dict[str, Any]]) -> str:
    """Each speed stage's table, under a line that says how it was measured."""
    from distilrank.evaluation.speed import format_speed

    blocks = []
    for r in speeds:
        blocks.append(f"Scoring speed, back to back (stage '{r['stage']}'): the same {r['pairs']:,} first-stage "
                      f"pairs, median of {r['repeats']} passes in alternating order, {r.get('torch_threads')} "
                      f"threads on {r.get('device', 'cpu')}; speedup over {r['reference']}\n\n"
                      + format_speed(r["models"]))
    return "\n\n".join(blocks)


SPEED_NOTE = ("pairs/s: each eval stage's own scoring rate, measured while that stage ran; stages run at different "
              "times (and under different load), so compare speeds {where}.")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if value < 1 else f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A Markdown table (readable as plain text too)."""
    from distilrank.reports import markdown_table

    return markdown_table(COLUMNS, [[_cell(r[c]) for c in COLUMNS] for r in rows])


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
    speeds = speed_results(plan, state)
    summary["speed"] = speeds
    table = format_rows(rows) if rows else "(no eval stage)"
    if rows:
        table += "\n\n" + SPEED_NOTE.format(where="in the back-to-back table below" if speeds else
                                           "with a `speed` stage, which times the models back to back")
    if speeds:
        table += "\n\n" + speed_text(speeds)
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
    if summary.get("speed"):
        print("\n" + speed_text(summary["speed"]))
    files = summary["files"]
    print(f"\n{len(summary['stages'])} stages, {summary['seconds_this_run']:.0f}s this run "
          f"({summary['seconds_all_stages']:.0f}s in all stages); summary: {files['markdown']}, {files['json']}"
          + (f", {files['plot']}" if files["plot"] else ""))
