"""Issue 19's speed figure: a finished pipeline run's teacher and student scoring the same pairs, back to back.

The pipeline's eval stages each report pairs/s, but they run minutes apart (and, on a shared machine, under
different load), so their ratio is not a speed comparison. This script loads the models that the run's eval
stages scored (by default the teacher's and the student's; ``--stages`` names others), exactly as those stages
loaded them (``Reranker.load`` with their batch size, max length and encoder), takes the first ``--pairs``
(query, passage) pairs of the dev set's first-stage candidates (the pairs those stages reranked, in query order),
and times ``Reranker.score`` on them ``--repeats`` times per model, interleaved (the order alternates each
repeat) after one warm-up batch each. Reported: each model's median pairs/s, and each model's speed over the
first one's (``student / teacher``).

    python benchmarks/bench_pipeline_speed.py --runs runs/ms13 --out benchmarks/results/pipeline_msmarco_speed.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pipeline_baselines import Run  # noqa: E402
from bench_vs_sentence_transformers import quiet_transformers, results_header, save_results  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", required=True, help="finished pipeline run folder(s), comma-separated")
    p.add_argument("--stages", default="teacher_eval,student_eval",
                   help="eval stages whose models are timed; the first is the reference")
    p.add_argument("--pairs", type=int, default=4000, help="pairs timed per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.pairs < 1 or args.repeats < 1:
        p.error("--pairs and --repeats must be >= 1")
    return args


def time_models(run: Run, stages: list[str], n_pairs: int, repeats: int) -> dict[str, Any]:
    """The library's ``distilrank speed`` timing (:func:`distilrank.evaluation.speed.time_scorers`) on the models
    and dev pairs of a finished run's eval stages."""
    from distilrank.config import SpeedConfig
    from distilrank.evaluation.speed import speed_pairs, time_scorers
    from distilrank.inference.reranker import Reranker

    configs = {s: run.config(s) for s in stages}
    first = configs[stages[0]]
    pairs = speed_pairs(SpeedConfig(models=(first.model,), data=first.data, split=first.split,
                                    first_stage=first.first_stage, top_k=first.top_k, pairs=n_pairs))
    models = {s: Reranker.load(cfg.model, batch_size=cfg.batch_size, max_length=cfg.max_length or None,
                               encoder=cfg.encoder, allow_new_head=cfg.allow_new_head) for s, cfg in configs.items()}
    timed = time_scorers({s: m.score for s, m in models.items()}, pairs, repeats)
    ref = stages[0]
    return {"pairs": len(pairs), "seconds": {s: t["seconds"] for s, t in timed.items()},
            "models": {s: {"model": str(configs[s].model), "pairs/s": timed[s]["pairs_per_second"],
                           f"speed over {ref}": timed[s]["speedup"]} for s in stages}}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet_transformers()
    import torch

    stages = [s for s in args.stages.split(",") if s]
    results = results_header(args, argv)
    results["torch_threads"] = torch.get_num_threads()
    began = time.perf_counter()
    per_run = {}
    for path in [Path(r) for r in args.runs.split(",") if r]:
        print(f"== {path}", flush=True)
        per_run[str(path)] = timed = time_models(Run(path), stages, args.pairs, args.repeats)
        for s, row in timed["models"].items():
            print(f"{s:>16}: {row['pairs/s']:8.1f} pairs/s  x{row[f'speed over {stages[0]}']:.3f}  ({row['model']})")
    results["runs"] = per_run
    save_results(results, args.out, began)
    print(f"wrote {args.out} ({results['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
