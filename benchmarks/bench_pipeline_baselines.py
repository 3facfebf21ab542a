"""Issue 19's baselines beside a finished ``distilrank pipeline`` run: same data, same start, same budget.

* **sentence-transformers trainer**: the ``teacher`` stage's recipe (its config.yaml) rerun with
  ``SentenceTransformerTrainer`` + ``MultipleNegativesRankingLoss`` (bi-encoder teacher, loss mnrl; ``TripletLoss`` on
  the first negative for triplet) or ``CrossEncoderTrainer`` + its ``MultipleNegativesRankingLoss`` (loss listwise):
  same groups (negatives shuffled by seed as ``distilrank train`` does; columns anchor, positive,
  negative_1..group_size-1), start, batch size, lr, warm-up, weight decay, max length, seed. Budget: the teacher's
  training-loop seconds (metrics.json); a callback stops it there, and it runs at most the teacher's steps (whose LR
  schedule it follows).
* **copied layers**: the distill-mlm stage's layers copied from its teacher, no distillation, fine-tuned with the
  teacher's recipe by ``distilrank train``. Budget: the seconds of the distill-mlm stage, of any train stages
  between it and the student (e.g. embedding distillation) and of the student (pipeline.json, whole stages;
  ``--budget-stages``). The loop has no time limit, so a probe times ``--probe-steps`` steps after 5
  warm-up steps and the run takes ``(budget - copy - the probe's load/save overhead) / seconds per step`` steps.

Each is scored by ``run_eval`` with the settings of the run's eval stage of the teacher (resp. student). Seconds:
training loop for teacher and sentence-transformers, whole stages for student and copied layers.

    python benchmarks/bench_pipeline_baselines.py --runs runs/ms13,runs/ms14,runs/ms15 \\
        --out benchmarks/results/ms_baselines.json
"""

from __future__ import annotations

import argparse
import dataclasses
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

from bench_vs_sentence_transformers import quiet_transformers, results_header, save_results  # noqa: E402

ROWS = ("BM25", "zero-shot start", "teacher (ours)", "sentence-transformers trainer", "student (ours)", "copied layers")
WARMUP_STEPS = 5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", required=True, help="finished pipeline run folder(s), comma-separated (one per seed); "
                   "run this from the folder the pipeline ran in (its stages hold paths as it resolved them)")
    p.add_argument("--seeds", default="", help="e.g. 13,14,15; one run: each seed retrains the baselines; several "
                   "runs: paired in order; default: each run's teacher seed")
    p.add_argument("--out", type=Path, required=True, help="JSON file for the results")
    p.add_argument("--work-dir", type=Path, help="keep the baselines' models here (default: a temporary folder)")
    p.add_argument("--teacher-stage", default="teacher")
    p.add_argument("--student-stage", default="student")
    p.add_argument("--budget-stages", default="", help="stages whose seconds are the copied layers' budget "
                   "(default: the distill-mlm stage the student starts from, the stages between, and the student)")
    p.add_argument("--probe-steps", type=int, default=10, help="steps timed after 5 warm-up steps")
    p.add_argument("--batch-sampler", default="no_duplicates", help="sentence-transformers batch sampler")
    p.add_argument("--skip", default="", help="'st' and/or 'copied': baselines not to run")
    args = p.parse_args(argv)
    args.run_list = [Path(r) for r in args.runs.split(",") if r]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        p.error(f"--seeds {args.seeds}: give integers, e.g. 13,14,15")
    if len(args.run_list) > 1 and seeds and len(seeds) != len(args.run_list):
        p.error(f"{len(args.run_list)} runs but {len(seeds)} seeds: give one seed per run, or none")
    args.seed_list = seeds
    return args


