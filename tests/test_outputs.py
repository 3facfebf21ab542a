"""Jobs never corrupt their output: outputs are checked before any work and locked while written (issue 21)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from distilrank.cli import main
from distilrank.errors import ConfigError
from distilrank.io import check_output_path, lock_path, output_lock


def one_line_error(capsys: pytest.CaptureFixture, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.replace("\r", "\n").splitlines() if "error:" in line]  # not progress bars
    assert len(errors) == 1 and "Traceback" not in err, err
    err = errors[0]
    for needle in needles:
        assert needle in err, err
    return err


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


# ---------------------------------------------------------------------------- the lock itself


def test_a_second_lock_on_one_output_fails_at_once_and_the_first_is_released(tmp_path):
    out = tmp_path / "labels.jsonl"
    with output_lock(out) as lock:
        assert lock == lock_path(out) and lock.read_text().strip() == str(os.getpid())
        t0 = time.monotonic()
        busy = f"output={out} is being written by another distilrank job"
        with pytest.raises(ConfigError, match=busy), output_lock(out):
            pass
        assert time.monotonic() - t0 < 1.0  # stops at once, never waits
    assert not lock.exists()
    with output_lock(out):  # free again
        pass
    assert list(tmp_path.iterdir()) == []


def test_only_the_main_process_of_a_distributed_launch_locks(tmp_path, monkeypatch):
    out = tmp_path / "run"
    with output_lock(out):
        monkeypatch.setenv("RANK", "1")  # another process of the same launch: the main one holds the lock
        with output_lock(out):
            pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "run"
    code = f"from distilrank.io import output_lock\nwith output_lock({str(out)!r}):\n    import os; os._exit(9)\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == 9 and lock_path(out).exists()  # died holding it: the file stays, the lock does not
    with output_lock(out):
        pass


# ---------------------------------------------------------------------------- two label jobs at once

GATED_LABEL = """
import sys, time
from pathlib import Path
from distilrank.models.cross_encoder import CrossEncoder
from distilrank.cli import main

real, gate = CrossEncoder.score, Path(sys.argv[1])
def gated(self, pairs, **kw):  # scores only once the test opens the gate: the job is surely running meanwhile
    while not gate.exists():
        time.sleep(0.02)
    return real(self, pairs, **kw)
CrossEncoder.score = gated
sys.exit(main(["label"] + sys.argv[2:]))
"""


def test_two_label_jobs_on_one_output_one_stops_and_the_file_equals_a_single_run(
        tiny_model, groups_file, tmp_path, capsys):
    args = [f"teacher={tiny_model}", f"data={groups_file}", "batch_size=8", "chunk_size=16"]
    reference = tmp_path / "single" / "labels.jsonl"
    assert main(["label", *args, f"output={reference}"]) == 0
    out = tmp_path / "both" / "labels.jsonl"
    script, gate = tmp_path / "gated_label.py", tmp_path / "gate"
    script.write_text(textwrap.dedent(GATED_LABEL))
    first = subprocess.Popen([sys.executable, str(script), str(gate), *args, f"output={out}"],
                             env={**os.environ, "HF_HUB_OFFLINE": "1"}, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 900  # a loaded machine can take minutes to import torch
        while not (lock_path(out).exists() and out.with_name(out.name + ".partial").exists()):
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline, "the first job never started writing"
            time.sleep(0.05)
        capsys.readouterr()
        assert main(["label", *args, f"output={out}"]) == 2  # the second job, while the first is writing
        one_line_error(capsys, "being written by another distilrank job", str(out))
        gate.touch()
        assert first.wait(timeout=900) == 0
    finally:
        first.kill()
        first.wait()
    assert out.read_bytes() == reference.read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["labels.jsonl"]  # no .partial, no .lock


def _commands(tmp_path: Path, tiny_model: Path, groups_file: Path) -> dict[str, tuple[list[str], Path]]:
    """Each writing command's arguments (all but the output) and the setting naming its output."""
    text = tmp_path / "corpus.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    return {
        "label": ([f"teacher={tiny_model}", f"data={groups_file}"], "output"),
        "label ensemble": ([f"teacher={tiny_model},{tiny_model}", f"data={groups_file}"], "output"),
        "label listwise": ([f"teacher={_published_run(tmp_path)}", "data=unused", "mode=listwise"], "output"),
        "mine": (["data=demo", "max_queries=2"], "output"),
        "train": ([f"train_file={groups_file}", f"model={tiny_model}", "max_steps=1", "batch_size=2",
                   "group_size=3"], "output_dir"),
        "export": ([f"model={tiny_model}"], "output_dir"),
        "distill-mlm": ([f"data={text}", f"teacher={tiny_model}", "max_steps=1", "batch_size=2", "block_size=16",
                         "min_words=0", "eval_blocks=2"], "output_dir"),
    }


