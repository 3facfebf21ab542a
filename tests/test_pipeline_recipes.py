"""The shipped recipes (msmarco, nfcorpus): the contract other tools rely on, checked without running them.

Running them is the benchmark (benchmarks/RESULTS.md, about 30 minutes each on 2 CPU cores); here every
stage is resolved and validated exactly as ``distilrank pipeline`` does before it runs anything.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from distilrank.errors import ConfigError
from distilrank.pipeline import load_plan

RECIPES = {
    "msmarco": ("groups.jsonl", "trec-dl-2019"),
    "nfcorpus": ("nfcorpus", "nfcorpus"),
}


def _plan(name: str, tmp_path: Path, **extra: str):
    train, dev = RECIPES[name]
    for item in (train, dev):  # the plan checks that input files exist; folders are read when a stage runs
        (tmp_path / item).touch() if item.endswith(".jsonl") else (tmp_path / item).mkdir(exist_ok=True)
    if name == "nfcorpus":
        (tmp_path / train / "corpus.jsonl").touch()  # the distillation text
    overrides = [f"train_data={tmp_path / train}", f"dev_data={tmp_path / dev}", f"output_dir={tmp_path / 'run'}"]
    return load_plan(name, overrides + [f"{k}={v}" for k, v in extra.items()])


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_contract(name: str, tmp_path: Path) -> None:
    """Teacher and student land at OUTPUT/teacher/model and OUTPUT/student/model; the student has <= 3 layers
    taken from the teacher; every model is evaluated on the dev data beside the zero-shot start."""
    plan = _plan(name, tmp_path)
    run = tmp_path / "run"
    teacher, student = plan.stage("teacher"), plan.stage("student")
    assert teacher.command == student.command == "train"
    assert Path(teacher.outputs["model"]) == run / "teacher" / "model"
    assert Path(student.outputs["model"]) == run / "student" / "model"
    distill = plan.stage("distill")
    assert distill.command == "distill-mlm" and len(distill.config.layers) <= 3
    assert distill.config.teacher == teacher.outputs["model"]  # the student is built from the teacher's layers
    start = student.config.model  # the distilled model, or a train stage on top of it (embedding distillation)
    made = {s.outputs.get("model"): s for s in plan.stages if s.command == "train"}
    while start in made and start != distill.outputs["model"]:
        assert made[start].config.teacher in ("", teacher.outputs["model"])  # any teacher is the recipe's teacher
        start = made[start].config.model
    assert start == distill.outputs["model"] and student.config.encoder == "bi"
    labels = plan.stage("labels")
    assert labels.config.teacher == teacher.outputs["model"] and student.config.train_file == labels.config.output
    evals = {s.name: s.config for s in plan.stages if s.command == "eval"}
    assert evals["zero_shot"].model == "packaged:all-MiniLM-L6-v2"
    assert evals["teacher_eval"].model == teacher.outputs["model"]
    assert evals["student_eval"].model == student.outputs["model"]
    assert len({(c.data, c.split, c.top_k, c.relevance_level) for c in evals.values()}) == 1  # same dev setting
    assert all(Path(c.data) == tmp_path / RECIPES[name][1] for c in evals.values())
    speed = plan.stage("speed").config  # the speed figure: the three models on the same dev pairs, back to back
    assert speed.models == (evals["zero_shot"].model, teacher.outputs["model"], student.outputs["model"])
    assert (speed.data, speed.split, speed.top_k) == next((c.data, c.split, c.top_k) for c in evals.values())
    assert speed.batch_size == evals["teacher_eval"].batch_size


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_variables_are_required_and_overridable(name: str, tmp_path: Path) -> None:
    plan = _plan(name, tmp_path, seed=21)
    with pytest.raises(ConfigError, match="train_data"):
        load_plan(name, [f"dev_data={tmp_path}", f"output_dir={tmp_path / 'run'}"])
    assert {s.config.seed for s in plan.stages if hasattr(s.config, "seed")} == {21}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_budget_and_precision_variables(name: str, tmp_path: Path) -> None:
    """The CPU recipe by default (the settings RESULTS.md measured); a GPU run sets bf16 and larger budgets from the
    command line, and they reach the teacher, distill and student stages."""
    student_key, student_var, cpu_student = (("epochs", "student_epochs", 2) if name == "msmarco"
                                             else ("max_steps", "student_steps", 300))
    plan = _plan(name, tmp_path)
    teacher, distill, student = plan.stage("teacher"), plan.stage("distill"), plan.stage("student")
    assert (teacher.config.epochs, distill.config.max_steps, getattr(student.config, student_key)) == (1, 600,
                                                                                                        cpu_student)
    assert {teacher.config.mixed_precision, distill.config.mixed_precision, student.config.mixed_precision} == {"no"}
    gpu = _plan(name, tmp_path, mixed_precision="bf16", teacher_epochs=3, distill_steps=2400, **{student_var: 7})
    teacher, distill, student = gpu.stage("teacher"), gpu.stage("distill"), gpu.stage("student")
    assert (teacher.config.epochs, distill.config.max_steps, getattr(student.config, student_key)) == (3, 2400, 7)
    assert {teacher.config.mixed_precision, distill.config.mixed_precision, student.config.mixed_precision} == {"bf16"}
    with pytest.raises(ConfigError, match="mixed_precision"):
        _plan(name, tmp_path, mixed_precision="fp8")
