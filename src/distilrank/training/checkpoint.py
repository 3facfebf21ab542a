"""Resumable checkpoints: accelerate state (model, optimizer, RNG, scheduler) + loop position.

A checkpoint is written to a hidden temp folder and renamed into place only when complete, so a
run killed mid-save resumes from the previous good checkpoint.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from accelerate import Accelerator

PREFIX = "checkpoint-"


@dataclass
class LoopState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    batches_in_epoch: int = 0  # dataloader batches of `epoch` already consumed
    examples_seen: int = 0


def checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints under ``output_dir/checkpoints``, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.glob(f"{PREFIX}*") if (p / "loop_state.json").is_file()]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX):]))


def save_checkpoint(accelerator: Accelerator, output_dir: str | Path, state: LoopState, keep: int) -> Path:
    root = Path(output_dir) / "checkpoints"
    final = root / f"{PREFIX}{state.step}"
    tmp = root / f".tmp-{PREFIX}{state.step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "loop_state.json").write_text(json.dumps(asdict(state)))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_latest(accelerator: Accelerator, output_dir: str | Path) -> LoopState | None:
    """Restore the newest complete checkpoint into the prepared objects; None if there is none."""
    found = checkpoints(output_dir)
    if not found:
        return None
    latest = found[-1]
    accelerator.load_state(str(latest))
    return LoopState(**json.loads((latest / "loop_state.json").read_text()))


def check_resume(output_dir: str | Path, resume: bool, what: str = "trained model") -> None:
    """Refuse, before any work, a run folder that does not fit ``resume``.

    A finished run (``model/`` saved) is never trained again in place, with or without ``resume``;
    ``resume`` needs a checkpoint to resume from.
    """
    from distilrank.errors import ConfigError

    out = Path(output_dir)
    if (out / "model").exists():
        if resume:
            raise ConfigError(f"resume=true, but {out} holds a finished run (its {what} is saved in model/): there is "
                              "nothing to resume; choose another output_dir to train again")
        raise ConfigError(f"{out} already holds a {what} (a finished run); choose another output_dir, or delete "
                          f"{out} to train it again")
    if resume and not checkpoints(out):
        state = "does not exist" if not out.exists() else "holds no checkpoint (checkpoints/checkpoint-N)"
        raise ConfigError(f"resume=true, but {out} {state}: there is nothing to resume from; drop resume=true to "
                          "start a new run (save_steps > 0 writes checkpoints that a killed run resumes from)")