class Run:
    """A finished pipeline run folder: ``pipeline.json`` and each stage's ``config.yaml`` / ``metrics.json``."""

    def __init__(self, path: Path) -> None:
        state = path / "pipeline.json"
        if not state.is_file():
            sys.exit(f"{path}: no pipeline.json; give the output_dir of a finished `distilrank pipeline` run")
        self.path, self.stages = path, json.loads(state.read_text(encoding="utf-8"))["stages"]

    def record(self, name: str) -> dict[str, Any]:
        record = self.stages.get(name)
        if not record or record.get("status") != "done":
            sys.exit(f"{self.path}: stage '{name}' is {'missing' if not record else record.get('status')}; finish "
                     "the pipeline first (or name the stage with --teacher-stage / --student-stage)")
        return record

    def config(self, name: str) -> Any:
        from distilrank.config import load_config
        from distilrank.pipeline.plan import COMMANDS

        return load_config(COMMANDS[self.record(name)["command"]].config, self.path / name / "config.yaml")

    def train_seconds(self, name: str) -> tuple[float, int]:
        """A train stage's training-loop seconds and steps (its metrics.json)."""
        train = json.loads((self.path / name / "metrics.json").read_text(encoding="utf-8"))["train"]
        return float(train["seconds"]), int(train["steps"])

    def eval_of(self, model: str | Path) -> str | None:
        """The first finished eval stage scoring ``model`` unfused (fused ones only when no other)."""
        found = [n for n, r in self.stages.items() if r.get("command") == "eval" and r.get("status") == "done"
                 and _same(self.config(n).model, model)]
        found.sort(key=lambda n: self.config(n).fusion_weight > 0)
        return found[0] if found else None

    def distill_chain(self, student_model: str) -> list[str]:
        """The stages the student's start came from: the distill-mlm stage, then any train stages between it and
        the student (e.g. an embedding-distillation stage), in run order."""
        chain: list[str] = []
        model = student_model
        while len(chain) <= len(self.stages):
            made = [n for n, r in self.stages.items() if r.get("command") in ("distill-mlm", "train")
                    and _same(self.path / n / "model", model)]
            if not made:
                break
            chain.insert(0, made[0])
            if self.stages[made[0]]["command"] == "distill-mlm":
                return chain
            model = self.config(made[0]).model
        sys.exit(f"{self.path}: the student starts from {student_model}, which no distill-mlm stage (directly or "
                 "through train stages) made: the copied layers need that stage's teacher and layers")


def _same(a: str | Path, b: str | Path) -> bool:
    return bool(str(a)) and bool(str(b)) and Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def figures(result: dict[str, Any], key: str = "reranker") -> dict[str, float]:
    """nDCG@10 / MRR@10 of an eval result (a suite's mean), and the reranker's pairs/s."""
    speed = {"pairs/s": result.get("pairs_per_second")} if key == "reranker" else {}
    result = result.get("mean", result) if "datasets" in result else result
    return {m: result.get(key, {}).get(m) for m in ("nDCG@10", "MRR@10")} | speed


def evaluate(cfg: Any, model: Path | str, out: Path, encoder: str | None = None) -> dict[str, Any]:
    """``cfg`` (an eval stage's EvalConfig) with another model: scored exactly as the stage scored its own."""
    from distilrank.evaluation.run import run_eval

    changes = {"model": str(model), "output_dir": str(out)} | ({"encoder": encoder} if encoder is not None else {})
    return run_eval(dataclasses.replace(cfg, **changes))


def zero_shot(run: Run, teacher_eval: str, start: str, work: Path) -> dict[str, Any]:
    """The start as it is: the run's own eval of it, or the teacher's eval settings (no head: cosine)."""
    from distilrank.models.cross_encoder import resolve_model_path
    from distilrank.models.kind import detect_model_kind

    own = run.eval_of(start) or run.eval_of(resolve_model_path(start))
    if own:
        return run.record(own)["result"]
    encoder = "" if detect_model_kind(resolve_model_path(start), onnx=False).has_head else "bi"
    return evaluate(run.config(teacher_eval), resolve_model_path(start), work / "zero-shot-eval", encoder)


def st_columns(cfg: Any, seed: int) -> dict[str, list[str]]:
    """The teacher's groups as anchor, positive, negative_1..k (k = group_size - 1, or fewer if a group has fewer)."""
    from distilrank.training.run import read_examples
    from distilrank.training.tasks import shuffle_negatives

    groups = shuffle_negatives(read_examples(cfg.train_file), seed)
    k = 1 if cfg.loss == "triplet" else min(cfg.group_size - 1, *(len(g.negatives) for g in groups))
    columns = {"anchor": [g.query for g in groups], "positive": [g.positive for g in groups]}
    return columns | {f"negative_{j + 1}": [g.negatives[j] for g in groups] for j in range(k)}


