"""Do soft labels pay? A small student trained on a teacher's soft labels vs one trained on binary labels.

On the demo set (the InRanker recipe at demo scale):

1. the teacher: the packaged all-MiniLM-L6-v2 (6 layers) fine-tuned as a cross-encoder with the
   demo's recipe (listwise CE over 1 positive + 7 BM25 negatives);
2. ``distilrank label``: the teacher scores every (query, document) pair of the training groups
   (1 positive + ``--negatives`` BM25 negatives per train query); the same pairs are also scored
   with ``sentence_transformers.CrossEncoder.predict`` to compare labelling throughput;
3. two students with the same start (``--student-layers`` first layers of MiniLM, or
   ``--student-model``) and the same budget (steps, batch, group size, learning rate): one learns
   the teacher's scores (``loss=kl``, KL over each query's documents), the other the binary labels
   of the same groups (``loss=listwise``);
4. nDCG@10 on the demo test queries (BM25 top-20) and scoring speed of teacher and students
   (interleaved repetitions, medians).

``--student-encoder bi`` makes both students bi-encoders (mean pooling; a pair scored by the
cosine of its two embeddings, each text encoded alone): the soft student learns the teacher's
scores through ``scale * cos`` (``encoder=bi loss=kl``), the binary one the same groups with
multiple-negatives ranking (``loss=mnrl``: the group's BM25 negatives plus every other passage of
the batch). ``--student-layers 0,5`` keeps those teacher layers (a copy, as ``distilrank
distill-mlm`` builds a student) instead of the first ones.

``--extra-packages numpy,torch`` adds InRanker's second ingredient at demo scale: many more
queries, labelled by the teacher only. The docstrings of those installed packages are split like
the demo's (summary line -> query, description -> document); every pair whose query or document
also occurs in the demo (any split) is dropped, so no test text leaks in. Up to
``--extra-queries`` of them, each with ``--extra-negatives`` BM25 negatives from the extra corpus,
are labelled by the teacher and added to both students' training data: the soft student learns
the teacher's scores on them, the binary student their source document as the positive.

    python benchmarks/bench_soft_labels.py --out benchmarks/results/soft_labels_cpu.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_vs_sentence_transformers import MODEL, quiet_transformers, results_header, save_results  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--negatives", type=int, default=15, help="BM25 negatives per train query that get labelled")
    p.add_argument("--rank-max", type=int, default=30, help="the labelled negatives come from BM25 ranks 1..rank-max")
    p.add_argument("--teacher-steps", type=int, default=200)
    p.add_argument("--teacher-lr", type=float, default=1.5e-4)
    p.add_argument("--teacher-model", default="", help="a cross-encoder already trained (e.g. by `distilrank train` on "
                                                       "the demo groups) to label with, instead of training one")
    p.add_argument("--student-layers", default="2", help="MiniLM layers kept by the students: a count (the first "
                                                          "N) or a comma-separated list such as 0,5")
    p.add_argument("--student-encoder", default="cross", choices=("cross", "bi"),
                   help="cross: cross-encoder students (kl vs listwise); bi: bi-encoder students (kl vs mnrl)")
    p.add_argument("--student-model", default="", help="a student checkpoint to start from instead")
    p.add_argument("--student-steps", type=int, default=600)
    p.add_argument("--student-lr", type=float, default=3e-4)
    p.add_argument("--student-batch-size", type=int, default=4, help="queries per student step")
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-length", type=int, default=96)
    p.add_argument("--speed-repeats", type=int, default=3)
    p.add_argument("--num-workers", type=int, default=0, help="tokenizing DataLoader workers (GPU runs)")
    p.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"],
                   help="the students' precision (the teacher trains in fp32)")
    p.add_argument("--skip-st", action="store_true", help="do not time sentence-transformers' labelling")
    p.add_argument("--extra-packages", default="",
                   help="comma-separated installed packages whose docstrings give extra teacher-labelled queries")
    p.add_argument("--extra-queries", type=int, default=8000, help="at most this many extra queries (sampled)")
    p.add_argument("--extra-negatives", type=int, default=15, help="BM25 negatives per extra query")
    return p.parse_args(argv)


def train(model: str, train_file: Path, out: Path, args: argparse.Namespace, **kw: Any) -> dict[str, Any]:
    from distilrank.config import TrainConfig
    from distilrank.training.run import run_training

    kw.setdefault("batch_size", 4)
    kw["num_workers"] = args.num_workers
    cfg = TrainConfig(train_file=str(train_file), model=model, output_dir=str(out),
                      group_size=args.group_size, max_length=args.max_length, seed=args.seed, log_steps=10, **kw)
    return run_training(cfg)["train"]


def label(teacher: Path, groups: Path, out: Path) -> dict[str, Any]:
    from distilrank.config import LabelConfig
    from distilrank.labeling import run_label

    return run_label(LabelConfig(teacher=str(teacher), data=str(groups), output=str(out), batch_size=64))


def st_labelling(teacher: Path, groups: Path, max_length: int) -> dict[str, Any]:
    """sentence-transformers scoring the same pairs (its predict: batches sorted by character length)."""
    from sentence_transformers import CrossEncoder as STCrossEncoder

    from distilrank.data.readers import read_training_file

    pairs = [(g.query, d) for g in read_training_file(groups) for d in g.documents]
    model = STCrossEncoder(str(teacher), max_length=max_length, device="cpu")
    start = time.perf_counter()
    model.predict(pairs, batch_size=64, show_progress_bar=False)
    seconds = time.perf_counter() - start
    return {"pairs": len(pairs), "seconds": round(seconds, 2), "pairs_per_second": len(pairs) / seconds}


def evaluate(test: Any, run: Any, model_dir: Path | None, max_length: int) -> dict[str, float]:
    """BM25's metrics (``model_dir`` None), or those of the saved reranker there (cross- or bi-encoder)."""
    from distilrank.evaluation.ranking import evaluate_reranking
    from distilrank.inference.reranker import Reranker

    if model_dir is None:
        return evaluate_reranking(test, run, None, 20).first_stage
    model = Reranker.load(model_dir, max_length=max_length, batch_size=32)
    return evaluate_reranking(test, run, model.score, 20).reranked


