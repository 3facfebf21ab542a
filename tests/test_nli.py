"""NLI: readers (GLUE TSV, jsonl, hub-style folder), metrics, training and save/reload."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from tiny import WORDS, jsonl, text

from distilrank import DataError, TrainConfig
from distilrank.data.nli import BINARY_LABELS, THREE_WAY_LABELS, read_nli
from distilrank.evaluation.classification import classification_metrics
from distilrank.models.heads import PairClassifier
from distilrank.training.run import run_training

RTE_TSV = ("index\tsentence1\tsentence2\tlabel\n"
           "0\tA man is sleeping.\tSomeone rests.\tentailment\n"
           "1\tThe cat ran.\tThe dog flew.\tnot_entailment\n")


def toy_nli(n: int = 64, seed: int = 0) -> list[dict]:
    """Learnable pairs: the hypothesis says "true" for entailment and "false" otherwise."""
    rng = random.Random(seed)
    words = [w for w in WORDS if w not in ("true", "false")]
    rows = []
    for i in range(n):
        label = i % 2
        rows.append({"premise": " ".join(rng.sample(words, 6)),
                     "hypothesis": " ".join(rng.sample(words, 2) + [["true", "false"][label]]),
                     "label": BINARY_LABELS[label]})
    return rows


def test_reads_glue_rte_tsv(tmp_path):
    data = read_nli(str(text(tmp_path / "dev.tsv", RTE_TSV)))
    assert data.label_names == BINARY_LABELS
    assert [(e.premise, e.hypothesis, e.label) for e in data.examples] == [
        ("A man is sleeping.", "Someone rests.", 0), ("The cat ran.", "The dog flew.", 1)]


def test_reads_three_way_jsonl_and_counts_rows_without_gold_label(tmp_path):
    rows = [{"premise": "p one", "hypothesis": "h one", "label": "contradiction"},
            {"sentence1": "p two", "sentence2": "h two", "gold_label": "-"},
            {"premise": "p three", "hypothesis": "h three", "label": 1}]
    data = read_nli(str(jsonl(tmp_path / "snli.jsonl", rows)))
    assert data.label_names == THREE_WAY_LABELS
    assert [e.label for e in data.examples] == [2, 1]
    assert data.skipped == 1


@pytest.mark.parametrize("row, message", [
    ({"premise": "p", "hypothesis": "h", "label": "maybe"}, "label 'maybe' is not one of"),
    ({"premise": "p", "hypothesis": "h", "label": 5}, "class index 5 is outside the label set"),
    ({"premise": "  ", "hypothesis": "h", "label": "entailment"}, "field 'premise': is empty"),
    ({"premise": "p", "label": "entailment"}, "missing field"),
])
def test_bad_rows_name_file_and_line(tmp_path, row, message):
    good = {"premise": "p", "hypothesis": "h", "label": "entailment"}
    path = jsonl(tmp_path / "bad.jsonl", [good, row])
    with pytest.raises(DataError, match=message) as info:
        read_nli(str(path), labels=BINARY_LABELS)
    assert f"{path}:2" in str(info.value)


def test_tsv_errors(tmp_path):
    with pytest.raises(DataError, match=r"test.tsv:1.*no label column"):
        read_nli(str(text(tmp_path / "test.tsv", "index\tsentence1\tsentence2\n0\ta\tb\n")))
    with pytest.raises(DataError, match=r"x.tsv:4.*label 'neutral' is not one of"):
        read_nli(str(text(tmp_path / "x.tsv", RTE_TSV + "2\ta\tb\tneutral\n")), labels=BINARY_LABELS)
    with pytest.raises(DataError, match=r"y.tsv:2: field .label.: label .yes. is not an NLI label.*set labels="):
        read_nli(str(text(tmp_path / "y.tsv", "sentence1\tsentence2\tlabel\na\tb\tyes\n")))


def test_custom_label_names(tmp_path):
    path = text(tmp_path / "y.tsv", "sentence1\tsentence2\tlabel\na\tb\tyes\nc\td\tno\n")
    assert [e.label for e in read_nli(str(path), labels=("no", "yes")).examples] == [1, 0]


def test_reads_a_hub_style_folder_through_datasets(tmp_path):
    folder = tmp_path / "my-nli"
    jsonl(folder / "train.jsonl", toy_nli(6))
    jsonl(folder / "validation.jsonl", toy_nli(4, seed=1))
    dev = read_nli(str(folder), split="dev")  # "dev" falls back to the hub's "validation"
    assert len(dev.examples) == 4 and dev.label_names == BINARY_LABELS


def test_metrics_match_hand_computed_values():
    m = classification_metrics([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], BINARY_LABELS)
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["f1"] == pytest.approx(0.5)  # entailment: tp 1, fp 1, fn 1
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    three = classification_metrics([0, 1, 2, 2], [0, 2, 2, 2], THREE_WAY_LABELS)
    assert "f1" not in three and three["macro_f1"] == pytest.approx((1 + 0 + 0.8) / 3)


def test_metrics_agree_with_scikit_learn():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = random.Random(3)
    y, p = [rng.randrange(3) for _ in range(200)], [rng.randrange(3) for _ in range(200)]
    m = classification_metrics(y, p, THREE_WAY_LABELS)
    assert m["accuracy"] == pytest.approx(sklearn.accuracy_score(y, p))
    assert m["macro_f1"] == pytest.approx(sklearn.f1_score(y, p, average="macro"))
    assert m["confusion_matrix"] == sklearn.confusion_matrix(y, p).tolist()
    yb, pb = [v % 2 for v in y], [v % 2 for v in p]
    assert classification_metrics(yb, pb, BINARY_LABELS)["f1"] == pytest.approx(sklearn.f1_score(yb, pb, pos_label=0))


def test_nli_training_learns_writes_curves_and_reloads(tiny_model, tmp_path):
    train = jsonl(tmp_path / "train.jsonl", toy_nli(64))
    dev = jsonl(tmp_path / "dev.jsonl", toy_nli(32, seed=5))
    out = tmp_path / "run"
    cfg = TrainConfig(train_file=str(train), model=str(tiny_model), output_dir=str(out), task="nli", max_steps=40,
                      batch_size=8, max_length=32, learning_rate=3e-3, eval_data=str(dev), eval_steps=20, log_steps=5)
    metrics = run_training(cfg)
    assert metrics["method"] == "full" and metrics["trainable_params"] == metrics["total_params"]
    assert metrics["eval"]["accuracy"] >= 0.9, metrics["eval"]
    assert metrics["eval"]["confusion_matrix"] and "train_accuracy" in metrics["eval"]
    for name in ("curves.png", "loss.png", "metrics.json", "config.yaml", "model/model.safetensors"):
        assert (out / name).exists(), name
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert [e["step"] for e in evals] == [20, 40]
    model = PairClassifier.from_pretrained(str(out / "model"))
    assert model.label_names == list(BINARY_LABELS)
    pairs = [(r["premise"], r["hypothesis"]) for r in toy_nli(8, seed=9)]
    again = PairClassifier.from_pretrained(str(out / "model"))
    assert torch.equal(model.predict_logits(pairs), again.predict_logits(pairs))
    accuracy = sum(p == r["label"] for p, r in zip(model.predict(pairs), toy_nli(8, seed=9))) / 8
    assert accuracy >= 0.75


def test_three_way_training_runs_with_macro_f1(tiny_model, tmp_path):
    rows = [{**r, "label": THREE_WAY_LABELS[i % 3]} for i, r in enumerate(toy_nli(12))]
    path = jsonl(tmp_path / "mnli.jsonl", rows)
    metrics = run_training(TrainConfig(train_file=str(path), model=str(tiny_model), output_dir=str(tmp_path / "r"),
                                       task="nli", max_steps=2, batch_size=4, max_length=32, eval_data=str(path)))
    assert metrics["data"]["labels"] == list(THREE_WAY_LABELS)
    assert len(metrics["eval"]["confusion_matrix"]) == 3 and "macro_f1" in metrics["eval"]
    logged = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert [r["step"] for r in logged] == [2]  # eval_steps=0: evaluated once, at the end


@pytest.mark.shared_data
def test_reads_real_rte(shared_data: Path):
    dev = read_nli(str(shared_data / "rte" / "dev.tsv"))
    assert len(dev.examples) == 277 and dev.label_names == BINARY_LABELS
    assert {e.label for e in dev.examples} == {0, 1}


def test_shipped_rte_prompt_config_loads():
    from distilrank.config import load_config

    cfg = load_config(TrainConfig, Path(__file__).resolve().parents[1] / "configs" / "rte-prompt.yaml")
    assert (cfg.task, cfg.prompt_tokens, cfg.freeze_backbone) == ("nli", 20, True)
    assert cfg.labels == BINARY_LABELS


def test_cli_reports_a_bad_label_on_one_line(tiny_model, tmp_path, capsys):
    from distilrank.cli import main

    path = text(tmp_path / "train.tsv", RTE_TSV + "2\ta\tb\tmaybe\n")
    code = main(["train", "task=nli", f"train_file={path}", f"model={tiny_model}", f"output_dir={tmp_path / 'r'}",
                 "max_steps=1"])
    err = capsys.readouterr().err
    assert code == 2 and f"{path}:4" in err and "label 'maybe'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()  # nothing half-written
