"""``distilrank label`` under ``torchrun`` / ``accelerate launch``: the job splits by process on its own.

Each of the ``W`` processes (``RANK`` / ``WORLD_SIZE`` from the launcher) labels its own slice of queries
into the file ``shard=i/n`` would give it (process ``p`` of shard ``i/n`` is shard ``i*W + p`` of ``n*W``:
``labels.p-of-W.jsonl`` for a plain run), resumable as any shard. The main process then waits for every
slice and concatenates them, in order, into the output ``shard=i/n`` names: the file a single process
would have written (the same rows in the same order). ``shard=i/n`` keeps splitting across machines.
The processes share the output folder (one machine, or a shared file system).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distilrank.config import LabelConfig, parse_shard
from distilrank.errors import ConfigError

POLL_SECONDS = 0.5


def process_rank() -> tuple[int, int]:
    """``(rank, world size)`` set by torchrun / accelerate launch; ``(0, 1)`` for a plain run."""
    try:
        return int(os.environ.get("RANK", "0") or 0), int(os.environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        raise ConfigError(f"RANK={os.environ.get('RANK')!r} / WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} are not "
                          "integers; launch with torchrun or accelerate launch") from None


def part_config(cfg: LabelConfig, rank: int, world: int) -> LabelConfig:
    """This process's slice: shard ``i*W + rank`` of ``n*W``."""
    index, n = parse_shard(cfg.shard)
    return dataclasses.replace(cfg, shard=f"{index * world + rank}/{n * world}")


def _wait_for(parts: list[Path], failed: list[Path]) -> None:
    while not all(p.exists() for p in parts):
        broken = [f for f in failed if f.exists()]
        if broken:
            raise ConfigError(f"another labelling process failed: {broken[0].read_text(encoding='utf-8').strip()}")
        time.sleep(POLL_SECONDS)


def run_split(cfg: LabelConfig, rank: int, world: int, label: Callable[[LabelConfig], dict[str, Any]],
              ) -> dict[str, Any]:
    """Label this process's slice with ``label``; the main process merges every slice into the output."""
    from distilrank.labeling import check_not_labelled, shard_path

    index, n = parse_shard(cfg.shard)
    output = shard_path(cfg.output, index, n)
    subs = [part_config(cfg, r, world) for r in range(world)]
    parts = [shard_path(s.output, *parse_shard(s.shard)) for s in subs]
    failed = [p.with_name(p.name + ".failed") for p in parts]
    if rank == 0:
        check_not_labelled(output)
    failed[rank].unlink(missing_ok=True)
    try:
        summary = label(subs[rank]) if not parts[rank].exists() else {"output": str(parts[rank]), "resumed": True}
    except Exception as exc:
        failed[rank].write_text(f"process {rank}: {exc}", encoding="utf-8")
        raise
    if rank != 0:
        return summary
    _wait_for(parts, failed)
    tmp = output.with_name(output.name + ".merging")
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as fh:
                shutil.copyfileobj(fh, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, output)
    for part in parts:
        part.unlink()
    print(f"merged {world} processes' labels -> {output}")
    return {**summary, "output": str(output), "processes": world}
