"""Hub push: the generated model card, and offline a clear error with the local model untouched."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distilrank.errors import ConfigError
from distilrank.hub_push import HubPushError, model_card, push_to_hub


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def run_dir(tiny_model: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_model, run / "model")
    (run / "config.yaml").write_text(yaml.safe_dump({"model": "bert-base-uncased", "loss": "listwise",
                                                     "max_steps": 200}))
    (run / "metrics.json").write_text(json.dumps({"first_stage": {"nDCG@10": 0.5, "MRR@10": 0.4},
                                                  "reranker": {"nDCG@10": 0.61234, "MRR@10": 0.55},
                                                  "train": {"steps": 200, "seconds": 10.0}}))
    return run


def test_model_card_has_config_metrics_and_intended_use(run_dir: Path):
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    card = model_card(run_dir / "model", "me/reranker", config, metrics)
    front = yaml.safe_load(card.split("---")[1])
    assert front["pipeline_tag"] == "text-ranking" and front["base_model"] == "bert-base-uncased"
    assert "## Intended use" in card and "cross-encoder" in card
    assert "| reranker | 0.6123 | 0.5500 |" in card and "| train |" not in card  # steps are not metrics
    assert "loss: listwise" in card and 'Reranker.load("me/reranker")' in card


def test_bi_encoder_card(tiny_model: Path, tmp_path: Path):
    from distilrank.models.bi_encoder import BiEncoder

    BiEncoder.from_pretrained(str(tiny_model)).save_pretrained(tmp_path / "bi")
    card = model_card(tmp_path / "bi", "me/bi")
    assert "library_name: sentence-transformers" in card and "bi-encoder" in card and "## Metrics" not in card


def test_offline_push_fails_clearly_and_leaves_the_model_untouched(run_dir: Path, monkeypatch):
    before = tree_digest(run_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubPushError, match="offline .*local model is unchanged"):
        push_to_hub(run_dir / "model", "me/reranker")
    assert tree_digest(run_dir) == before
    with pytest.raises(ConfigError, match="user/name"):
        push_to_hub(run_dir / "model", "no-slash")


def test_cli_push_offline_exit_code_and_one_line(run_dir: Path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    before = tree_digest(run_dir)
    proc = subprocess.run([sys.executable, "-m", "distilrank.cli", "push", f"model={run_dir / 'model'}",
                           "repo_id=me/reranker"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "distilrank push: error: cannot push" in proc.stderr
    assert tree_digest(run_dir) == before


def test_hub_failure_is_one_clear_error(run_dir: Path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    def refuse(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refuse)
    before = tree_digest(run_dir)
    with pytest.raises(HubPushError, match="ConnectionError: Failed to resolve .* unchanged"):
        push_to_hub(run_dir / "model", "me/reranker", token="hf_x")
    assert tree_digest(run_dir) == before


def test_train_push_to_hub_saves_everything_first_then_fails_clearly_offline(tiny_model: Path, tmp_path: Path,
                                                                             monkeypatch):
    from conftest import toy_groups

    from distilrank import TrainConfig
    from distilrank.training.run import run_training

    data = tmp_path / "groups.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in toy_groups(n=8)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = TrainConfig(train_file=str(data), model=str(tiny_model), output_dir=str(tmp_path / "run"), max_steps=2,
                      batch_size=4, group_size=3, max_length=32, push_to_hub="me/reranker")
    with pytest.raises(HubPushError, match="offline"):
        run_training(cfg)
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["train"]["steps"] == 2
    with pytest.raises(ConfigError, match="push_to_hub must be a hub repo id"):
        TrainConfig(train_file="x.jsonl", push_to_hub="reranker")