def budget_callback(seconds: float) -> Any:
    from transformers import TrainerCallback

    class Budget(TrainerCallback):
        """Stops training once ``seconds`` of it are spent (checked after each step)."""

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.start, self.stopped = time.perf_counter(), False

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            if time.perf_counter() - self.start >= seconds:
                control.should_training_stop = self.stopped = True
            return control

    return Budget()


def st_model_and_loss(cfg: Any) -> tuple[Any, Any, Any, Any]:
    """(model, loss, trainer class, arguments class) for the teacher's kind of model."""
    import sentence_transformers as st
    import torch
    from sentence_transformers.cross_encoder import losses as ce_losses
    from sentence_transformers.sentence_transformer import losses

    from distilrank.models.cross_encoder import resolve_model_path

    start, device = resolve_model_path(cfg.model), None if torch.cuda.is_available() else "cpu"
    if cfg.bi_encoder and cfg.loss in ("mnrl", "triplet"):
        model = st.SentenceTransformer(start, device=device)
        model.max_seq_length = cfg.max_length
        if cfg.loss == "mnrl":
            loss = losses.MultipleNegativesRankingLoss(model, scale=cfg.scale)
        else:
            metric = getattr(losses.TripletDistanceMetric, cfg.distance.upper())
            loss = losses.TripletLoss(model, distance_metric=metric, triplet_margin=cfg.margin)
        return model, loss, st.SentenceTransformerTrainer, st.SentenceTransformerTrainingArguments
    if not cfg.bi_encoder and cfg.loss == "listwise":
        model = st.CrossEncoder(start, num_labels=1, max_length=cfg.max_length, device=device)
        return (model, ce_losses.MultipleNegativesRankingLoss(model), st.CrossEncoderTrainer,
                st.CrossEncoderTrainingArguments)
    sys.exit(f"teacher loss={cfg.loss} (encoder={cfg.encoder or 'from the loss'}): no sentence-transformers "
             "counterpart here (bi-encoder mnrl/triplet or cross-encoder listwise)")


def train_st(cfg: Any, budget: float, max_steps: int, seed: int, out: Path, sampler: str) -> dict[str, Any]:
    """sentence-transformers' trainer on the teacher's recipe, stopped when ``budget`` seconds are spent."""
    from datasets import Dataset

    model, loss, trainer_cls, args_cls = st_model_and_loss(cfg)
    warmup = cfg.warmup_steps or int(cfg.warmup_ratio * max_steps)  # as distilrank's loop
    training_args = args_cls(
        output_dir=str(out / "trainer"), max_steps=max_steps, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, learning_rate=cfg.learning_rate,
        warmup_steps=max(1, warmup), weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, seed=seed,
        data_seed=seed, bf16=cfg.mixed_precision == "bf16", fp16=cfg.mixed_precision == "fp16",
        use_cpu=model.device.type == "cpu", batch_sampler=sampler, save_strategy="no", eval_strategy="no",
        logging_steps=max(1, cfg.log_steps), report_to="none", disable_tqdm=True)
    budget_cb = budget_callback(budget)
    trainer = trainer_cls(model=model, args=training_args, train_dataset=Dataset.from_dict(st_columns(cfg, seed)),
                          loss=loss, callbacks=[budget_cb])
    began = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - began
    model.save_pretrained(str(out / "model"))
    return {"seconds": round(seconds, 1), "steps": trainer.state.global_step, "max_steps": max_steps,
            "budget_seconds": round(budget, 1), "stopped_by_budget": budget_cb.stopped}


def copy_layers(distill: Any, out: Path) -> Path:
    """The distill-mlm stage's teacher layers, copied without any training."""
    from distilrank.models.student import build_student, default_layers, load_teacher, save_student

    if distill.student:
        sys.exit(f"the distill-mlm stage starts from student={distill.student}, not from teacher layers to copy")
    teacher, tokenizer, _ = load_teacher(distill.teacher)
    layers = list(distill.layers) or default_layers(teacher.config.num_hidden_layers)
    save_student(build_student(teacher, layers, distill.architecture), tokenizer, out)
    return out


