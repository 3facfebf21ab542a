"""``distilrank label`` split by process (torchrun / accelerate launch): the merged file equals a single process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distilrank import ConfigError
from distilrank.config import LabelConfig
from distilrank.labeling import run_label
from distilrank.labeling_parallel import part_config, run_split


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow
def test_two_cpu_processes_write_the_single_process_file(tiny_model, groups_file, tmp_path) -> None:
    single = tmp_path / "single.jsonl"
    run_label(LabelConfig(teacher=str(tiny_model), data=str(groups_file), output=str(single), batch_size=4))
    out = tmp_path / "split" / "labels.jsonl"
    args = [f"teacher={tiny_model}", f"data={groups_file}", f"output={out}", "batch_size=4"]
    code = "import sys; from distilrank.cli import main; sys.exit(main(sys.argv[1:]))"
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
               "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", code, "label", *args], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert "merged 2 processes' labels" in logs[0]
    merged, expected = _rows(out), _rows(single)
    assert [{k: v for k, v in r.items() if k != "score"} for r in merged] == \
        [{k: v for k, v in r.items() if k != "score"} for r in expected]
    assert [r["score"] for r in merged] == pytest.approx([r["score"] for r in expected], abs=1e-5)
    assert sorted(p.name for p in out.parent.iterdir()) == ["labels.jsonl"]  # the slices are gone


def _fake_label(seen: list[str]):
    def label(cfg: LabelConfig) -> dict:
        from distilrank.config import parse_shard
        from distilrank.labeling import shard_path

        seen.append(cfg.shard)
        path = shard_path(cfg.output, *parse_shard(cfg.shard))
        path.write_text(f"rows of {cfg.shard}\n")
        return {"output": str(path)}

    return label


def test_slices_compose_with_shards_and_merge_in_order(tmp_path) -> None:
    cfg = LabelConfig(teacher="t", data="d", output=str(tmp_path / "labels.jsonl"), shard="1/2")
    assert [part_config(cfg, r, 3).shard for r in range(3)] == ["3/6", "4/6", "5/6"]
    seen: list[str] = []
    for rank in (2, 1, 0):  # the main process merges once every slice is there
        run_split(cfg, rank, 3, _fake_label(seen))
    assert seen == ["5/6", "4/6", "3/6"]
    assert (tmp_path / "labels.1-of-2.jsonl").read_text() == "rows of 3/6\nrows of 4/6\nrows of 5/6\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.1-of-2.jsonl"]


def test_a_failed_process_stops_the_main_one_with_its_error(tmp_path) -> None:
    cfg = LabelConfig(teacher="t", data="d", output=str(tmp_path / "labels.jsonl"))

    def broken(part: LabelConfig) -> dict:
        raise ConfigError("the teacher cannot load")

    with pytest.raises(ConfigError, match="the teacher cannot load"):
        run_split(cfg, 1, 2, broken)
    with pytest.raises(ConfigError, match="another labelling process failed: process 1: the teacher cannot load"):
        run_split(cfg, 0, 2, _fake_label([]))
    assert not (tmp_path / "labels.jsonl").exists()