def scoring_speed(models: dict[str, Path], pairs: list[tuple[str, str]], args: argparse.Namespace) -> dict[str, float]:
    """pairs/s of each model on the test pairs (batch 32), repetitions interleaved; medians."""
    from distilrank.inference.reranker import Reranker

    loaded = {k: Reranker.load(v, max_length=args.max_length, batch_size=32) for k, v in models.items()}
    times: dict[str, list[float]] = {k: [] for k in loaded}
    for r in range(args.speed_repeats):
        for name in (list(loaded) if r % 2 == 0 else list(loaded)[::-1]):
            start = time.perf_counter()
            loaded[name].score(pairs)
            times[name].append(time.perf_counter() - start)
    return {k: len(pairs) / statistics.median(v) for k, v in times.items()}


def student_start(work: Path, args: argparse.Namespace) -> tuple[str, int]:
    """The students' common start and the ``num_layers`` to train it with.

    ``--student-model``: that checkpoint as is. A count N: MiniLM cut to its first N layers at load
    time. A list: those MiniLM layers copied into a new checkpoint (embeddings kept).
    """
    if args.student_model:
        return args.student_model, 0
    if "," not in args.student_layers:
        return MODEL, int(args.student_layers)
    from distilrank.models.student import build_student, load_teacher, save_student

    teacher, tokenizer, _ = load_teacher(MODEL)
    save_student(build_student(teacher, [int(x) for x in args.student_layers.split(",")]), tokenizer,
                 work / "student-start")
    return str(work / "student-start"), 0


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def extra_dataset(packages: list[str], demo: Any, args: argparse.Namespace) -> tuple[Any, dict[str, int]]:
    """Query/document pairs from the docstrings of installed ``packages`` (all as training queries).

    Pairs whose query or document text (case and spacing ignored) occurs anywhere in ``demo`` are
    dropped: vendored copies of standard-library modules would otherwise bring test pairs in.
    """
    import importlib.util
    import random

    from distilrank.data.demo import DemoSizes, build_demo_dataset
    from distilrank.data.records import Passage, Query, RetrievalDataset

    seen = {_norm(q.text) for q in demo.queries.values()} | {_norm(d.text) for d in demo.corpus.values()}
    corpus: dict[str, Passage] = {}
    pairs: list[tuple[str, str]] = []  # (query text, positive doc id)
    counts = {"pairs": 0, "dropped_as_demo_duplicates": 0}
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            sys.exit(f"--extra-packages: {package!r} is not an installed package")
        root = Path(list(spec.submodule_search_locations)[0])
        built = build_demo_dataset(args.seed, DemoSizes(test=0, dev=0), stdlib=root,
                                   workers=os.cpu_count() or 1)["train"]
        for qid, query in built.queries.items():
            doc_id = next(iter(built.qrels[qid]))
            doc = built.corpus[doc_id]
            counts["pairs"] += 1
            if _norm(query.text) in seen or _norm(doc.text) in seen:
                counts["dropped_as_demo_duplicates"] += 1
                continue
            seen.update((_norm(query.text), _norm(doc.text)))
            new_id = f"{package}-{doc_id}"
            corpus[new_id] = Passage(new_id, doc.text, title=f"{package}.{doc.title}")
            pairs.append((query.text, new_id))
        for doc_id, doc in built.corpus.items():  # the package's distractors join the extra corpus
            if doc_id.startswith("x") and _norm(doc.text) not in seen:
                seen.add(_norm(doc.text))
                corpus[f"{package}-{doc_id}"] = Passage(f"{package}-{doc_id}", doc.text, title=f"{package}.{doc.title}")
    random.Random(args.seed).shuffle(pairs)
    pairs = pairs[: args.extra_queries]
    queries = {f"e{i}": Query(f"e{i}", text) for i, (text, _) in enumerate(pairs)}
    qrels = {f"e{i}": {doc_id: 1} for i, (_, doc_id) in enumerate(pairs)}
    counts.update(queries=len(queries), corpus=len(corpus))
    return RetrievalDataset(corpus, queries, qrels, name="extra-train"), counts


