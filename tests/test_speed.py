"""``distilrank speed``: models timed on the same pairs, back to back, in alternating order; as a pipeline stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from distilrank.config import SpeedConfig
from distilrank.evaluation.speed import format_speed, run_speed, speed_pairs, time_scorers


def test_time_scorers_alternates_the_order_and_takes_the_median() -> None:
    """A fake clock: each call of a scorer advances it by that scorer's seconds for the pass."""
    now = [0.0]
    calls: list[tuple[str, int]] = []
    per_pass = {"slow": iter([9.0, 4.0, 5.0, 6.0]), "fast": iter([9.0, 2.0, 3.0, 1.0])}  # warm-up first

    def scorer(name: str):
        def score(pairs):
            calls.append((name, len(pairs)))
            now[0] += next(per_pass[name])
        return score

    pairs = [("q", f"d{i}") for i in range(120)]
    timed = time_scorers({"slow": scorer("slow"), "fast": scorer("fast")}, pairs, repeats=3, warmup=64,
                         clock=lambda: now[0])
    assert calls == [("slow", 64), ("fast", 64),  # one warm-up each, then passes: forward, reversed, forward
                     ("slow", 120), ("fast", 120), ("fast", 120), ("slow", 120), ("slow", 120), ("fast", 120)]
    assert timed["slow"] == {"seconds": [4.0, 5.0, 6.0], "pairs_per_second": 24.0, "speedup": 1.0}  # 120 / 5
    assert timed["fast"] == {"seconds": [2.0, 3.0, 1.0], "pairs_per_second": 60.0, "speedup": 2.5}  # 120 / 2

    per_pass = {"slow": iter([1.0, 4.0]), "fast": iter([1.0, 2.0])}
    timed = time_scorers({"slow": scorer("slow"), "fast": scorer("fast")}, pairs, repeats=1, clock=lambda: now[0],
                         reference="fast")
    assert timed["fast"]["speedup"] == 1.0 and timed["slow"]["speedup"] == 0.5


def test_the_pairs_are_those_eval_reranks_first(tiny_beir: Path) -> None:
    from distilrank.evaluation.ranking import evaluate_reranking
    from distilrank.evaluation.run import first_stage_run, resolve_dataset

    seen: list[tuple[str, str]] = []

    def recording(pairs):
        seen.extend(pairs)
        return [0.0] * len(pairs)

    dataset, given = resolve_dataset(str(tiny_beir), "test")
    evaluate_reranking(dataset, first_stage_run(dataset, given, 4), recording, 4)
    pairs = speed_pairs(SpeedConfig(models=("m",), data=str(tiny_beir), top_k=4, pairs=7))
    assert len(pairs) == 7 and pairs == seen[:7]
    assert [q for q, _ in pairs] == [seen[0][0]] * 4 + [seen[4][0]] * 3  # query order, each query's top 4
    everything = speed_pairs(SpeedConfig(models=("m",), data=str(tiny_beir), top_k=4, pairs=10_000))
    assert everything == seen  # fewer pairs than asked: all of them


def test_run_speed_times_real_models_and_writes_metrics(tmp_path: Path, tiny_beir: Path, tiny_model: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = SpeedConfig(models=(str(tiny_model), str(tiny_model)), names=("first", "second"),
                      data=str(tiny_beir), top_k=3, pairs=20, repeats=2, output_dir=str(tmp_path / "out"))
    result = run_speed(cfg)
    assert result["pairs"] == 20 and result["repeats"] == 2 and result["reference"] == "first"
    rows = {r["name"]: r for r in result["models"]}
    assert list(rows) == ["first", "second"]
    assert rows["first"]["speedup"] == 1.0 and rows["second"]["speedup"] > 0
    assert len(rows["second"]["seconds"]) == 2 and rows["second"]["model"] == str(tiny_model)
    assert rows["first"]["model_layers"] == 2 and 0 < rows["first"]["model_parameters"] < 1e6
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["models"] == result["models"] and (tmp_path / "out" / "config.yaml").is_file()
    out = capsys.readouterr().out
    assert format_speed(result["models"]) in out and "| first " in out and "1.00x" in out


@pytest.mark.parametrize("settings, message", [
    ([], "models is required"),
    (["models=a,b", "names=x"], "names gives 1 labels for 2 models"),
    (["models=a,a"], "models repeats a path"),
    (["models=a,b", "names=x,x"], "names repeats one"),
    (["models=a", "pairs=0"], "pairs must be > 0"),
    (["models=a", "encoder=dual"], "encoder must be"),
    (["models=a,b", "names=x,y", "reference=z"], "reference 'z' is not one of the models' labels (x, y)"),
])
def test_bad_settings_are_one_line_exit_2(settings: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from distilrank.cli import main

    assert main(["speed", *settings]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("distilrank speed: error: ") and message in err and len(err.splitlines()) == 1


def test_a_speed_stage_in_a_pipeline_summary(tmp_path: Path, tiny_beir: Path, tiny_model: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from distilrank.pipeline import load_plan, read_state, run_pipeline

    doc = {"variables": {"output_dir": str(tmp_path / "run"), "model": str(tiny_model)},
           "stages": {
               "copied": {"command": "export", "model": "${model}"},
               "scored": {"command": "eval", "data": str(tiny_beir), "model": "${model}", "top_k": 3},
               "timed": {"command": "speed", "models": ["${model}", "${copied.model}"], "names": ["torch", "onnx"],
                         "reference": "onnx", "data": str(tiny_beir), "top_k": 3, "pairs": 12, "repeats": 1},
           }}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    plan = load_plan(path)
    assert plan.stage("timed").depends == ("copied",)
    summary = run_pipeline(plan)
    assert [r["name"] for r in summary["speed"][0]["models"]] == ["torch", "onnx"]
    md = (tmp_path / "run" / "summary.md").read_text()
    assert "compare speeds in the back-to-back table below" in md
    assert "Scoring speed, back to back (stage 'timed'): the same 12 first-stage pairs, median of 1 passes" in md
    assert "; speedup over onnx" in md and summary["speed"][0]["models"][1]["speedup"] == 1.0
    assert format_speed(summary["speed"][0]["models"]) in md
    capsys.readouterr()
    run_pipeline(load_plan(path))  # done: skipped, not timed again
    assert "[speed]" not in capsys.readouterr().out
    assert read_state(load_plan(path))["stages"]["timed"]["status"] == "done"


def test_a_speed_stage_fingerprints_each_model_it_lists(tmp_path: Path, tiny_beir: Path, tiny_model: Path) -> None:
    """models is a list: paths inside the run folder count relative to it (a copied run keeps the stage) and a
    model folder outside it counts by content (a changed model reruns the stage)."""
    import shutil

    from distilrank.pipeline.run import fingerprints

    outside = shutil.copytree(tiny_model, tmp_path / "outside")
    doc = {"variables": {"output_dir": str(tmp_path / "a")},
           "stages": {"copied": {"command": "export", "model": str(tiny_model)},
                      "timed": {"command": "speed", "models": [str(outside), "${copied.model}"],
                                "data": str(tiny_beir)}}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    from distilrank.pipeline import load_plan

    first = fingerprints(load_plan(path))["timed"]
    assert fingerprints(load_plan(path, [f"output_dir={tmp_path / 'b'}"]))["timed"] == first
    (outside / "config.json").write_text((outside / "config.json").read_text().replace("{", '{"note": 1, ', 1))
    assert fingerprints(load_plan(path))["timed"] != first