def _published_run(tmp_path: Path) -> Path:
    """A rank_llm JSON ranking (texts included): what ``label mode=listwise`` reads as a teacher."""
    ranked = tmp_path / "ranked.json"
    ranked.write_text(json.dumps([{"query": "sort a list", "hits": [
        {"qid": "q1", "docid": f"d{k}", "content": f"passage {k}", "rank": k + 1, "score": 3.0 - k}
        for k in range(3)]}]))
    return ranked


@pytest.mark.parametrize("command", ["label", "label ensemble", "label listwise", "mine", "train", "export",
                                     "distill-mlm"])
def test_every_writing_command_stops_on_a_locked_output(command, tiny_model, groups_file, tmp_path, capsys):
    args, setting = _commands(tmp_path, tiny_model, groups_file)[command]
    out = tmp_path / "out" / ("out.jsonl" if setting == "output" else "run")
    with output_lock(out):  # another job holds it
        before = snapshot(tmp_path)
        capsys.readouterr()
        assert main([command.split()[0], *args, f"{setting}={out}"]) == 2
        one_line_error(capsys, f"{setting}={out} is being written by another distilrank job")
        assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------- output paths, before any work


@pytest.mark.parametrize("command,shape", [
    ("label", "under"), ("label", "folder"), ("mine", "under"), ("mine", "folder"), ("train", "file"),
    ("train", "under"), ("export", "under"), ("distill-mlm", "file"), ("eval", "under"), ("demo", "file"),
])
def test_an_output_that_cannot_be_written_is_one_clear_error_before_any_work(
        command, shape, tiny_model, groups_file, demo_beir, tmp_path, capsys):
    commands = {**_commands(tmp_path, tiny_model, groups_file),
                "eval": ([f"data={demo_beir}", f"model={tiny_model}", "top_k=3", "max_queries=2"], "output_dir"),
                "demo": ([f"model={tiny_model}", "max_steps=1"], "output_dir")}
    args, setting = commands[command]
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me\n")
    target = {"under": blocker / "out", "file": blocker, "folder": tmp_path}[shape]
    expected = {"under": f"lies under {blocker}, which is a file", "file": "is an existing file, not a folder",
                "folder": "is an existing folder; give a file path"}[shape]
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main([command, *args, f"{setting}={target}"]) == 2
    err = one_line_error(capsys, f"{setting}={target}", expected)
    assert "reranker" not in capsys.readouterr().out  # nothing was scored first
    assert snapshot(tmp_path) == before and blocker.read_text() == "keep me\n", err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_parent_is_refused(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="permission denied"):
            check_output_path(locked / "labels.jsonl", folder=False)
    finally:
        locked.chmod(0o700)


# ---------------------------------------------------------------------------- train resume


def _train(groups_file: Path, tiny_model: Path, out: Path, *extra: str) -> int:
    return main(["train", f"train_file={groups_file}", f"model={tiny_model}", f"output_dir={out}", "max_steps=1",
                 "batch_size=2", "group_size=3", "max_length=32", *extra])


def test_resume_with_nothing_to_resume_says_so_and_stops(tiny_model, groups_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(groups_file, tiny_model, out) == 0  # finished, no checkpoints (save_steps=0)
    before = snapshot(out)
    capsys.readouterr()
    assert _train(groups_file, tiny_model, out, "resume=true") == 2
    one_line_error(capsys, f"{out} holds a finished run", "nothing to resume")
    assert _train(groups_file, tiny_model, out) == 2  # the refusal of a finished run no longer suggests resume
    err = one_line_error(capsys, f"{out} already holds a trained model", "choose another output_dir")
    assert "resume=true" not in err
    assert snapshot(out) == before  # the model was not trained again
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (empty, tmp_path / "never-made"):
        assert _train(groups_file, tiny_model, folder, "resume=true") == 2
        one_line_error(capsys, f"{folder}", "nothing to resume from", "drop resume=true")
    assert list(empty.iterdir()) == [] and not (tmp_path / "never-made").exists()


def test_stages_with_resume_still_start_stages_that_never_ran(tiny_model, groups_file, tmp_path):
    from distilrank.config import TrainConfig
    from distilrank.training.run import run_stages

    base = dict(train_file=str(groups_file), model=str(tiny_model), max_steps=1, batch_size=2, group_size=3,
                max_length=32, resume=True)
    stages = [("a", TrainConfig(output_dir=str(tmp_path / "a"), **base)),
              ("b", TrainConfig(output_dir=str(tmp_path / "b"), **base))]
    results = run_stages(stages)
    assert [r["skipped"] for r in results] == [False, False]
    assert [r["skipped"] for r in run_stages(stages)] == [True, True]


# ---------------------------------------------------------------------------- distill-mlm reads the data first


def test_distill_bad_data_leaves_nothing(tiny_model, tmp_path, capsys):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("too short\n")
    out = tmp_path / "distilled"
    assert main(["distill-mlm", f"data={tiny}", f"teacher={tiny_model}", f"output_dir={out}", "min_words=0",
                 "block_size=64"]) == 2
    one_line_error(capsys, str(tiny), "block")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["tiny.txt"]
