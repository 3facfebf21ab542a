"""distilrank vs sentence-transformers on one CPU: scoring pairs/s, training pairs/s, nDCG@10.

Both libraries use the same model (the packaged MiniLM with a fresh one-logit head, seeded, saved
once and loaded by both), the same data, batch size and max_length. Repetitions of the two systems
are interleaved (alternating which goes first) and medians are reported, so a busy CPU slows both
alike. Writes every measurement to ``--out`` (JSON) and prints a markdown table.

    python benchmarks/bench_vs_sentence_transformers.py --out benchmarks/results/vs_st.json

Data (not needed by distilrank itself): ``<data>/trec-dl-2019`` (TREC DL 2019, BM25 top-100 with
passage text) and ``<data>/msmarco-triples-toy/triples.train.small.head100.tsv``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on the network

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
TREC = "trec-dl-2019"
TRIPLES = "msmarco-triples-toy/triples.train.small.head100.tsv"
MODEL = "packaged:all-MiniLM-L6-v2"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding trec-dl-2019 and msmarco-triples-toy")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write the results to")
    p.add_argument("--batch-size", type=int, default=32, help="scoring batch size (pairs)")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3, help="interleaved scoring repetitions per system")
    p.add_argument("--max-pairs", type=int, default=0, help="score only the first N pairs (0: all 4,300)")
    p.add_argument("--train-batch-size", type=int, default=16)
    p.add_argument("--train-repeats", type=int, default=3, help="interleaved training repetitions per system")
    p.add_argument("--learning-rate", type=float, default=1e-4,
                   help="a fresh head on 200 pairs: 2e-5 barely moves it in 13 steps")
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--skip-training", action="store_true", help="scoring only (no training, no nDCG after training)")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- setup


def check_data(data: Path) -> None:
    missing = [str(data / rel) for rel in (TREC, TRIPLES) if not (data / rel).exists()]
    if missing:
        sys.exit(f"benchmark data not found: {', '.join(missing)}\n"
                 f"pass --data FOLDER holding {TREC}/ and {TRIPLES} (default: {DEFAULT_DATA})")


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.processor())


def results_header(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    """What every results file starts with: the command, the machine, the settings, the load."""
    return {"command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
            "machine": machine_info(), "load_avg_start": os.getloadavg(),
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}


def quiet_transformers() -> None:
    """Silence transformers' per-load chatter (a fresh head's "newly initialized" report, weight-loading bars)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def save_results(results: dict[str, Any], out: Path, started: float) -> None:
    """Add the wall time and the final load, then write ``results`` as JSON to ``out``."""
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["load_avg_end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")


def machine_info() -> dict[str, Any]:
    import sentence_transformers
    import tokenizers
    import torch
    import transformers

    import distilrank

    return {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "sentence_transformers": sentence_transformers.__version__,
            "tokenizers": tokenizers.__version__, "distilrank": distilrank.__version__}


def make_start_model(folder: Path, seed: int, max_length: int) -> Path:
    """The packaged MiniLM as a cross-encoder with a fresh (seeded) one-logit head, saved once."""
    import torch

    from distilrank.models.cross_encoder import CrossEncoder

    torch.manual_seed(seed)
    CrossEncoder.from_pretrained(MODEL, max_length=max_length).save_pretrained(folder)
    return folder


def load_eval_pairs(data: Path, max_pairs: int):
    from distilrank.data.readers import read_trec_folder

    dataset, run = read_trec_folder(data / TREC)
    pairs = [(dataset.queries[q].text, dataset.corpus[d].contents) for q, docs in run.items() for d, _ in docs[:100]]
    return dataset, run, pairs[:max_pairs] if max_pairs else pairs


