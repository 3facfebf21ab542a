import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distilrank import ConfigError, TrainConfig
from distilrank.data.collate import LengthGroupedBatchSampler
from distilrank.training.checkpoint import checkpoints
from distilrank.training.run import run_training
from distilrank.training.schedule import warmup_linear


def _cfg(tiny_model, groups_file, out, **kw):
    base = dict(train_file=str(groups_file), model=str(tiny_model), output_dir=str(out), loss="listwise",
                max_steps=8, batch_size=4, group_size=4, max_length=32, learning_rate=1e-3, seed=7, log_steps=2)
    base.update(kw)
    return TrainConfig(**base)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_warmup_linear_schedule():
    assert [warmup_linear(s, 2, 6) for s in range(7)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]


def test_length_grouped_batches_are_deterministic_and_complete():
    lengths = [5, 50, 7, 30, 2, 90, 11, 40, 3]
    a = LengthGroupedBatchSampler(lengths, batch_size=2, seed=1, window=2)
    b = LengthGroupedBatchSampler(lengths, batch_size=2, seed=1, window=2)
    assert list(a) == list(b)
    assert sorted(i for batch in a for i in batch) == list(range(len(lengths)))
    a.begin_epoch(1)
    assert list(a) != list(b)
    for batch in LengthGroupedBatchSampler(lengths, batch_size=2, seed=1, window=100):
        # with one window the batches hold neighbours in length order
        assert abs(lengths[batch[0]] - lengths[batch[-1]]) <= 40


@pytest.mark.parametrize("loss", ["listwise", "pairwise", "bce"])
def test_training_writes_a_run_directory_and_lowers_the_loss(tiny_model, groups_file, tmp_path, loss):
    out = tmp_path / "run"
    metrics = run_training(_cfg(tiny_model, groups_file, out, loss=loss, max_steps=30, learning_rate=3e-3))
    assert metrics["train"]["steps"] == 30
    for name in ("config.yaml", "metrics.json", "metrics.jsonl", "loss.png", "model/config.json",
                 "model/model.safetensors"):
        assert (out / name).exists(), name
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0]


def test_eval_every_n_steps_is_logged_and_plotted(tiny_model, groups_file, tmp_path, demo_beir):
    out = tmp_path / "run"
    metrics = run_training(_cfg(tiny_model, groups_file, out, eval_data=str(demo_beir), eval_split="test",
                                eval_steps=4, eval_top_k=5, eval_max_queries=5))
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert [e["step"] for e in evals] == [4, 8]
    assert set(metrics["reranker"]) == {"nDCG@10", "MRR@10", "MAP", "R@5"}
    assert (out / "metrics.png").exists()


def test_refuses_to_overwrite_a_trained_model(tiny_model, groups_file, tmp_path):
    run_training(_cfg(tiny_model, groups_file, tmp_path / "run", max_steps=1))
    with pytest.raises(ConfigError, match="already holds a trained model"):
        run_training(_cfg(tiny_model, groups_file, tmp_path / "run", max_steps=1))


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from distilrank import TrainConfig
    from distilrank.training.run import run_training
    cfg = TrainConfig(**{json_cfg})
    kill_at = int(sys.argv[1])
    def on_step(step):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    run_training(cfg, on_step=on_step)
""")


def _run_script(cfg: TrainConfig, kill_at: int) -> subprocess.CompletedProcess:
    import dataclasses

    code = KILL_SCRIPT.replace("{json_cfg}", repr(dataclasses.asdict(cfg)))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-c", code, str(kill_at)], capture_output=True, text=True, env=env,
                          timeout=300)


def test_killed_run_resumes_to_the_same_weights(tiny_model, groups_file, tmp_path):
    common = dict(max_steps=12, save_steps=4, gradient_accumulation_steps=2, batch_size=3)
    straight = tmp_path / "straight"
    run_training(_cfg(tiny_model, groups_file, straight, **common))

    killed = tmp_path / "killed"
    cfg = _cfg(tiny_model, groups_file, killed, **common)
    proc = _run_script(cfg, kill_at=10)  # after the checkpoint at step 8, before the end
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert [p.name for p in checkpoints(killed)] == ["checkpoint-4", "checkpoint-8"]
    assert not (killed / "model").exists()

    run_training(_cfg(tiny_model, groups_file, killed, resume=True, **common))
    a, b = _weights(straight / "model"), _weights(killed / "model")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5
    steps = [json.loads(x)["step"] for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # no duplicated log rows


@pytest.mark.slow
def test_two_processes_with_accelerate_launch(tiny_model, groups_file, tmp_path):
    out = tmp_path / "ddp"
    # accelerate's --cpu flag starts one process unless MPI is installed; --multi_gpu goes through
    # torchrun, and distilrank forms a gloo group on CPU-only hosts.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--multi_gpu",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "distilrank.cli", "train", f"train_file={groups_file}", f"model={tiny_model}",
           f"output_dir={out}", "max_steps=4", "batch_size=2", "group_size=3", "max_length=32"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["processes"] == 2
    assert metrics["train"]["examples"] == 4 * 2 * 2  # steps x batch x processes
    assert (out / "model" / "model.safetensors").exists()


def test_two_trainings_in_one_process_may_use_different_precision(tiny_model, groups_file, tmp_path):
    run_training(_cfg(tiny_model, groups_file, tmp_path / "a", max_steps=2))
    metrics = run_training(_cfg(tiny_model, groups_file, tmp_path / "b", max_steps=2, mixed_precision="bf16"))
    assert metrics["train"]["steps"] == 2


def test_background_tokenizing_workers_train_on_the_same_batches(tiny_model, groups_file, tmp_path):
    common = dict(max_steps=6, batch_size=3)  # more than one epoch: persistent workers across epochs
    run_training(_cfg(tiny_model, groups_file, tmp_path / "main", **common))
    run_training(_cfg(tiny_model, groups_file, tmp_path / "workers", num_workers=2, **common))
    a, b = _weights(tmp_path / "main" / "model"), _weights(tmp_path / "workers" / "model")
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