def train_copied(recipe: Any, start: Path, budget: float, seed: int, out: Path, probe_steps: int) -> dict[str, Any]:
    """``distilrank train`` with the teacher's recipe from ``start`` for as many steps as ``budget`` allows."""
    from distilrank.training.run import run_training

    base = dataclasses.replace(recipe, model=str(start), seed=seed, eval_data="", eval_steps=0, save_steps=0,
                               push_to_hub="", resume=False, log_steps=min(recipe.log_steps, 10))
    stamps: list[float] = []
    began = time.perf_counter()
    probe = run_training(dataclasses.replace(base, max_steps=WARMUP_STEPS + probe_steps,
                                             output_dir=str(out / "probe")),
                         on_step=lambda step: stamps.append(time.perf_counter()))
    per_step = (stamps[-1] - stamps[WARMUP_STEPS - 1]) / probe_steps
    overhead = max(0.0, time.perf_counter() - began - probe["train"]["seconds"])
    steps = max(1, int((budget - overhead) / per_step))
    began = time.perf_counter()
    info = run_training(dataclasses.replace(base, max_steps=steps, output_dir=str(out / "train")))["train"]
    return {"seconds": round(time.perf_counter() - began, 1), "steps": info["steps"], "loop_seconds": info["seconds"],
            "seconds_per_step": round(per_step, 4), "overhead_seconds": round(overhead, 1),
            "budget_seconds": round(budget, 1), "model": str(out / "train" / "model")}


def our_rows(run: Run, args: argparse.Namespace, work: Path, cache: dict[str, Any]) -> dict[str, Any]:
    """BM25, the zero-shot start, teacher and student as the run reports them; ``_``: what the baselines need."""
    from distilrank.config import config_to_dict

    teacher_cfg, student_cfg = run.config(args.teacher_stage), run.config(args.student_stage)
    evals = {who: run.eval_of(run.path / stage / "model")
             for who, stage in (("teacher", args.teacher_stage), ("student", args.student_stage))}
    if not all(evals.values()):
        sys.exit(f"{run.path}: no finished eval stage scores the {min(evals, key=lambda k: bool(evals[k]))} model")
    if Path(teacher_cfg.train_file).suffix and not Path(teacher_cfg.train_file).exists():
        sys.exit(f"{run.path}: the teacher's train_file {teacher_cfg.train_file} is gone (or relative elsewhere)")
    chain = run.distill_chain(student_cfg.model)
    distill = chain[0]
    budget_names = args.budget_stages.split(",") if args.budget_stages else [*chain, args.student_stage]
    budget = sum(float(run.record(n)["seconds"]) for n in budget_names)
    train_s, steps = run.train_seconds(args.teacher_stage)
    key = json.dumps([config_to_dict(run.config(evals["teacher"])) | {"output_dir": ""}, teacher_cfg.model])
    if key not in cache:  # the same start on the same dev data is scored once
        cache[key] = zero_shot(run, evals["teacher"], teacher_cfg.model, work / f"zero-shot-{len(cache)}")
    teacher, student = run.record(evals["teacher"])["result"], run.record(evals["student"])["result"]
    return {"BM25": figures(teacher, "first_stage"), "zero-shot start": figures(cache[key]),
            "teacher (ours)": {**figures(teacher), "seconds": train_s, "steps": steps,
                               "stage_seconds": run.record(args.teacher_stage)["seconds"]},
            "student (ours)": {**figures(student), "seconds": round(budget, 1), "budget_stages": budget_names},
            "_": {"teacher_cfg": teacher_cfg, "evals": evals, "distill": distill}}


def seed_rows(run: Run, seed: int, work: Path, cache: dict[str, Any], args: argparse.Namespace,
              ) -> dict[str, dict[str, Any]]:
    """Every row for one (run, seed): ours read from the run folder, the baselines trained here."""
    rows = our_rows(run, args, work, cache)
    need = rows.pop("_")
    if "st" not in args.skip:
        teacher = rows["teacher (ours)"]
        info = train_st(need["teacher_cfg"], teacher["seconds"], teacher["steps"], seed, work / "st",
                        args.batch_sampler)
        scored = evaluate(run.config(need["evals"]["teacher"]), work / "st" / "model", work / "st-eval")
        rows["sentence-transformers trainer"] = {**figures(scored), **info}
    if "copied" not in args.skip:
        began = time.perf_counter()
        start = copy_layers(run.config(need["distill"]), work / "copied-start")
        copy_s = time.perf_counter() - began
        budget = rows["student (ours)"]["seconds"]
        info = train_copied(need["teacher_cfg"], start, budget - copy_s, seed, work / "copied", args.probe_steps)
        info.update(seconds=round(info["seconds"] + copy_s, 1), copy_seconds=round(copy_s, 1), budget_seconds=budget)
        scored = evaluate(run.config(need["evals"]["student"]), info["model"], work / "copied-eval")
        rows["copied layers"] = {**figures(scored), **info}
    return {name: rows[name] for name in ROWS if name in rows}


