"""``distilrank pipeline``: plan resolution, bad input, skipping, rerunning, resuming, the summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from distilrank.errors import ConfigError
from distilrank.pipeline import describe_plan, load_plan, read_state, run_pipeline
from distilrank.pipeline.run import StageFailed


def write_pipeline(folder: Path, beir: Path, model: Path, **changes: object) -> Path:
    """mine -> train (cross-encoder, 2 steps, a checkpoint at step 1) -> eval, plus a first-stage-only eval."""
    doc = {
        "description": "tiny test pipeline",
        "variables": {"output_dir": str(folder / "run"), "data": str(beir), "model": str(model), "seed": 7,
                      "steps": 2, "split_suffix": "st"},
        "stages": {
            "bm25": {"command": "eval", "data": "${data}", "top_k": 5},
            "mined": {"command": "mine", "data": "${data}", "num_negatives": 3, "rank_max": 10, "seed": "${seed}"},
            "trained": {"command": "train", "train_file": "${mined.output}", "model": "${model}", "loss": "listwise",
                        "group_size": 4, "batch_size": 4, "max_steps": "${steps}", "save_steps": 1,
                        "max_length": 32, "seed": "${seed}"},
            "scored": {"command": "eval", "data": "${data}", "model": "${trained.model}", "top_k": 5,
                       "split": "te${split_suffix}", "max_length": 32},
        },
    }
    for key, value in changes.items():  # "stages.trained.loss": "bce" style edits
        *parents, last = key.split(".")
        node = doc
        for p in parents:
            node = node[p]
        if value is ...:  # ... deletes the key; None writes null
            node.pop(last, None)
        else:
            node[last] = value
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_references_substitute_with_types(tmp_path: Path, tiny_beir: Path, tiny_model: Path) -> None:
    plan = load_plan(write_pipeline(tmp_path, tiny_beir, tiny_model))
    run = tmp_path / "run"
    trained, scored = plan.stage("trained"), plan.stage("scored")
    assert [s.name for s in plan.stages] == ["bm25", "mined", "trained", "scored"]
    assert trained.config.seed == 7 and trained.config.max_steps == 2  # whole-string references keep the int
    assert trained.config.train_file == str(run / "mined" / "mined.jsonl") == plan.stage("mined").outputs["output"]
    assert trained.config.output_dir == str(run / "trained")
    assert scored.config.model == str(run / "trained" / "model") and scored.config.split == "test"  # embedded
    assert trained.depends == ("mined",) and scored.depends == ("trained",) and plan.stage("bm25").depends == ()
    assert plan.stage("scored").settings()["top_k"] == 5 and "fusion_weight" not in scored.settings()


def test_variables_overridden_on_the_command_line(tmp_path: Path, tiny_beir: Path, tiny_model: Path) -> None:
    path = write_pipeline(tmp_path, tiny_beir, tiny_model)
    plan = load_plan(path, ["seed=14", f"output_dir={tmp_path / 'other'}"])
    assert plan.stage("trained").config.seed == 14 and plan.stage("mined").config.seed == 14
    assert plan.stage("trained").folder == tmp_path / "other" / "trained"
    with pytest.raises(ConfigError, match="unknown variable 'sed'; did you mean 'seed'"):
        load_plan(path, ["sed=3"])


BAD = [
    ({"stages.trained.train_file": "${minned.output}"}, "stage 'trained' (train): train_file: ${minned.output} "
                                                        "refers to unknown stage 'minned'; did you mean 'mined'"),
    ({"stages.trained.train_file": "${mined.outptu}"}, "stage 'mined' (mine) has no key 'outptu'; did you mean "
                                                       "'output'"),
    ({"stages.trained.seed": "${sed}"}, "stage 'trained' (train): seed: unknown variable ${sed}; did you mean 'seed'"),
    ({"stages.bm25.top_k": "${trained.max_length}"}, "stage 'bm25' (eval): top_k: ${trained.max_length} refers to "
                                                        "stage 'trained', which runs later"),
    ({"stages.mined.seed": "${scored.top_k}", "stages.scored.top_k": "${trained.max_length}",
      "stages.trained.max_length": "${mined.rank_max}"}, "cycle: mined -> scored -> trained -> mined"),
    ({"stages.trained.loss": "bogus"}, "stage 'trained' (train): loss must be one of"),
    ({"stages.trained.lossy": "bce"}, "stage 'trained' (train): unknown TrainConfig key 'lossy'; did you mean 'loss'"),
    ({"stages.trained.max_steps": "many"}, "stage 'trained' (train): max_steps must be an integer"),
    ({"variables.teacher": None, "stages.trained.model": "${teacher}"},
     "variable 'teacher' is not set; pass teacher=... on the command line"),
    ({"stages.trained.output_dir": "elsewhere"}, "stage 'trained' (train): output_dir is set by the pipeline"),
    ({"stages.mined.output": "x.jsonl"}, "stage 'mined' (mine): output is set by the pipeline"),
    ({"stages.mined.command": "mien"}, "stage 'mined' has unknown command 'mien'; did you mean 'mine'"),
    ({"stages.trained.train_file": "missing.jsonl"}, "stage 'trained' (train): train_file: missing.jsonl does not exist"),
    ({"variables.output_dir": ...}, "variables must set output_dir"),
    ({"variables.output_dir": None}, "variable 'output_dir' is not set"),
]


@pytest.mark.parametrize(("changes", "message"), BAD, ids=[m.split(":")[-1][:40] for _, m in BAD])
def test_bad_input_is_one_error_before_anything_runs(tmp_path: Path, tiny_beir: Path, tiny_model: Path,
                                                      changes: dict, message: str) -> None:
    path = write_pipeline(tmp_path, tiny_beir, tiny_model, **changes)
    with pytest.raises(ConfigError) as info:
        load_plan(path)
    assert message in str(info.value)
    assert str(info.value).startswith(str(path))
    assert not (tmp_path / "run").exists()


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path: Path, tiny_beir: Path, tiny_model: Path) -> None:
    text = describe_plan(load_plan(write_pipeline(tmp_path, tiny_beir, tiny_model)))
    assert "3/4 trained (train): would run (not run yet)" in text
    assert "    max_length: 32" in text and "loss:" not in text and f"train_file: {tmp_path / 'run' / 'mined' / 'mined.jsonl'}" in text
    assert "(reads from: mined)" in text and "tiny test pipeline" in text
    assert not (tmp_path / "run").exists()


def _stage_lines(out: str) -> dict[str, str]:
    """Stage name -> its first [pipeline] line in ``out``."""
    lines = {}
    for line in out.splitlines():
        if line.startswith("[pipeline] stage "):
            lines.setdefault(line.split()[3], line)
    return lines


def test_run_skip_rerun_and_resume(tmp_path: Path, tiny_beir: Path, tiny_model: Path,
                                   capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    beir = shutil.copytree(tiny_beir, tmp_path / "beir")  # this test changes its data
    path = write_pipeline(tmp_path, beir, tiny_model)
    run = tmp_path / "run"
    summary = run_pipeline(load_plan(path))
    state = read_state(load_plan(path))
    assert {n: r["status"] for n, r in state["stages"].items()} == dict.fromkeys(
        ("bm25", "mined", "trained", "scored"), "done")
    assert (run / "trained" / "model").is_dir() and (run / "mined" / "mined.jsonl").is_file()
    assert [r["system"] for r in summary["evals"]] == ["bm25", "scored"]  # bm25 is a first-stage-only eval
    row = summary["evals"][1]
    assert row["layers"] == 2 and 0 < row["params (M)"] < 1 and row["pairs/s"] > 0 and 0 <= row["nDCG@10"] <= 1
    for name in ("summary.json", "summary.md", "summary.png"):
        assert (run / name).is_file()
    assert "| scored" in (run / "summary.md").read_text()
    capsys.readouterr()

    model_time = (run / "trained" / "model").stat().st_mtime_ns
    run_pipeline(load_plan(path))  # everything done: every stage skipped, nothing rewritten
    lines = _stage_lines(capsys.readouterr().out)
    assert all(line.endswith("skipped (done)") for line in lines.values()) and len(lines) == 4
    assert (run / "trained" / "model").stat().st_mtime_ns == model_time

    import os

    from distilrank.pipeline.run import plan_steps

    moved = tmp_path / "copied-run"  # a copied run folder keeps its finished stages; a new seed reruns from train
    shutil.copytree(run, moved)
    plan = load_plan(path, [f"output_dir={moved}"])
    assert {s.stage.name: s.action for s in plan_steps(plan, read_state(plan))} == dict.fromkeys(
        ("bm25", "mined", "trained", "scored"), "skip")
    plan = load_plan(path, [f"output_dir={moved}", "seed=8"])
    assert [s.action for s in plan_steps(plan, read_state(plan))] == ["skip", "run", "run", "run"]
    corpus = beir / "corpus.jsonl"
    for f in beir.iterdir():  # the data provisioned again: new modification times, the same bytes
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**12))
    plan = load_plan(path, [f"output_dir={moved}"])
    assert [s.action for s in plan_steps(plan, read_state(plan))] == ["skip"] * 4
    original = corpus.read_bytes()
    corpus.write_bytes(original.replace(b"a", b"e", 1))  # other bytes, the same size: every stage reads the data
    assert corpus.stat().st_size == len(original)
    assert [s.action for s in plan_steps(plan, read_state(plan))] == ["run"] * 4
    corpus.write_bytes(original)
    os.utime(corpus, ns=(corpus.stat().st_atime_ns, corpus.stat().st_mtime_ns + 2 * 10**12))  # not the edit's time

    run_pipeline(load_plan(path, ["steps=3"]))  # train changed: it and what reads it run, the rest is skipped
    lines = _stage_lines(capsys.readouterr().out)
    assert lines["mined"].endswith("skipped (done)") and lines["bm25"].endswith("skipped (done)")
    assert "settings or inputs changed" in lines["trained"] and "stage 'trained' runs again" in lines["scored"]
    assert json.loads((run / "trained" / "metrics.json").read_text())["train"]["steps"] == 3

    import distilrank.evaluation.run as eval_run

    real_eval = eval_run.run_eval

    def broken(cfg: object) -> dict:
        from distilrank.errors import DataError

        raise DataError("the eval broke")

    monkeypatch.setattr(eval_run, "run_eval", broken)
    with pytest.raises(StageFailed, match="stage 'scored' \\(eval\\) failed: the eval broke; the stages before it "
                                          "are kept; rerun"):
        run_pipeline(load_plan(path, ["steps=2"]))
    state = read_state(load_plan(path))
    assert state["stages"]["trained"]["status"] == "done" and state["stages"]["scored"]["status"] == "failed"
    assert (run / "trained" / "model").is_dir()
    capsys.readouterr()
    monkeypatch.setattr(eval_run, "run_eval", real_eval)
    run_pipeline(load_plan(path, ["steps=2"]))  # resumes at the failed stage
    lines = _stage_lines(capsys.readouterr().out)
    assert lines["trained"].endswith("skipped (done)") and "failed earlier" in lines["scored"]
    assert read_state(load_plan(path))["stages"]["scored"]["status"] == "done"


def test_killed_training_stage_resumes_from_its_checkpoint(tmp_path: Path, tiny_beir: Path, tiny_model: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = write_pipeline(tmp_path, tiny_beir, tiny_model, **{"stages.scored": ..., "stages.bm25": ...})
    run = tmp_path / "run"
    run_pipeline(load_plan(path))
    # as if killed after the checkpoint at step 1: no model yet, the state still says running
    import shutil

    shutil.rmtree(run / "trained" / "model")
    state_file = run / "pipeline.json"
    state = json.loads(state_file.read_text())
    state["stages"]["trained"]["status"] = "running"
    state_file.write_text(json.dumps(state))
    assert "would resume" in describe_plan(load_plan(path))
    capsys.readouterr()
    run_pipeline(load_plan(path))
    lines = _stage_lines(capsys.readouterr().out)
    assert "resuming" in lines["trained"] and lines["mined"].endswith("skipped (done)")
    log = [json.loads(line) for line in (run / "trained" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r][-1] == 2 and (run / "trained" / "model").is_dir()
    assert read_state(load_plan(path))["stages"]["trained"]["status"] == "done"
    # killed after its model was saved but before it was recorded: trained again from a cleared folder
    state = json.loads(state_file.read_text())
    state["stages"]["trained"]["status"] = "running"
    state_file.write_text(json.dumps(state))
    assert "2/2 trained (train): would run (running earlier; starts over)" in describe_plan(load_plan(path))


def test_a_folder_the_pipeline_did_not_write_is_not_cleared(tmp_path: Path, tiny_beir: Path,
                                                             tiny_model: Path) -> None:
    path = write_pipeline(tmp_path, tiny_beir, tiny_model)
    (tmp_path / "run" / "trained").mkdir(parents=True)
    (tmp_path / "run" / "trained" / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="already exists and was not written by this pipeline"):
        run_pipeline(load_plan(path))
    assert (tmp_path / "run" / "trained" / "precious.txt").is_file()
    assert not (tmp_path / "run" / "mined").exists()


def test_cli_errors_are_one_line_exit_2(tmp_path: Path, tiny_beir: Path, tiny_model: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from distilrank.cli import main

    path = write_pipeline(tmp_path, tiny_beir, tiny_model, **{"stages.trained.loss": "bogus"})
    assert main(["pipeline", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("distilrank pipeline: error: ") and "stage 'trained' (train)" in err
    assert len(err.splitlines()) == 1
    assert main(["pipeline", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    good = write_pipeline(tmp_path, tiny_beir, tiny_model)
    assert main(["pipeline", str(good), "--dry-run", "seed=3"]) == 0
    out = capsys.readouterr().out
    assert "seed: 3" in out and "would run" in out and not (tmp_path / "run").exists()


def test_outputs_of_every_command(tmp_path: Path, tiny_beir: Path, tiny_model: Path) -> None:
    stages = {
        "student": {"command": "distill-mlm", "data": str(tiny_beir / "corpus.jsonl"), "teacher": str(tiny_model),
                    "max_steps": 2},
        "labels": {"command": "label", "teacher": str(tiny_model), "data": str(tiny_beir), "shard": "1/2"},
        "tuned": {"command": "train", "train_file": "${labels.output}", "model": "${student.model}", "loss": "kl"},
        "onnx": {"command": "export", "model": "${tuned.model}", "quantize": "int8"},
        "scored": {"command": "eval", "model": "${onnx.model}", "data": str(tiny_beir)},
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"variables": {"output_dir": str(tmp_path / "r")}, "stages": stages}, sort_keys=False))
    plan = load_plan(path)
    run = tmp_path / "r"
    assert plan.stage("labels").outputs["output"] == str(run / "labels" / "labels.1-of-2.jsonl")
    assert plan.stage("labels").config.output == str(run / "labels" / "labels.jsonl")
    assert plan.stage("tuned").config.model == str(run / "student" / "model")
    assert plan.stage("onnx").config.model == str(run / "tuned" / "model")
    assert plan.stage("scored").config.model == str(run / "onnx") == plan.stage("onnx").config.output_dir
    assert plan.stage("scored").depends == ("onnx",) and plan.stage("tuned").depends == ("labels", "student")


def test_a_path_into_an_earlier_stage_folder_is_a_dependency(tmp_path: Path, tiny_beir: Path,
                                                             tiny_model: Path) -> None:
    path = write_pipeline(tmp_path, tiny_beir, tiny_model,
                          **{"stages.scored.model": "${output_dir}/trained/model"})
    plan = load_plan(path)
    assert plan.stage("scored").depends == ("trained",)


def test_packaged_demo_pipeline_has_the_demo_settings(tmp_path: Path) -> None:
    """`distilrank pipeline demo` runs what `distilrank demo` runs, stage by stage (same figures)."""
    from distilrank.config import DemoConfig
    from distilrank.pipeline import resolve_pipeline_path

    assert resolve_pipeline_path("demo") == resolve_pipeline_path(Path(__file__).parents[1] / "configs"
                                                                  / "pipelines" / "demo.yaml").resolve()
    plan = load_plan("demo", [f"output_dir={tmp_path}"])
    demo = DemoConfig()
    stages = {s.name: s.config for s in plan.stages}
    assert list(stages) == ["distill", "negatives", "untrained", "train", "reranker", "reranker_bm25"]
    distill, mine, train = stages["distill"], stages["negatives"], stages["train"]
    assert (distill.data, distill.teacher, distill.max_steps, distill.batch_size, distill.learning_rate) == (
        f"demo:{demo.seed}", demo.model, demo.distill_steps, demo.distill_batch_size, demo.distill_learning_rate)
    assert (distill.alpha_ce, distill.alpha_mlm, distill.alpha_cos, distill.head_fit_steps, distill.seed) == (
        demo.alpha_ce, demo.alpha_mlm, demo.alpha_cos, demo.head_fit_steps, demo.seed)
    assert (distill.layers, distill.min_words, distill.eval_blocks) == (demo.student_layers, 0, 128)
    assert (mine.num_negatives, mine.rank_max, mine.seed) == (demo.group_size - 1, demo.rank_max, demo.seed)
    assert (train.model, train.train_file) == (plan.stage("distill").outputs["model"],
                                               plan.stage("negatives").outputs["output"])
    assert (train.loss, train.max_steps, train.batch_size, train.group_size, train.max_length) == (
        demo.loss, demo.max_steps, demo.batch_size, demo.group_size, demo.max_length)
    assert (train.learning_rate, train.warmup_ratio, train.seed, train.num_layers) == (
        demo.learning_rate, demo.warmup_ratio, demo.seed, demo.num_layers)
    for name in ("untrained", "reranker", "reranker_bm25"):
        cfg = stages[name]
        assert (cfg.data, cfg.top_k, cfg.max_length, cfg.split) == (f"demo:{demo.seed}", demo.top_k,
                                                                    demo.max_length, "test")
    assert stages["untrained"].encoder == "bi" and stages["reranker_bm25"].fusion_weight == demo.fusion_weight
    assert load_plan("demo", [f"output_dir={tmp_path}", "seed=14"]).stage("negatives").config.data == "demo:14"


def test_distill_mlm_reads_the_demo_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import distilrank.data.demo as demo_data
    from distilrank.training.distill import corpus_spec

    monkeypatch.setattr(demo_data, "demo_folder", lambda seed=13: tmp_path / f"seed{seed}")
    assert corpus_spec("demo") == str(tmp_path / "seed13" / "corpus.jsonl")
    assert corpus_spec("demo:14") == str(tmp_path / "seed14" / "corpus.jsonl")
    assert corpus_spec("wiki.txt") == "wiki.txt"
    with pytest.raises(ConfigError, match="demo:SEED"):
        corpus_spec("demo:x")


def test_an_unfinished_label_stage_keeps_its_partial_file(tmp_path: Path, tiny_beir: Path, tiny_model: Path) -> None:
    from distilrank.pipeline.run import _clear, fingerprints, plan_steps

    path = tmp_path / "p.yaml"
    stages = {"labels": {"command": "label", "teacher": str(tiny_model), "data": str(tiny_beir)},
              "scored": {"command": "eval", "data": str(tiny_beir), "model": str(tiny_model)}}
    path.write_text(yaml.safe_dump({"variables": {"output_dir": str(tmp_path / "r")}, "stages": stages}))
    plan = load_plan(path)
    folder = tmp_path / "r" / "labels"
    folder.mkdir(parents=True)
    (folder / "labels.jsonl.partial").write_text("{}\n")
    (folder / "labels.jsonl").write_text("{}\n")  # finished but not recorded: labelled again from the partial file
    (tmp_path / "r" / "scored").mkdir()
    (tmp_path / "r" / "scored" / "old.json").write_text("{}")
    prints = fingerprints(plan)
    state = {"stages": {"labels": {"fingerprint": prints["labels"], "status": "running"},
                        "scored": {"fingerprint": prints["scored"], "status": "failed"}}}
    steps = {s.stage.name: s for s in plan_steps(plan, state)}
    assert steps["labels"].action == "resume" and steps["scored"].action == "run"
    _clear(steps["labels"])
    assert (folder / "labels.jsonl.partial").is_file() and not (folder / "labels.jsonl").exists()
    _clear(steps["scored"])
    assert not (tmp_path / "r" / "scored").exists()
    state["stages"]["labels"]["fingerprint"] = "changed"
    assert plan_steps(plan, state)[0].action == "run"
