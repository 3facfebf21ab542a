"""NLI with soft prompts on RTE, and extractive QA on a held-out slice of SQuAD v1.1 (CPU budgets).

Three parts, each a bounded run that writes its own JSON and prints a markdown table:

* ``student``: a 3-layer student distilled from the packaged all-MiniLM-L6-v2 by
  ``distill-mlm`` on the English Wikipedia sample (a small, fixed budget);
* ``rte``: GLUE RTE (train 2,490 / dev 277): full fine-tuning vs soft prompts (frozen backbone)
  vs soft prompts + backbone, from the packaged MiniLM and from the distilled student; dev
  accuracy, F1 (entailment positive) and macro F1, trainable parameters, training time;
* ``squad``: SQuAD v1.1 (the first 44 train articles): trained on the first ``--train-articles``,
  scored on questions of the remaining articles (held out by article, so no context is shared);
  exact match / F1 after a fixed number of steps, with the wall time of that budget.

    python benchmarks/bench_nli_qa.py student --work runs/bench-nli-qa
    python benchmarks/bench_nli_qa.py rte --work runs/bench-nli-qa --out benchmarks/results/nli_rte_cpu.json
    python benchmarks/bench_nli_qa.py squad --work runs/bench-nli-qa --out benchmarks/results/qa_squad_cpu.json
    python benchmarks/bench_nli_qa.py squad-kd --work runs/bench-nli-qa --out benchmarks/results/qa_squad_kd_cpu.json

``squad-kd`` trains the 3-layer student on the same split and budget twice: on the gold spans
only, and distilled from the fine-tuned MiniLM's start/end logits (``teacher=``, KL at T).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_vs_sentence_transformers import DEFAULT_DATA, MODEL, results_header, save_results  # noqa: E402

METHODS = {  # name -> TrainConfig keys
    "full": {},
    "prompt": {"prompt_tokens": 20, "freeze_backbone": True},
    "prompt+backbone": {"prompt_tokens": 20},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=["student", "rte", "squad", "squad-kd"])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with rte/, squad-v1.1/, wikipedia-en-sample/")
    p.add_argument("--work", type=Path, required=True, help="folder for the runs (models, logs, curves)")
    p.add_argument("--out", type=Path, help="JSON results file (rte, squad)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--student-steps", type=int, default=150, help="distill-mlm steps of the student")
    p.add_argument("--models", default="minilm,student", help="rte: start models (minilm, student)")
    p.add_argument("--methods", default=",".join(METHODS), help="rte: methods to compare")
    p.add_argument("--epochs", type=float, default=2.0, help="rte: epochs over the 2,490 training pairs")
    p.add_argument("--lr", type=float, default=5e-5, help="rte: learning rate of full fine-tuning and prompt+backbone")
    p.add_argument("--prompt-lr", type=float, default=1e-2, help="rte: learning rate with a frozen backbone")
    p.add_argument("--prompt-method", default="prompt_tuning", choices=["prompt_tuning", "p_tuning"])
    p.add_argument("--tag", default="", help="rte: suffix of the run folders (variants of the same method)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--qa-steps", type=int, default=200, help="squad: optimizer steps (the fixed budget)")
    p.add_argument("--qa-batch-size", type=int, default=16)
    p.add_argument("--qa-max-length", type=int, default=256)
    p.add_argument("--qa-stride", type=int, default=64)
    p.add_argument("--qa-lr", type=float, default=1e-4)
    p.add_argument("--alpha-kd", type=float, default=0.5, help="squad-kd: weight of the KL to the teacher")
    p.add_argument("--kd-temperature", type=float, default=2.0)
    p.add_argument("--train-articles", type=int, default=40, help="squad: articles trained on; the rest are held out")
    p.add_argument("--eval-questions", type=int, default=500, help="squad: held-out questions scored")
    return p.parse_args(argv)


def student_dir(args: argparse.Namespace) -> Path:
    return args.work / "student" / "model"


def build_student(args: argparse.Namespace) -> dict[str, Any]:
    from distilrank.config import DistillConfig
    from distilrank.training.distill import run_distill

    if student_dir(args).exists():
        print(f"student exists: {student_dir(args)}")
        return {}
    return run_distill(DistillConfig(
        data=str(args.data / "wikipedia-en-sample"), teacher=MODEL, output_dir=str(args.work / "student"),
        layers=(0, 3, 5), max_steps=args.student_steps, batch_size=16, learning_rate=5e-4, head_fit_steps=60,
        max_blocks=4000, eval_blocks=128, seed=args.seed))


def train(cfg_kwargs: dict[str, Any]) -> dict[str, Any]:
    from distilrank.config import TrainConfig
    from distilrank.training.run import run_training

    out = Path(cfg_kwargs["output_dir"])
    if (out / "metrics.json").exists():  # finished earlier: reuse (delete the folder to rerun)
        return json.loads((out / "metrics.json").read_text())
    return run_training(TrainConfig(**cfg_kwargs))


def rte(args: argparse.Namespace) -> dict[str, Any]:
    starts = {"minilm": MODEL, "student": str(student_dir(args))}
    rows = []
    for model in args.models.split(","):
        if model == "student" and not student_dir(args).exists():
            raise SystemExit("run the `student` part first")
        for method in args.methods.split(","):
            frozen = METHODS[method].get("freeze_backbone", False)
            name = f"rte-{model}-{method}{args.tag}"
            metrics = train(dict(
                train_file=str(args.data / "rte" / "train.tsv"), eval_data=str(args.data / "rte" / "dev.tsv"),
                model=starts[model], output_dir=str(args.work / name), task="nli", epochs=args.epochs, batch_size=16,
                max_length=args.max_length, learning_rate=args.prompt_lr if frozen else args.lr, warmup_ratio=0.1,
                seed=args.seed, log_steps=10, eval_steps=100, prompt_method=args.prompt_method, **METHODS[method]))
            e = metrics["eval"]
            rows.append({"run": name, "model": model, "method": metrics["method"], "accuracy": e["accuracy"],
                         "f1": e["f1"], "macro_f1": e["macro_f1"], "confusion_matrix": e["confusion_matrix"],
                         "trainable_params": metrics["trainable_params"], "total_params": metrics["total_params"],
                         "seconds": metrics["train"]["seconds"], "steps": metrics["train"]["steps"],
                         "learning_rate": args.prompt_lr if frozen else args.lr})
            print(json.dumps(rows[-1]))
    return {"rte": rows}


def squad_split(args: argparse.Namespace) -> tuple[Path, Path]:
    """Write the train articles and the held-out articles as two SQuAD files under ``--work``."""
    data = json.loads((args.data / "squad-v1.1" / "train-v1.1-first44articles.json").read_text(encoding="utf-8"))
    folder = args.work / "squad"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, articles in (("train", data["data"][:args.train_articles]), ("heldout", data["data"][args.train_articles:])):
        path = folder / f"{name}.json"
        path.write_text(json.dumps({"version": "1.1", "data": articles}), encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


def squad_run(args: argparse.Namespace, name: str, model: str, **kw: Any) -> dict[str, Any]:
    train_file, heldout = squad_split(args)
    metrics = train(dict(
        train_file=str(train_file), eval_data=str(heldout), eval_max_examples=args.eval_questions, model=model,
        output_dir=str(args.work / name), task="qa", max_steps=args.qa_steps, batch_size=args.qa_batch_size,
        max_length=args.qa_max_length, doc_stride=args.qa_stride, learning_rate=args.qa_lr, warmup_ratio=0.1,
        seed=args.seed, log_steps=10, eval_steps=max(1, args.qa_steps // 3), **kw))
    e = metrics["eval"]
    return {"model": name, "exact_match": e["exact_match"], "f1": e["f1"], "eval_loss": e["loss"],
            "train_sample_f1": e["train_f1"], "steps": metrics["train"]["steps"],
            "seconds": metrics["train"]["seconds"], "data": metrics["data"]}


def squad(args: argparse.Namespace) -> dict[str, Any]:
    return {"squad": squad_run(args, "squad-minilm", MODEL)}


def squad_kd(args: argparse.Namespace) -> dict[str, Any]:
    """The 3-layer student on the same split and budget, without and with the fine-tuned MiniLM as teacher."""
    teacher = args.work / "squad-minilm" / "model"
    if not teacher.exists() or not student_dir(args).exists():
        raise SystemExit("run the `student` and `squad` parts first")
    rows = [squad_run(args, "squad-student", str(student_dir(args))),
            squad_run(args, "squad-student-kd", str(student_dir(args)), teacher=str(teacher),
                      alpha_kd=args.alpha_kd, temperature=args.kd_temperature)]
    return {"squad_kd": rows}


def markdown(results: dict[str, Any]) -> str:
    lines = []
    if "rte" in results:
        lines += ["| start model | method | trained params | dev accuracy | F1 (entailment) | macro F1 | train s |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for r in results["rte"]:
            lines.append(f"| {r['model']} | {r['method']} | {r['trainable_params']:,} / {r['total_params']:,} | "
                         f"{r['accuracy']:.4f} | {r['f1']:.4f} | {r['macro_f1']:.4f} | {r['seconds']:.0f} |")
    squad_rows = [results["squad"]] if "squad" in results else results.get("squad_kd", [])
    if squad_rows:
        lines += ["| run | steps | train s | held-out EM | held-out F1 | questions |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {s['model']} | {s['steps']} | {s['seconds']:.0f} | {s['exact_match']:.2f} | {s['f1']:.2f} | "
                  f"{s['data'].get('eval_examples')} |" for s in squad_rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    missing = [d for d in ("rte", "squad-v1.1", "wikipedia-en-sample") if not (args.data / d).is_dir()]
    if missing:
        raise SystemExit(f"shared data not found under {args.data}: {missing}")
    started = time.perf_counter()
    if args.part == "student":
        print(json.dumps(build_student(args), indent=1, default=str)[:2000])
        return
    if not args.out:
        raise SystemExit("--out is required for the rte and squad parts")
    results = results_header(args, argv)
    results.update({"rte": rte, "squad": squad, "squad-kd": squad_kd}[args.part](args))
    save_results(results, args.out, started)
    print(markdown(results))


if __name__ == "__main__":
    main()