def mean_rows(per_seed: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in ROWS:
        rows = [rows[name] for rows in per_seed.values() if name in rows]
        if rows:
            out[name] = {k: statistics.mean(r[k] for r in rows) if all(r.get(k) is not None for r in rows) else None
                         for k in ("nDCG@10", "MRR@10", "pairs/s", "seconds")}
            out[name]["nDCG@10 per seed"] = [r["nDCG@10"] for r in rows]
    return out


TARGETS = (("teacher - zero-shot start", "teacher (ours)", "zero-shot start", 0.02),  # (name, a, b, bar)
           ("teacher - sentence-transformers trainer", "teacher (ours)", "sentence-transformers trainer", 0.01),
           ("student / teacher", "student (ours)", "teacher (ours)", 0.97),
           ("student - copied layers", "student (ours)", "copied layers", 0.0),
           ("student / teacher pairs/s", "student (ours)", "teacher (ours)", 1.9))


def targets(per_seed: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Issue 19's targets: a - b (or a / b) of nDCG@10 (or pairs/s) per seed, their mean, seeds over the bar."""
    out = []
    for name, a, b, bar in TARGETS:
        metric = "pairs/s" if name.endswith("pairs/s") else "nDCG@10"
        values = [r[a][metric] / r[b][metric] if "/" in name else r[a][metric] - r[b][metric]
                  for r in per_seed.values() if r.get(a, {}).get(metric) and r.get(b, {}).get(metric)]
        if values:
            over = sum(v > bar if bar == 0 else v >= bar for v in values)  # "beats" at 0, "at least" otherwise
            out.append({"check": name if metric == "pairs/s" else f"nDCG@10 {name}", "mean": statistics.mean(values),
                        "per_seed": values, "bar": bar, "seeds_over_bar": over})
    return out


def markdown(results: dict[str, Any]) -> str:
    def cell(v: Any, digits: int = 4) -> str:
        return "-" if v is None else f"{v:,.{digits}f}"

    lines = ["| system | nDCG@10 | MRR@10 | pairs/s | seconds | nDCG@10 per seed |", "|---|---:|---:|---:|---:|---|"]
    for name, r in results["mean"].items():
        seeds = ", ".join(cell(v) for v in r["nDCG@10 per seed"])
        lines.append(f"| {name} | {cell(r['nDCG@10'])} | {cell(r['MRR@10'])} | {cell(r['pairs/s'], 0)} | "
                     f"{cell(r['seconds'], 0)} | {seeds} |")
    lines += ["", "| target | mean | bar | seeds over it | per seed |", "|---|---:|---:|---:|---|"]
    for t in results["targets"]:
        fmt = "{:.3f}" if "/" in t["check"] else "{:+.4f}"
        lines.append(f"| {t['check']} | {fmt.format(t['mean'])} | {t['bar']} | {t['seeds_over_bar']}/"
                     f"{len(t['per_seed'])} | " + ", ".join(fmt.format(v) for v in t["per_seed"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet_transformers()
    runs = [Run(p) for p in args.run_list]
    seeds = args.seed_list or [r.config(args.teacher_stage).seed for r in runs]
    pairs = list(zip(runs, seeds)) if len(runs) > 1 else [(runs[0], s) for s in seeds]
    results = results_header(args, argv)
    began, per_seed, cache = time.perf_counter(), {}, {}
    with tempfile.TemporaryDirectory(prefix="bench-baselines-") as tmp:
        work = args.work_dir or Path(tmp)
        for k, (run, seed) in enumerate(pairs):
            print(f"== {run.path} seed {seed} ({k + 1}/{len(pairs)})", flush=True)
            key = f"{run.path.name}:{seed}" if len(runs) > 1 else f"{seed}"
            per_seed[key] = seed_rows(run, seed, work / f"{k}-{run.path.name}-seed{seed}", cache, args)
    results.update(runs=[str(r.path) for r, _ in pairs], seeds=seeds, per_seed=per_seed, mean=mean_rows(per_seed),
                   targets=targets(per_seed))
    save_results(results, args.out, began)
    print(markdown(results))
    print(f"\nwrote {args.out} ({results['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
