"""Does MLM distillation pay? Distilled student vs the same teacher layers copied without distillation.

The teacher is the packaged all-MiniLM-L6-v2 (6 layers). Two 3-layer students keep the same
teacher layers: one is distilled with ``distilrank distill-mlm``, the other is the copy without
any training. Each of them, and the teacher, is then fine-tuned as a reranker with the same
recipe and budget, and ranked:

* demo: distilled on the demo corpus's text; fine-tuned on BM25-mined demo groups (the demo's
  recipe); nDCG@10 on the demo test queries (BM25 top-20);
* TREC DL 2019: distilled on the English Wikipedia sample; fine-tuned on the 100 MS MARCO triples;
  nDCG@10 on BM25 top-100 (graded qrels).

Scoring speed: reranker pairs/s of student and teacher on the TREC DL pairs (interleaved
repetitions, medians). Writes everything to ``--out`` and prints markdown tables.

``--loss`` picks the reranker: ``listwise`` (default) fine-tunes cross-encoders; ``mnrl`` or
``triplet`` fine-tunes bi-encoders (mean pooling, a pair scored by the cosine of its embeddings),
which keep the packaged sentence-embedding model's strength. ``--alphas`` sets the distillation
terms (KL, MLM, cosine).

``--demo-distill-text wiki`` distils one student on the Wikipedia sample and fine-tunes that same
student on both sets (DistilBERT's way: one general-purpose distillation, then task fine-tuning);
the default ``demo`` distils a second student on the demo corpus for the demo set;
``wiki+demo`` takes the Wikipedia-distilled student and distils it further on the demo corpus
(``--demo-distill-steps``): general distillation, then in-domain, as TinyBERT's two stages.

``--zero-shot`` also scores every start before fine-tuning, as a mean-pooled cosine bi-encoder:
how much of the teacher's ranking the distillation alone carries over.

``--seeds 13,14,15`` fine-tunes both students once per seed (the distillation runs once, with the
first seed; the teacher is fine-tuned with the first seed only) and reports each seed's nDCG@10,
their mean and the distilled-minus-copied difference per seed: one seed's margin is within the
run-to-run spread of fine-tuning.

    python benchmarks/bench_distillation.py --out benchmarks/results/distillation.json
    python benchmarks/bench_distillation.py --loss mnrl --learning-rate 1e-4 --out benchmarks/results/distillation_bi.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_vs_sentence_transformers import (  # noqa: E402
    DEFAULT_DATA,
    MODEL,
    TREC,
    TRIPLES,
    load_eval_pairs,
    quiet_transformers,
    results_header,
    save_results,
)

WIKI = "wikipedia-en-sample"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with trec-dl-2019, msmarco-triples-toy, "
                                                                   "wikipedia-en-sample")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--layers", default="0,3,5", help="teacher layers kept by both students")
    p.add_argument("--distill-steps", type=int, default=150)
    p.add_argument("--distill-batch-size", type=int, default=16)
    p.add_argument("--distill-lr", type=float, default=5e-4)
    p.add_argument("--head-fit-steps", type=int, default=60)
    p.add_argument("--wiki-blocks", type=int, default=4000, help="blocks of the Wikipedia sample to tokenize")
    p.add_argument("--demo-steps", type=int, default=200, help="fine-tuning steps on the demo groups")
    p.add_argument("--trec-epochs", type=float, default=4.0, help="fine-tuning epochs over the MS MARCO triples")
    p.add_argument("--learning-rate", type=float, default=3e-4, help="fine-tuning learning rate (all models)")
    p.add_argument("--speed-repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--seeds", default="", help="comma-separated fine-tuning seeds for the students "
                                                "(default: --seed only)")
    p.add_argument("--skip-trec", action="store_true")
    p.add_argument("--skip-demo", action="store_true")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="keep the models here (default: a temporary folder, deleted); a Wikipedia-distilled "
                        "student left there by a run with the same distillation settings is reused")
    p.add_argument("--demo-distill-text", default="demo", choices=("demo", "wiki", "wiki+demo"),
                   help="text the demo set's student is distilled on: the demo corpus, the Wikipedia sample "
                        "(then one student serves both sets), or both in turn (the Wikipedia-distilled student "
                        "distilled further on the demo corpus for --demo-distill-steps)")
    p.add_argument("--demo-distill-steps", type=int, default=600,
                   help="steps of the second, demo-corpus stage of --demo-distill-text wiki+demo")
    p.add_argument("--zero-shot", action="store_true",
                   help="also score each start before fine-tuning, as a mean-pooled cosine bi-encoder")
    p.add_argument("--loss", default="listwise", choices=("listwise", "mnrl", "triplet"),
                   help="fine-tuning loss: listwise trains cross-encoders, mnrl/triplet bi-encoders")
    p.add_argument("--alphas", default="5,2,1", help="distillation weights alpha_ce,alpha_mlm,alpha_cos")
    args = p.parse_args(argv)
    try:
        args.alpha_ce, args.alpha_mlm, args.alpha_cos = (float(x) for x in args.alphas.split(","))
    except ValueError:
        p.error(f"--alphas {args.alphas}: give three numbers, e.g. 5,2,1")
    try:
        args.seed_list = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    except ValueError:
        p.error(f"--seeds {args.seeds}: give integers, e.g. 13,14,15")
    args.seed = args.seed_list[0]
    if args.skip_demo and args.skip_trec:
        p.error("--skip-demo with --skip-trec leaves nothing to run")
    return args


def distill(corpus: str, out: Path, args: argparse.Namespace, **kw: Any) -> dict[str, Any]:
    from distilrank.config import DistillConfig
    from distilrank.training.distill import run_distill

    settings: dict[str, Any] = dict(
        data=corpus, teacher=MODEL, output_dir=str(out), layers=tuple(int(x) for x in args.layers.split(",")),
        max_steps=args.distill_steps, batch_size=args.distill_batch_size, learning_rate=args.distill_lr,
        head_fit_steps=args.head_fit_steps, alpha_ce=args.alpha_ce, alpha_mlm=args.alpha_mlm,
        alpha_cos=args.alpha_cos, eval_blocks=128, seed=args.seed)
    return run_distill(DistillConfig(**{**settings, **kw}))


def copied_student(out: Path, args: argparse.Namespace) -> Path:
    """The same teacher layers, copied and saved without any training."""
    from distilrank.models.student import build_student, load_teacher, save_student

    teacher, tokenizer, _ = load_teacher(MODEL)
    save_student(build_student(teacher, [int(x) for x in args.layers.split(",")]), tokenizer, out)
    return out


def finetune(model: str, train_file: Path, out: Path, args: argparse.Namespace, seed: int,
             **kw: Any) -> dict[str, Any]:
    from distilrank.config import TrainConfig
    from distilrank.training.run import run_training

    cfg = TrainConfig(train_file=str(train_file), model=model, output_dir=str(out), learning_rate=args.learning_rate,
                      seed=seed, log_steps=10, **kw)
    return run_training(cfg)["train"]


def zero_shot_bi_encoder(start: str, out: Path, max_length: int) -> Path:
    """The start as it is, before any fine-tuning, saved as a mean-pooled cosine bi-encoder."""
    from distilrank.models.bi_encoder import BiEncoder

    BiEncoder.from_pretrained(start, pooling="mean", normalize=True, max_length=max_length).save_pretrained(out)
    return out


def finetune_starts(starts: dict[str, str], train_file: Path, work: Path, prefix: str, args: argparse.Namespace,
                    score: Any, **kw: Any) -> dict[str, Any]:
    """Fine-tune each start (the teacher with the first seed only, the students with every seed) and score it.

    A row holds the first seed's metrics at top level (the single-seed layout of earlier results),
    and with several seeds also ``seeds`` (each seed's nDCG@10) and ``mean_nDCG@10``.
    """
    rows: dict[str, Any] = {}
    for k, (name, start) in enumerate(starts.items()):
        seeds = args.seed_list[:1] if name.startswith("teacher") else args.seed_list
        per_seed: dict[str, Any] = {}
        for seed in seeds:
            out = work / f"{prefix}-{k + 1}-seed{seed}"
            info = finetune(start, train_file, out, args, seed, **kw)
            per_seed[str(seed)] = {**score(out / "model"), "train_seconds": info["seconds"], "model": str(out / "model")}
        row = dict(per_seed[str(seeds[0])])
        if args.zero_shot:
            row["zero_shot"] = score(zero_shot_bi_encoder(start, work / f"{prefix}-{k + 1}-zero-shot", kw["max_length"]))
        if len(args.seed_list) > 1:
            row["seeds"] = {s: m["nDCG@10"] for s, m in per_seed.items()}
            row["mean_nDCG@10"] = statistics.mean(row["seeds"].values())
        rows[name] = row
    return rows


def ndcg(dataset: Any, run: Any, model_dir: Path | None, top_k: int, max_length: int, level: int) -> dict[str, float]:
    """BM25's metrics (``model_dir`` None), or those of the saved reranker there (cross- or bi-encoder)."""
    from distilrank.evaluation.ranking import evaluate_reranking
    from distilrank.inference.reranker import Reranker

    if model_dir is None:
        return evaluate_reranking(dataset, run, None, top_k, relevance_level=level).first_stage
    model = Reranker.load(model_dir, max_length=max_length, batch_size=32)
    return evaluate_reranking(dataset, run, model.score, top_k, relevance_level=level).reranked


def distill_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What makes two Wikipedia-distilled students the same."""
    return {k: getattr(args, k) for k in ("layers", "distill_steps", "distill_batch_size", "distill_lr", "head_fit_steps",
                                          "wiki_blocks", "alpha_ce", "alpha_mlm", "alpha_cos", "seed")}


def wiki_distilled(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The student distilled on the Wikipedia sample: once per run, and reused from ``--work-dir`` when an earlier
    run there distilled it with the same settings."""
    out = work / "wiki-distill"
    report_file = out / "bench-report.json"
    if report_file.exists():
        saved = json.loads(report_file.read_text())
        if saved["settings"] != distill_settings(args):
            sys.exit(f"{out} holds a student distilled with other settings ({saved['settings']}); "
                     "use another --work-dir")
        print(f"reusing the distilled student in {out}")
        return saved["report"]
    report = distill(str(args.data / WIKI), out, args, max_blocks=args.wiki_blocks)
    report_file.write_text(json.dumps({"settings": distill_settings(args), "report": report}))
    return report


def demo_setting(work: Path, args: argparse.Namespace, copied: Path) -> dict[str, Any]:
    from distilrank.config import MineConfig
    from distilrank.data.demo import build_demo_dataset, write_beir
    from distilrank.data.readers import read_beir
    from distilrank.evaluation.run import first_stage_run
    from distilrank.mining.negatives import mine_to_file

    data_dir = write_beir(build_demo_dataset(args.seed), work / "demo-data")
    train, test = read_beir(data_dir, "train"), read_beir(data_dir, "test")
    groups = work / "demo-groups.jsonl"
    mine_to_file(train, MineConfig(data=str(data_dir), output=str(groups), num_negatives=7, rank_max=30,
                                   seed=args.seed))
    if args.demo_distill_text == "wiki":
        report, distilled = wiki_distilled(work, args), work / "wiki-distill" / "model"
    elif args.demo_distill_text == "wiki+demo":  # general distillation, then in-domain (as TinyBERT's two stages)
        general = wiki_distilled(work, args)
        report = distill(str(data_dir / "corpus.jsonl"), work / "wiki-demo-distill", args, min_words=0, layers=(),
                         student=str(work / "wiki-distill" / "model"), max_steps=args.demo_distill_steps)
        report["general_stage"] = general
        distilled = work / "wiki-demo-distill" / "model"
    else:
        report = distill(str(data_dir / "corpus.jsonl"), work / "demo-distill", args, min_words=0)
        distilled = work / "demo-distill" / "model"
    starts = {"teacher (6 layers)": MODEL, "distilled student": str(distilled),
              "copied layers, no distillation": str(copied)}
    run = first_stage_run(test, None, 20)
    rows: dict[str, Any] = {"BM25": ndcg(test, run, None, 20, 96, 1)}
    rows.update(finetune_starts(starts, groups, work, "demo-ft", args, lambda m: ndcg(test, run, m, 20, 96, 1),
                                loss=args.loss, max_steps=args.demo_steps, batch_size=4, group_size=8,
                                max_length=96))
    return {"distillation": report, "distillation_text": args.demo_distill_text, "rankings": rows,
            "queries": len(run)}


def trec_setting(work: Path, args: argparse.Namespace, copied: Path) -> dict[str, Any]:
    from distilrank.data.readers import read_trec_folder

    report = wiki_distilled(work, args)
    dataset, run = read_trec_folder(args.data / TREC)
    starts = {"teacher (6 layers)": MODEL, "distilled student": str(work / "wiki-distill" / "model"),
              "copied layers, no distillation": str(copied)}
    rows: dict[str, Any] = {"BM25": ndcg(dataset, run, None, 100, 256, 2)}
    rows.update(finetune_starts(starts, args.data / TRIPLES, work, "trec-ft", args,
                                lambda m: ndcg(dataset, run, m, 100, 256, 2), loss=args.loss, epochs=args.trec_epochs, batch_size=8,
                                group_size=2, max_length=256))
    return {"distillation": report, "rankings": rows, "models": {k: str(v) for k, v in starts.items()}}


def scoring_speed(teacher: Path, student: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Reranker pairs/s on the TREC DL pairs, teacher and student interleaved; medians."""
    from distilrank.inference.reranker import Reranker

    _, _, pairs = load_eval_pairs(args.data, 0)
    models = {"teacher": Reranker.load(teacher, max_length=256, batch_size=32),
              "student": Reranker.load(student, max_length=256, batch_size=32)}
    times: dict[str, list[float]] = {k: [] for k in models}
    for r in range(args.speed_repeats):
        for name in (list(models) if r % 2 == 0 else list(models)[::-1]):
            start = time.perf_counter()
            models[name].score(pairs)
            times[name].append(time.perf_counter() - start)
    pps = {k: len(pairs) / statistics.median(v) for k, v in times.items()}
    return {"pairs": len(pairs), "pairs_per_s": pps, "ratio": pps["student"] / pps["teacher"]}


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for setting in ("demo", "trec_dl_2019"):
        if setting not in results:
            continue
        rows = results[setting]["rankings"]
        teacher = rows["teacher (6 layers)"]["nDCG@10"]
        lines += [f"\n{setting}: nDCG@10 after the same fine-tuning", "", "| start | nDCG@10 | of teacher |",
                  "|---|---:|---:|"]
        lines += [f"| {name} | {m['nDCG@10']:.4f} | {m['nDCG@10'] / teacher:.0%} |" for name, m in rows.items()]
        if any("zero_shot" in m for m in rows.values()):
            lines += ["", "| start, before fine-tuning (mean-pooled cosine) | nDCG@10 |", "|---|---:|"]
            lines += [f"| {name} | {m['zero_shot']['nDCG@10']:.4f} |" for name, m in rows.items() if "zero_shot" in m]
        dist, copy = rows["distilled student"], rows["copied layers, no distillation"]
        if "seeds" in dist:
            diffs = {s: dist["seeds"][s] - copy["seeds"][s] for s in dist["seeds"]}
            lines += ["", "| seed | distilled | copied | difference |", "|---|---:|---:|---:|"]
            lines += [f"| {s} | {dist['seeds'][s]:.4f} | {copy['seeds'][s]:.4f} | {d:+.4f} |" for s, d in diffs.items()]
            lines += [f"| mean | {dist['mean_nDCG@10']:.4f} | {copy['mean_nDCG@10']:.4f} | "
                      f"{dist['mean_nDCG@10'] - copy['mean_nDCG@10']:+.4f} |",
                      "", f"distilled mean keeps {dist['mean_nDCG@10'] / teacher:.0%} of the teacher "
                          f"(fine-tuned with the first seed); distilled ahead on {sum(d > 0 for d in diffs.values())} of "
                          f"{len(diffs)} seeds"]
        d = results[setting]["distillation"]
        text = results[setting].get("distillation_text", "wiki" if setting == "trec_dl_2019" else "demo")
        where = {"wiki": "the Wikipedia sample", "demo": "the demo corpus",
                 "wiki+demo": "the demo corpus, after the Wikipedia stage"}[text]
        if "general_stage" in d:
            g = d["general_stage"]["train"]
            lines += ["", f"general stage on the Wikipedia sample: {g['steps']} steps over {g['blocks']} blocks "
                          f"in {g['seconds']:.0f}s"]
        lines += ["", f"distillation on {where}: "
                      f"{d['train']['steps']} steps over {d['corpus']['blocks']} blocks in {d['train']['seconds']:.0f}s "
                      f"(+{d['train']['head_fit_seconds']:.0f}s head fit); " + (
                          f"held-out MLM accuracy teacher {d['teacher']['mlm_accuracy']:.3f}, "
                          f"student {d['student']['mlm_accuracy']:.3f}"
                          if d["terms"]["alpha_ce"] or d["terms"]["alpha_mlm"]
                          else "cosine term only (no MLM head trained, so no MLM accuracy)")]
    if "speed" in results:
        s = results["speed"]
        lines += ["", f"scoring speed ({s['pairs']} TREC DL pairs): student {s['pairs_per_s']['student']:.1f} pairs/s, "
                      f"teacher {s['pairs_per_s']['teacher']:.1f} pairs/s, ratio {s['ratio']:.2f}x"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    missing = [str(args.data / r) for r in (TREC, TRIPLES, WIKI) if not (args.data / r).exists()]
    if missing:
        sys.exit(f"benchmark data not found: {', '.join(missing)} (pass --data)")
    quiet_transformers()
    results: dict[str, Any] = results_header(args, argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as tmp:
        work = args.work_dir or Path(tmp)
        taken = [p.name for p in work.glob("*") if p.name != "wiki-distill"] if work.exists() else []
        if taken:
            sys.exit(f"--work-dir {work} already holds {', '.join(sorted(taken))}: give a new folder, or one holding "
                     "only wiki-distill/ from an earlier run")
        work.mkdir(parents=True, exist_ok=True)
        copied = copied_student(work / "copied", args)
        if not args.skip_demo:
            results["demo"] = demo_setting(work, args, copied)
        if not args.skip_trec:
            results["trec_dl_2019"] = trec_setting(work, args, copied)
            rows = results["trec_dl_2019"]["rankings"]  # the fine-tuned teacher and distilled student (first seed)
            results["speed"] = scoring_speed(Path(rows["teacher (6 layers)"]["model"]),
                                             Path(rows["distilled student"]["model"]), args)
    save_results(results, args.out, t0)
    print(markdown(results))
    print(f"\nwrote {args.out} ({results['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
