"""Hard-negative mining: speed and memory against sentence-transformers, a 1M-document corpus, and what
the negatives are worth to a reranker.

Three parts, each bounded and run on its own (``--part``):

* ``throughput``: mining the demo training queries (1,546 queries, 5,175 documents) with the packaged
  all-MiniLM-L6-v2 as dense retriever, 6 negatives from ranks 1-30, top sampling, exact FAISS search:
  ``distilrank`` vs ``sentence_transformers.util.mine_hard_negatives(use_faiss=True)`` on the same
  corpus and settings, each in a fresh process (peak RSS = ``ru_maxrss``), interleaved repetitions.
  The static retriever (distilled from the same model) is timed too.
* ``scale``: a synthetic corpus of ``--docs`` (1M) documents and ``--queries`` queries mined with the
  static retriever (flat exact inner-product index): time per stage and peak RSS, in a fresh process.
* ``negatives``: cross-encoders from the packaged MiniLM trained with the demo's recipe and budget
  (listwise, 200 steps of 4 groups x 8 documents, lr 1.5e-4, max_length 96) on groups whose 7
  negatives are random / BM25-mined / dense-mined / static-mined (ranks 1-30, random sampling);
  nDCG@10 on the demo test set (BM25 top-20) and on TREC DL 2019 (BM25 top-100, eval only).
  ``--negatives`` picks which ones this invocation trains (each takes several minutes).

    python benchmarks/bench_mining.py --part throughput --out benchmarks/results/mining_throughput_cpu.json
    python benchmarks/bench_mining.py --part scale --out benchmarks/results/mining_1m_cpu.json
    python benchmarks/bench_mining.py --part negatives --negatives random --out benchmarks/results/neg_random.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
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
    quiet_transformers,
    results_header,
    save_results,
)

NEGATIVE_KINDS = ("random", "bm25", "dense", "static")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("throughput", "scale", "negatives"), required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding trec-dl-2019")
    p.add_argument("--repeats", type=int, default=2, help="throughput: runs per system (interleaved)")
    p.add_argument("--docs", type=int, default=1_000_000, help="scale: synthetic documents")
    p.add_argument("--queries", type=int, default=10_000, help="scale: synthetic queries")
    p.add_argument("--index", choices=("flat", "ivf", "hnsw"), default="flat", help="scale: FAISS index")
    p.add_argument("--negatives", default=",".join(NEGATIVE_KINDS), help="negatives: kinds to train on")
    p.add_argument("--steps", type=int, default=200, help="negatives: training steps (the demo's budget)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def demo_train(work: Path, seed: int):
    from distilrank.data.demo import build_demo_dataset, write_beir
    from distilrank.data.readers import read_beir

    folder = work / "demo-data"
    if not (folder / "corpus.jsonl").is_file():
        write_beir(build_demo_dataset(seed), folder)
    return folder, read_beir(folder, "train"), read_beir(folder, "test")


# ---------------------------------------------------------------------------- workers (fresh processes)


def worker_ours(work: Path, seed: int, retriever: str) -> dict[str, Any]:
    from distilrank.config import MineConfig
    from distilrank.mining.negatives import mine_groups

    _, train, _ = demo_train(work, seed)
    cfg = MineConfig(retriever=retriever, num_negatives=6, rank_max=30, sampling="top", batch_size=64)
    t0 = time.perf_counter()
    rows, summary = mine_groups(train, cfg)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "queries": summary.queries, "groups": len(rows),
            "negatives": sum(len(r["negatives"]) for r in rows), "peak_rss_mib": peak_rss_mib()}


def worker_st(work: Path, seed: int) -> dict[str, Any]:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from distilrank.models.cross_encoder import resolve_model_path

    _, train, _ = demo_train(work, seed)
    qids = train.judged_queries()
    pairs = [(train.queries[q].text, train.corpus[d].contents) for q in qids
             for d, g in sorted(train.qrels[q].items()) if g > 0]
    corpus = [p.contents for p in train.corpus.values()]
    t0 = time.perf_counter()  # model load inside the timing, as ours loads its model inside mine_groups
    model = SentenceTransformer(resolve_model_path(MODEL), device="cpu")
    out = mine_hard_negatives(Dataset.from_dict({"query": [q for q, _ in pairs], "positive": [p for _, p in pairs]}),
                              model, corpus=corpus, range_max=30, num_negatives=6, sampling_strategy="top",
                              batch_size=64, use_faiss=True, output_format="n-tuple", verbose=False)
    seconds = time.perf_counter() - t0
    negatives = sum(1 for row in out for k, v in row.items() if k.startswith("negative") and v)
    return {"seconds": seconds, "queries": len(pairs), "groups": len(out), "negatives": negatives,
            "peak_rss_mib": peak_rss_mib()}


def synthetic(docs: int, queries: int, seed: int):
    """Documents of 12 words drawn (Zipf-like) from the MiniLM vocabulary; a query is 3 words of its positive."""
    from transformers import AutoTokenizer

    from distilrank.data.records import Passage, Query, RetrievalDataset
    from distilrank.models.cross_encoder import resolve_model_path

    vocab = [w for w in AutoTokenizer.from_pretrained(resolve_model_path(MODEL)).get_vocab()
             if w.isalpha() and len(w) > 2]
    rng = random.Random(seed)
    weights = [1.0 / (r + 10) for r in range(len(vocab))]
    words = rng.choices(vocab, weights=weights, k=docs * 12)
    corpus = {f"d{i}": Passage(f"d{i}", " ".join(words[i * 12 : i * 12 + 12])) for i in range(docs)}
    del words
    picks = rng.sample(range(docs), queries)
    qs = {f"q{i}": Query(f"q{i}", " ".join(rng.sample(corpus[f"d{j}"].text.split(), 3))) for i, j in enumerate(picks)}
    return RetrievalDataset(corpus, qs, {f"q{i}": {f"d{j}": 1} for i, j in enumerate(picks)}, name="synthetic-1M")


def worker_scale(docs: int, queries: int, seed: int, index: str = "flat") -> dict[str, Any]:
    from distilrank.config import MineConfig
    from distilrank.mining.negatives import mine_groups
    from distilrank.mining.retrievers import FaissRetriever, StaticEncoder

    t0 = time.perf_counter()
    dataset = synthetic(docs, queries, seed)
    t_data, rss_data = time.perf_counter() - t0, peak_rss_mib()
    t0 = time.perf_counter()
    encoder = StaticEncoder(MODEL)  # distilled offline from the packaged MiniLM (256 dimensions)
    t_distill = time.perf_counter() - t0
    t0 = time.perf_counter()
    retriever = FaissRetriever.build(encoder, dataset.corpus, index=index, batch_size=4096)
    t_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows, summary = mine_groups(dataset, MineConfig(retriever="static", num_negatives=6, rank_max=30,
                                                    sampling="top"), retriever=retriever)
    t_mine = time.perf_counter() - t0
    hits = sum(1 for r in rows if len(r["negatives"]) == 6)
    return {"documents": docs, "queries": queries, "dim": retriever.meta["dim"], "index": index,
            "seconds_build_corpus": t_data,
            "seconds_distill_static_model": t_distill, "seconds_index": t_index, "seconds_mine": t_mine,
            "queries_per_s_mine": queries / t_mine, "groups_with_6_negatives": hits,
            "peak_rss_mib_after_corpus": rss_data, "peak_rss_mib": peak_rss_mib(),
            "summary": summary.as_dict()}


def run_worker(args: argparse.Namespace) -> None:
    if args.worker == "st":
        result = worker_st(args.work, args.seed)
    elif args.worker == "scale":
        result = worker_scale(args.docs, args.queries, args.seed, args.index)
    else:
        result = worker_ours(args.work, args.seed, args.worker.split(":", 1)[1])
    print("RESULT " + json.dumps(result), flush=True)


def spawn(worker: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--part", args.part, "--out", str(args.out), "--worker", worker,
           "--work", str(work), "--seed", str(args.seed), "--docs", str(args.docs), "--queries", str(args.queries), "--index", args.index]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"worker {worker} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


# ---------------------------------------------------------------------------- parts


def part_throughput(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    demo_train(work, args.seed)  # written once, before any timing
    systems = {"distilrank dense (FAISS flat)": "ours:dense", "sentence-transformers mine_hard_negatives": "st"}
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in systems}
    for r in range(args.repeats):
        for name in (list(systems) if r % 2 == 0 else list(systems)[::-1]):
            runs[name].append(spawn(systems[name], args, work))
    static = spawn("ours:static", args, work)
    out = {}
    for name, rs in {**runs, "distilrank static (model2vec distilled here, FAISS flat)": [static]}.items():
        sec = statistics.median(x["seconds"] for x in rs)
        out[name] = {"median_seconds": round(sec, 2), "queries": rs[0]["queries"],
                     "queries_per_s": round(rs[0]["queries"] / sec, 2), "groups": rs[0]["groups"],
                     "negatives": rs[0]["negatives"], "peak_rss_mib": round(max(x["peak_rss_mib"] for x in rs)),
                     "runs_seconds": [round(x["seconds"], 2) for x in rs]}
    return out


def train_and_eval(kind: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from distilrank.config import MineConfig, TrainConfig
    from distilrank.data.readers import read_trec_folder
    from distilrank.evaluation.ranking import evaluate_reranking
    from distilrank.evaluation.run import first_stage_run
    from distilrank.io import atomic_write_jsonl
    from distilrank.mining.negatives import mine_groups
    from distilrank.models.cross_encoder import CrossEncoder
    from distilrank.training.run import run_training

    folder, train, test = demo_train(work, args.seed)
    t0 = time.perf_counter()
    if kind == "random":
        rng, ids = random.Random(args.seed), list(train.corpus)
        rows = []
        for q in train.judged_queries():
            pos = next(d for d, g in train.qrels[q].items() if g > 0)
            negs = [d for d in rng.sample(ids, 8) if d != pos][:7]
            rows.append({"query": train.queries[q].text, "positive": train.corpus[pos].contents,
                         "negatives": [train.corpus[d].contents for d in negs]})
    else:
        rows, _ = mine_groups(train, MineConfig(retriever=kind, num_negatives=7, rank_max=30, seed=args.seed))
    mine_seconds = time.perf_counter() - t0
    groups = work / f"groups-{kind}.jsonl"
    atomic_write_jsonl(groups, rows)
    cfg = TrainConfig(train_file=str(groups), model=MODEL, output_dir=str(work / f"train-{kind}"), loss="listwise",
                      max_steps=args.steps, batch_size=4, group_size=8, max_length=96, learning_rate=1.5e-4,
                      warmup_ratio=0.1, seed=args.seed, log_steps=10)
    train_info = run_training(cfg)["train"]
    model = CrossEncoder.from_pretrained(str(work / f"train-{kind}" / "model"), max_length=96)
    demo_run = first_stage_run(test, None, 20)
    demo = evaluate_reranking(test, demo_run, lambda p: model.score(p), 20)
    trec, trec_run = read_trec_folder(args.data / TREC)
    model.max_length = 256
    dl = evaluate_reranking(trec, trec_run, lambda p: model.score(p), 100, relevance_level=2)
    return {"groups": len(rows), "mine_seconds": round(mine_seconds, 1), "train": train_info,
            "demo": {"bm25": demo.first_stage, "reranker": demo.reranked},
            "trec_dl_2019": {"bm25": dl.first_stage, "reranker": dl.reranked}}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    quiet_transformers()
    results: dict[str, Any] = results_header(args, argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-mining-") as tmp:
        work = Path(tmp)
        if args.part == "throughput":
            results["throughput"] = part_throughput(args, work)
        elif args.part == "scale":
            results["scale"] = spawn("scale", args, work)
        else:
            if not (args.data / TREC).is_dir():
                sys.exit(f"benchmark data not found: {args.data / TREC} (pass --data)")
            kinds = [k.strip() for k in args.negatives.split(",") if k.strip()]
            results["negatives"] = {}
            for k in kinds:  # saved after each kind: a long run cut short keeps what it finished
                results["negatives"][k] = train_and_eval(k, args, work)
                save_results(results, args.out, t0)
    save_results(results, args.out, t0)
    print(json.dumps({k: v for k, v in results.items() if k in ("throughput", "scale", "negatives")}, indent=1,
                     default=str)[:6000])


if __name__ == "__main__":
    main()
