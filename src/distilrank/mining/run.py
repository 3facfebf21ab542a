"""``distilrank mine``."""

from __future__ import annotations

from typing import Any

from distilrank.config import MineConfig
from distilrank.io import check_output_path, output_lock
from distilrank.mining.negatives import mine_to_file


def run_mine(cfg: MineConfig) -> dict[str, Any]:
    from distilrank.evaluation.run import resolve_dataset

    with output_lock(check_output_path(cfg.output, folder=False)):  # a second job on this output stops here
        dataset, _ = resolve_dataset(cfg.data, cfg.split)
        summary = mine_to_file(dataset, cfg).as_dict()
    what = cfg.retriever + (f" ({cfg.model})" if cfg.model else "") + (f", rescored by {cfg.rescore_model}"
                                                                        if cfg.rescore_model else "")
    print(f"wrote {summary['groups']} groups for {summary['queries']} queries to {cfg.output} "
          f"[{what}; {summary['queries_per_second']} queries/s]")
    for reason, n in summary["groups_with_fewer_negatives"].items():
        print(f"  {n} groups with fewer than {cfg.num_negatives} negatives: {reason}")
    for reason, n in summary["skipped"].items():
        if n:
            print(f"  {n} skipped: {reason}")
    return summary