def write_training_pairs(data: Path, path: Path) -> list[dict[str, Any]]:
    """Each MS MARCO triple -> (query, positive, 1) and (query, negative, 0), as labeled-pairs jsonl."""
    from distilrank.data.readers import read_training_file

    rows = []
    for g in read_training_file(data / TRIPLES):
        rows += [{"query": g.query, "passage": g.positive, "label": 1.0},
                 {"query": g.query, "passage": g.negatives[0], "label": 0.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return rows


# ---------------------------------------------------------------------------- scoring


def timed(fn: Callable[[], Any]) -> Callable[[], tuple[float, Any]]:
    """``fn`` -> a call returning (wall seconds, fn's result)."""
    def run() -> tuple[float, Any]:
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, result
    return run


def interleaved(systems: dict[str, Callable[[], tuple[float, Any]]], repeats: int):
    """Run each (seconds, output) system ``repeats`` times, alternating which goes first.

    Returns the seconds of every run and each system's first output.
    """
    seconds: dict[str, list[float]] = {name: [] for name in systems}
    outputs: dict[str, Any] = {}
    names = list(systems)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            took, output = systems[name]()
            seconds[name].append(took)
            outputs.setdefault(name, output)
            print(f"  {name} run {r + 1}: {took:.1f}s", flush=True)
    return seconds, outputs


def bench_scoring(model_dir: Path, pairs: list, args: argparse.Namespace) -> dict[str, Any]:
    from sentence_transformers import CrossEncoder as STCrossEncoder

    from distilrank.inference.reranker import Reranker

    ours = Reranker.load(model_dir, device="cpu", batch_size=args.batch_size, max_length=args.max_length)
    st = STCrossEncoder(str(model_dir), device="cpu", max_length=args.max_length)
    systems = {"distilrank": timed(lambda: ours.score(pairs)),
               "sentence-transformers": timed(lambda: st.predict(pairs, batch_size=args.batch_size).tolist())}
    ours.score(pairs[: args.batch_size])  # warm-up: first-call allocations and lazy imports
    st.predict(pairs[: args.batch_size], batch_size=args.batch_size)
    print(f"scoring {len(pairs)} pairs, batch_size {args.batch_size}, max_length {args.max_length}", flush=True)
    seconds, outputs = interleaved(systems, args.repeats)
    diff = max(abs(a - b) for a, b in zip(outputs["distilrank"], outputs["sentence-transformers"]))
    return {"pairs": len(pairs), "seconds": seconds, "max_abs_score_diff": diff,
            "pairs_per_s": {k: len(pairs) / statistics.median(v) for k, v in seconds.items()},
            "start_scores": outputs["distilrank"]}


# ---------------------------------------------------------------------------- training


def train_distilrank(model_dir: Path, train_file: Path, out: Path, args: argparse.Namespace):
    """Returns (seconds of the train_loop call, trained CrossEncoder)."""
    from distilrank.config import TrainConfig
    from distilrank.data.readers import read_training_file
    from distilrank.models.cross_encoder import CrossEncoder
    from distilrank.training.loop import make_accelerator, train_loop
    from distilrank.training.tasks import RerankTask

    cfg = TrainConfig(train_file=str(train_file), model=str(model_dir), output_dir=str(out), loss="bce",
                      batch_size=args.train_batch_size, max_length=args.max_length, learning_rate=args.learning_rate,
                      warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay, epochs=args.epochs,
                      seed=args.seed, log_steps=10_000)
    out.mkdir(parents=True, exist_ok=True)
    accelerator = make_accelerator(cfg)
    examples = read_training_file(cfg.train_file)
    model = CrossEncoder.from_pretrained(cfg.model, max_length=cfg.max_length)
    task = RerankTask(model, cfg.loss, cfg.group_size, cfg.max_length, cfg.margin)
    start = time.perf_counter()
    train_loop(cfg, model, task, examples, accelerator)
    return time.perf_counter() - start, accelerator.unwrap_model(model)


def train_st(model_dir: Path, rows: list[dict[str, Any]], out: Path, args: argparse.Namespace):
    """Returns (seconds of the trainer.train() call, trained sentence_transformers.CrossEncoder)."""
    import math

    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    model = CrossEncoder(str(model_dir), device="cpu", max_length=args.max_length)
    dataset = Dataset.from_dict({k: [r[k] for r in rows] for k in ("query", "passage", "label")})
    total = math.ceil(len(rows) / args.train_batch_size) * args.epochs
    training_args = CrossEncoderTrainingArguments(
        output_dir=str(out), num_train_epochs=args.epochs, per_device_train_batch_size=args.train_batch_size,
        learning_rate=args.learning_rate, warmup_steps=max(1, int(args.warmup_ratio * total)),
        weight_decay=args.weight_decay, max_grad_norm=1.0, seed=args.seed, use_cpu=True, bf16=False, fp16=False,
        save_strategy="no", eval_strategy="no", logging_steps=10_000, report_to="none", disable_tqdm=True)
    trainer = CrossEncoderTrainer(model=model, args=training_args, train_dataset=dataset,
                                  loss=BinaryCrossEntropyLoss(model))
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start, model


def bench_training(model_dir: Path, data: Path, work: Path, args: argparse.Namespace):
    """Training pairs/s of both libraries, and each one's model from its first run."""
    train_file = work / "pairs.jsonl"
    rows = write_training_pairs(data, train_file)
    run_ids = itertools.count()
    systems = {
        "distilrank": lambda: train_distilrank(model_dir, train_file, work / f"dr-{next(run_ids)}", args),
        "sentence-transformers": lambda: train_st(model_dir, rows, work / f"st-{next(run_ids)}", args),
    }
    print(f"training on {len(rows)} labeled pairs, batch_size {args.train_batch_size}, {args.epochs} epoch(s)",
          flush=True)
    seconds, trained = interleaved(systems, args.train_repeats)
    pairs = len(rows) * args.epochs
    return {"pairs": pairs, "seconds": seconds,
            "pairs_per_s": {k: pairs / statistics.median(v) for k, v in seconds.items()}}, trained


# ---------------------------------------------------------------------------- quality


def ndcg_table(dataset, run, scorers: dict[str, Callable | None]) -> dict[str, dict[str, float]]:
    from distilrank.evaluation.ranking import evaluate_reranking

    out = {}
    for name, scorer in scorers.items():
        report = evaluate_reranking(dataset, run, scorer, 100, relevance_level=2)
        out[name] = report.reranked if scorer is not None else report.first_stage
    return out


def quality(dataset, run, pairs: list, start_scores: list[float], trained: dict[str, Any], args: argparse.Namespace):
    """nDCG@10 of BM25, the untrained start (scores from the scoring benchmark) and both trained models."""
    bs = args.batch_size

    def start(asked: list) -> list[float]:
        assert list(asked) == pairs, "evaluate_reranking asked for other pairs than were benchmarked"
        return start_scores

    scorers: dict[str, Callable | None] = {"BM25": None, "untrained start": start}
    if "distilrank" in trained:
        scorers["distilrank-trained"] = lambda p: trained["distilrank"].score(p, batch_size=bs)
    if "sentence-transformers" in trained:
        scorers["st-trained"] = lambda p: trained["sentence-transformers"].predict(p, batch_size=bs).tolist()
    return ndcg_table(dataset, run, scorers)


# ---------------------------------------------------------------------------- report


def markdown(results: dict[str, Any]) -> str:
    s, lines = results["scoring"], []
    ours, st = s["pairs_per_s"]["distilrank"], s["pairs_per_s"]["sentence-transformers"]
    lines += ["| measure | distilrank | sentence-transformers | ratio |", "|---|---:|---:|---:|",
              f"| scoring pairs/s ({s['pairs']} pairs) | {ours:.1f} | {st:.1f} | {ours / st:.2f}x |"]
    if "training" in results:
        t = results["training"]
        tr_ours, tr_st = t["pairs_per_s"]["distilrank"], t["pairs_per_s"]["sentence-transformers"]
        lines.append(f"| training pairs/s ({t['pairs']} pairs) | {tr_ours:.1f} | {tr_st:.1f} | {tr_ours / tr_st:.2f}x |")
    lines += ["", f"max |score difference| (same weights): {s['max_abs_score_diff']:.2e}", "",
              "| ranking (TREC DL 2019, BM25 top-100) | nDCG@10 |", "|---|---:|"]
    lines += [f"| {name} | {m['nDCG@10']:.4f} |" for name, m in results["quality"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_data(args.data)
    quiet_transformers()
    results = results_header(args, argv)
    dataset, run, pairs = load_eval_pairs(args.data, args.max_pairs)
    with tempfile.TemporaryDirectory(prefix="bench-vs-st-") as tmp:
        work = Path(tmp)
        model_dir = make_start_model(work / "start", args.seed, args.max_length)
        results["scoring"] = bench_scoring(model_dir, pairs, args)
        start_scores = results["scoring"].pop("start_scores")
        trained: dict[str, Any] = {}
        if not args.skip_training:
            results["training"], trained = bench_training(model_dir, args.data, work, args)
        # nDCG needs every pair scored; with --max-pairs only the speed is measured
        results["quality"] = quality(dataset, run, pairs, start_scores, trained, args) if not args.max_pairs else {}
    results["load_avg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(markdown(results))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
