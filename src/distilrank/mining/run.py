"""``distilrank mine``."""

from __future__ import annotations

from typing import Any

from distilrank.config import MineConfig
from distilrank.errors import ConfigError, DataError
from distilrank.io import check_output_path, output_lock
from distilrank.mining.negatives import groups_dataset, mine_to_file

GIVEN_HINT = "retriever=given re-picks the negatives a groups .jsonl already holds"


def _groups_input(cfg: MineConfig) -> tuple[Any, Any]:
    """A groups file as (dataset, run of its own negatives); anything else a training file holds is refused."""
    from distilrank.data.readers import read_training_file
    from distilrank.data.records import Group

    examples = read_training_file(cfg.data)
    if not all(isinstance(e, Group) for e in examples):
        raise DataError("holds labelled pairs or soft labels, not groups", path=cfg.data,
                        hint=f"{GIVEN_HINT}: rows {{query, positive, negatives: [...]}}")
    return groups_dataset(examples, name=cfg.data)  # type: ignore[arg-type]


def run_mine(cfg: MineConfig) -> dict[str, Any]:
    from distilrank.data.readers import is_training_file
    from distilrank.evaluation.run import resolve_dataset

    is_file = is_training_file(cfg.data)
    if is_file != (cfg.retriever == "given"):
        raise ConfigError(f"data={cfg.data} is a {'training file' if is_file else 'dataset'} and retriever="
                          f"{cfg.retriever}: {GIVEN_HINT}; bm25, dense and static search a dataset's corpus")
    with output_lock(check_output_path(cfg.output, folder=False)):  # a second job on this output stops here
        if is_file:
            dataset, run = _groups_input(cfg)
            summary = mine_to_file(dataset, cfg, run, ids=False).as_dict()
        else:
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
