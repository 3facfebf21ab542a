import json
import subprocess
import sys
from pathlib import Path

import pytest

from distilrank.cli import main
from distilrank.config import DemoConfig, DistillConfig, TrainConfig, load_config, load_stages

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", ["demo", "mine", "train", "eval", "rank"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and "key=value" in out


def test_console_script_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "distilrank.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "demo" in proc.stdout


def test_bad_input_is_one_clear_line_without_traceback(tmp_path, tiny_model, capsys):
    bad = tmp_path / "train.jsonl"
    bad.write_text('{"query": "q", "positive": "p", "negative": "n"}\n{"query": "q", "positive": ""}\n')
    code = main(["train", f"train_file={bad}", f"model={tiny_model}", f"output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{bad}:2" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "model").exists()


def test_unknown_key_names_the_closest_one(capsys):
    assert main(["eval", "top_kk=3"]) == 2
    assert "did you mean 'top_k'" in capsys.readouterr().err


def test_mine_train_eval_rank_pipeline(tmp_path, tiny_model, demo_beir, capsys):
    groups = tmp_path / "groups.jsonl"
    assert main(["mine", f"data={demo_beir}", "split=dev", f"output={groups}", "num_negatives=3"]) == 0
    assert len(groups.read_text().splitlines()) == 100
    out = tmp_path / "run"
    assert main(["train", f"train_file={groups}", f"model={tiny_model}", f"output_dir={out}", "max_steps=3",
                 "batch_size=2", "group_size=4", "max_length=48"]) == 0
    assert (out / "model" / "config.json").exists()
    ev = tmp_path / "eval"
    assert main(["eval", f"data={demo_beir}", f"model={out / 'model'}", "top_k=5", "max_queries=5",
                 f"output_dir={ev}"]) == 0
    report = json.loads((ev / "metrics.json").read_text())
    assert report["queries"] == 5 and "nDCG@10" in report["reranker"] and "recall_cap" in report
    assert (ev / "metrics.png").exists()
    docs = tmp_path / "docs.txt"
    docs.write_text("open a file\nsort a list\nread data\n")
    capsys.readouterr()
    assert main(["rank", f"model={out / 'model'}", "query=sort a list", f"documents={docs}", "top_k=2"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_rank_rejects_blank_lines(tmp_path, tiny_model, capsys):
    docs = tmp_path / "docs.txt"
    docs.write_text("one\n\nthree\n")
    assert main(["rank", f"model={tiny_model}", "query=q", f"documents={docs}"]) == 2
    assert f"{docs}:2" in capsys.readouterr().err


def test_shipped_configs_load():
    assert load_config(DemoConfig, ROOT / "configs" / "demo.yaml") == DemoConfig()  # it says: the default recipe
    for name in ("msmarco-triples-bce.yaml", "listwise-hard-negatives.yaml"):
        load_config(TrainConfig, ROOT / "configs" / name, ["train_file=x.jsonl"])
    wiki = load_config(DistillConfig, ROOT / "configs" / "distilbert-wikipedia.yaml")
    assert wiki.layers == (0, 2, 4, 7, 9, 11) and wiki.architecture == "distilbert"
    assert load_config(DistillConfig, ROOT / "configs" / "minilm-student-wiki.yaml").layers == (0, 3, 5)
    stages = load_stages(ROOT / "configs" / "inranker-t5.yaml")
    assert [name for name, _ in stages] == ["msmarco", "target"]
    assert all(cfg.loss == "logit_mse" for _, cfg in stages)
    shipped = {p.name for p in (ROOT / "configs").glob("*.yaml")}
    assert shipped == {"demo.yaml", "msmarco-triples-bce.yaml", "listwise-hard-negatives.yaml",
                       "distilbert-wikipedia.yaml", "minilm-student-wiki.yaml",
                       "inranker-t5.yaml", "squad.yaml", "rte-prompt.yaml", "mine-static.yaml",
                       "bi-encoder-triplet.yaml"}, "a new config needs a load test"
    from distilrank.config import MineConfig

    assert load_config(MineConfig, ROOT / "configs" / "mine-static.yaml", ["data=x", "output=y.jsonl"]).retriever == "static"
    assert load_config(TrainConfig, ROOT / "configs" / "bi-encoder-triplet.yaml", ["train_file=x.jsonl"]).loss == "triplet"


def test_distill_mlm_errors_are_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["distill-mlm", f"data={empty}", f"teacher={tmp_path / 'missing'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("distilrank distill-mlm: error: cannot load teacher") and err.count("\n") == 1
    assert main(["distill-mlm", f"data={empty}", "layers=0,x"]) == 2
    assert "layers must be an integer" in capsys.readouterr().err


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = next(line.strip().strip("`") for line in readme.splitlines() if "pytest" in line and "pip install" in line)
    assert test_cmd in ci


def test_library_debug_logs_stay_quiet_without_verbose(demo_beir, capsys):
    # bm25s sets its logger to DEBUG on import; without -v only warnings and errors may reach stderr
    assert main(["eval", f"data={demo_beir}", "split=test", "top_k=5", "max_queries=2"]) == 0
    assert "DEBUG" not in capsys.readouterr().err