def concatenate(files: list[Path], out: Path) -> Path:
    with out.open("w", encoding="utf-8") as fh:
        for f in files:
            text = f.read_text(encoding="utf-8")
            fh.write(text if text.endswith("\n") or not text else text + "\n")
    return out


def run(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from distilrank.config import MineConfig
    from distilrank.data.demo import build_demo_dataset, write_beir
    from distilrank.data.readers import read_beir
    from distilrank.evaluation.run import first_stage_run
    from distilrank.mining.negatives import mine_to_file

    data_dir = write_beir(build_demo_dataset(args.seed), work / "data")
    train_set, test = read_beir(data_dir, "train"), read_beir(data_dir, "test")
    teacher_groups, groups = work / "teacher-groups.jsonl", work / "groups.jsonl"
    mine_to_file(train_set, MineConfig(data=str(data_dir), output=str(teacher_groups), num_negatives=7, rank_max=30,
                                       seed=args.seed))
    mine_to_file(train_set, MineConfig(data=str(data_dir), output=str(groups), num_negatives=args.negatives,
                                       rank_max=args.rank_max, seed=args.seed))
    out: dict[str, Any] = {"train": {}}
    if args.teacher_model:
        teacher = Path(args.teacher_model)
        out["train"]["teacher"] = {"model": str(teacher), "trained": "before this run (--teacher-model)"}
    else:
        out["train"]["teacher"] = train(MODEL, teacher_groups, work / "teacher", args, loss="listwise",
                                        max_steps=args.teacher_steps, learning_rate=args.teacher_lr)
        teacher = work / "teacher" / "model"
    out["labelling"] = {"distilrank": label(teacher, groups, work / "labels.jsonl")}
    if not args.skip_st:
        out["labelling"]["sentence_transformers"] = st_labelling(teacher, groups, args.max_length)
    soft_file, binary_file = work / "labels.jsonl", groups
    if args.extra_packages:
        demo_all = read_beir(data_dir, "test")  # the corpus and, with the others below, every demo query
        for split in ("train", "dev"):
            demo_all.queries.update(read_beir(data_dir, split).queries)
        extra, out["extra"] = extra_dataset(args.extra_packages.split(","), demo_all, args)
        extra_dir = write_beir({"train": extra}, work / "extra")
        extra_groups = work / "extra-groups.jsonl"
        mined = mine_to_file(extra, MineConfig(data=str(extra_dir), output=str(extra_groups),
                                               num_negatives=args.extra_negatives, rank_max=args.rank_max,
                                               seed=args.seed))
        out["extra"]["mined"] = mined.as_dict()
        out["labelling"]["extra"] = label(teacher, extra_groups, work / "extra-labels.jsonl")
        soft_file = concatenate([work / "labels.jsonl", work / "extra-labels.jsonl"], work / "all-labels.jsonl")
        binary_file = concatenate([groups, extra_groups], work / "all-groups.jsonl")
        print(f"extra queries: {out['extra']}", flush=True)
    start, layers = student_start(work, args)
    budget = {"max_steps": args.student_steps, "learning_rate": args.student_lr, "num_layers": layers,
              "batch_size": args.student_batch_size, "mixed_precision": args.mixed_precision}
    bi = args.student_encoder == "bi"
    out["train"]["soft"] = train(start, soft_file, work / "soft", args, loss="kl", temperature=args.temperature,
                                 encoder=args.student_encoder, **budget)
    out["train"]["binary"] = train(start, binary_file, work / "binary", args, loss="mnrl" if bi else "listwise",
                                   **budget)
    runs = first_stage_run(test, None, 20)
    models = {"teacher (6 layers)": teacher, "student, soft labels": work / "soft" / "model",
              "student, binary labels": work / "binary" / "model"}
    out["rankings"] = {"BM25": evaluate(test, runs, None, args.max_length)}
    out["rankings"].update({k: evaluate(test, runs, v, args.max_length) for k, v in models.items()})
    pairs = [(test.queries[q].text, test.corpus[d].contents) for q, hits in runs.items() for d, _ in hits]
    out["speed_pairs_per_s"] = scoring_speed({"teacher": teacher, "student": work / "soft" / "model"}, pairs, args)
    out["test_queries"], out["test_pairs"] = len(runs), len(pairs)
    return out


def markdown(r: dict[str, Any]) -> str:
    rows = r["rankings"]
    teacher = rows["teacher (6 layers)"]["nDCG@10"]
    lines = ["| model | nDCG@10 | of teacher |", "|---|---:|---:|"]
    lines += [f"| {k} | {m['nDCG@10']:.4f} | {m['nDCG@10'] / teacher:.0%} |" for k, m in rows.items()]
    s = r["speed_pairs_per_s"]
    lines += ["", f"scoring ({r['test_pairs']} test pairs): student {s['student']:.1f} pairs/s, teacher "
                  f"{s['teacher']:.1f} pairs/s ({s['student'] / s['teacher']:.2f}x)"]
    lab = r["labelling"]
    line = (f"labelling {lab['distilrank']['pairs']} pairs: distilrank {lab['distilrank']['pairs_per_second']:.1f} "
            "pairs/s")
    if "sentence_transformers" in lab:
        st = lab["sentence_transformers"]["pairs_per_second"]
        line += f", sentence-transformers predict {st:.1f} pairs/s ({lab['distilrank']['pairs_per_second'] / st:.2f}x)"
    return "\n".join([*lines, line])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet_transformers()
    results: dict[str, Any] = results_header(args, argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-soft-") as tmp:
        results.update(run(Path(tmp), args))
    save_results(results, args.out, t0)
    print(markdown(results))
    print(f"\nwrote {args.out} ({results['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
