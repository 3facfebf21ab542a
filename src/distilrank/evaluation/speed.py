"""``distilrank speed``: several models score the same pairs in one process, back to back, so their speeds compare.

Each ``distilrank eval`` reports its own pairs/s, but two evals run at different times, and on a shared machine
under different load, so the ratio of their figures is not a speed comparison. Here every model is loaded as
``distilrank eval`` loads it, warmed up on one batch, then timed on the same pairs (the first ``pairs`` candidates
of the first stage, in query order) ``repeats`` times, the order of the models reversed on every other pass so
that a change in the machine's load falls on all of them alike. Each model's figure is the median pass.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from distilrank.config import SpeedConfig
from distilrank.errors import DataError

Pairs = Sequence[tuple[str, str]]


def time_scorers(scorers: Mapping[str, Callable[[Pairs], Any]], pairs: Pairs, repeats: int,
                 warmup: int = 64, clock: Callable[[], float] = time.perf_counter,
                 reference: str = "") -> dict[str, Any]:
    """Time each scorer on ``pairs``: one warm-up call on the first ``warmup`` pairs each, then ``repeats`` passes,
    the scorers' order reversed on every other pass. Returns each one's pass seconds, median pairs/s and speed
    over the ``reference`` scorer (default: the first)."""
    names = list(scorers)
    for name in names:
        scorers[name](pairs[:warmup])
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            began = clock()
            scorers[name](pairs)
            seconds[name].append(clock() - began)
    rates = {name: len(pairs) / max(statistics.median(seconds[name]), 1e-9) for name in names}
    base = rates[reference or names[0]]
    return {name: {"seconds": [round(s, 4) for s in seconds[name]], "pairs_per_second": round(rates[name], 1),
                   "speedup": round(rates[name] / base, 3)} for name in names}


def speed_pairs(cfg: SpeedConfig) -> list[tuple[str, str]]:
    """The first ``cfg.pairs`` (query, passage) pairs of the first stage's candidates, in query order: the pairs
    ``distilrank eval`` with the same data, split, first stage and top_k reranks first."""
    from distilrank.evaluation.run import candidate_pairs, first_stage_run, resolve_dataset

    dataset, given = resolve_dataset(cfg.data, cfg.split)
    run_file = "" if cfg.first_stage == "bm25" else cfg.first_stage
    pairs = candidate_pairs(dataset, first_stage_run(dataset, given, cfg.top_k, 0, run_file))
    if not pairs:
        raise DataError(f"the first stage gave no candidates for the judged queries of split '{cfg.split}'",
                        path=cfg.data, hint="check data, split and first_stage: these are the pairs that are timed")
    return pairs[:cfg.pairs]


def format_speed(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of :func:`run_speed`'s rows (readable as plain text too)."""
    from distilrank.reports import markdown_table

    head = ("model", "pairs/s", "speedup", "params (M)", "layers")
    cells = [[str(r["name"]), f"{r['pairs_per_second']:,.1f}", f"{r['speedup']:.2f}x",
              "-" if r.get("model_parameters") is None else f"{r['model_parameters'] / 1e6:.1f}",
              "-" if r.get("model_layers") is None else str(r["model_layers"])] for r in rows]
    return markdown_table(head, cells)


def run_speed(cfg: SpeedConfig) -> dict[str, Any]:
    import torch

    from distilrank.evaluation.run import model_size
    from distilrank.inference.reranker import Reranker
    from distilrank.io import check_output_path
    from distilrank.reports import start_run, write_metrics

    if cfg.output_dir:  # before any work: an unwritable output_dir fails now
        check_output_path(cfg.output_dir, folder=True, setting="output_dir")
    pairs = speed_pairs(cfg)
    names = cfg.labels
    models = {name: Reranker.load(path, batch_size=cfg.batch_size, max_length=cfg.max_length or None,
                                  encoder=cfg.encoder, allow_new_head=cfg.allow_new_head)
              for name, path in zip(names, cfg.models)}
    print(f"[speed] {len(models)} models, {len(pairs)} pairs each, {cfg.repeats} passes "
          f"(order alternating), {torch.get_num_threads()} torch threads", flush=True)
    reference = cfg.reference or names[0]
    timed = time_scorers({n: m.score for n, m in models.items()}, pairs, cfg.repeats, reference=reference)
    rows = [{"name": n, "model": str(path), **timed[n], **model_size(models[n].model)}
            for n, path in zip(names, cfg.models)]
    result = {"pairs": len(pairs), "repeats": cfg.repeats, "torch_threads": torch.get_num_threads(),
              "device": str(getattr(models[names[0]].model, "device", "cpu")), "batch_size": models[names[0]].batch_size,
              "reference": reference, "models": rows}
    print(format_speed(rows))
    if cfg.output_dir:
        write_metrics(start_run(cfg.output_dir, cfg), result)
    return result
