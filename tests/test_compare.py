"""``distilrank compare`` and per-run training curves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distilrank.cli import main
from distilrank.compare import compare_runs, plot_curves, read_run


def _run(folder: Path, metrics: dict, config: str = "model: m\n", log: list | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "config.yaml").write_text(config)
    if log is not None:
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return folder


NLI = {"task": "nli", "model": "minilm", "method": "prompt-20", "trainable_params": 8450, "total_params": 22_721_666,
       "train": {"seconds": 12.4}, "eval": {"accuracy": 0.61, "f1": 0.55, "loss": 0.7, "train_accuracy": 0.9,
                                            "confusion_matrix": [[1, 2], [3, 4]]}}
RERANK = {"train": {"steps": 5, "seconds": 40.0}, "reranker": {"nDCG@10": 0.5, "MRR@10": 0.6}}


def test_table_lists_model_method_params_metrics_and_time(tmp_path):
    a = _run(tmp_path / "prompt", NLI)
    b = _run(tmp_path / "rerank", RERANK, "model: packaged:all-MiniLM-L6-v2\nnum_layers: 3\n")
    table = compare_runs([str(a), str(b)], str(tmp_path / "chart.png"))
    lines = table.splitlines()
    assert lines[0] == "| run | task | model | method | trained params | accuracy | f1 | nDCG@10 | MRR@10 | train s |"
    assert lines[2] == "| prompt | nli | minilm | prompt-20 | 8.4k / 22.72M | 0.6100 | 0.5500 | - | - | 12 |"
    assert lines[3] == "| rerank | rerank | packaged:all-MiniLM-L6-v2 | first 3 layers | - / - | - | - | 0.5000 | 0.6000 | 40 |"
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"
    assert "train_accuracy" not in read_run(a).metrics


def test_cli_compare_prints_the_table_and_reports_bad_folders(tmp_path, capsys):
    a = _run(tmp_path / "a", NLI)
    b = _run(tmp_path / "b", {**NLI, "method": "full"})
    assert main(["compare", str(a), str(b), f"output={tmp_path / 'c.png'}"]) == 0
    out = capsys.readouterr().out
    assert "| a | nli |" in out and "| b | nli | minilm | full |" in out and (tmp_path / "c.png").exists()
    assert main(["compare", str(tmp_path / "missing")]) == 2
    assert "no metrics.json" in capsys.readouterr().err
    assert main(["compare"]) == 2


def test_curves_plot_train_and_validation(tmp_path):
    log = [{"step": 1, "loss": 0.9}, {"step": 2, "loss": 0.7},
           {"step": 2, "eval": {"loss": 0.8, "accuracy": 0.6, "train_loss": 0.7, "train_accuracy": 0.7}}]
    folder = _run(tmp_path / "r", NLI, log=log)
    assert plot_curves(folder / "metrics.jsonl", folder / "curves.png", "accuracy")
    assert (folder / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not plot_curves(tmp_path / "none.jsonl", tmp_path / "x.png", "accuracy")


@pytest.mark.parametrize("bad", ["{not json", "[]"])
def test_unreadable_metrics_is_a_clear_error(tmp_path, bad):
    from distilrank import DataError

    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "metrics.json").write_text(bad)
    with pytest.raises(DataError, match="metrics.json|unreadable"):
        read_run(folder)
