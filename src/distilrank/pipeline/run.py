"""Run a plan: skip finished stages, resume unfinished ones, record every stage in ``pipeline.json``.

A stage is done when ``pipeline.json`` says so with the same fingerprint: a hash of its command,
its resolved settings, the fingerprints of the stages it reads from and the size and content hash
(sha256) of the files it reads from outside the run folder (a folder: its top-level files). A changed fingerprint reruns the stage, and every stage
that reads from a stage that runs is run again too. An unfinished stage (killed or failed) starts
again in a cleared folder, except that ``train`` and ``distill-mlm`` continue from their last
checkpoint and ``label`` from its partial file when their fingerprint has not changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilrank.config import config_to_dict
from distilrank.errors import ConfigError, DistilrankError
from distilrank.io import atomic_write_json
from distilrank.pipeline.plan import COMMANDS, Plan, Stage

STATE = "pipeline.json"


class StageFailed(DistilrankError):
    """A stage stopped with a user-fixable error; the stages before it are kept."""


@dataclass(frozen=True)
class Step:
    """What a run does with one stage: ``skip`` it, ``run`` it (from a cleared folder) or ``resume`` it."""

    stage: Stage
    action: str
    reason: str
    fingerprint: str


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _digest(path: Path) -> str:
    """sha256 of a file's bytes, computed once per process for a given (path, size, modification time)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        with path.open("rb") as f:
            _DIGESTS[key] = hashlib.file_digest(f, "sha256").hexdigest()[:32]
    return _DIGESTS[key]


def _stamp(value: str, run_dir: Path) -> Any:
    """Size and content hash of a file (or of a folder's top-level files) outside the run folder.

    Content, not modification time: data copied to another machine or provisioned again keeps its stages.
    """
    if not value or "\n" in value or "," in value:
        return None
    path = Path(value).expanduser()
    try:
        if not path.exists() or path.resolve().is_relative_to(run_dir.resolve()):
            return None
        if path.is_file():
            return [path.stat().st_size, _digest(path)]
        files = sorted(p for p in path.iterdir() if p.is_file())[:200]
        return [[p.name, p.stat().st_size, _digest(p)] for p in files]
    except OSError:
        return None


def _stamps(value: Any, run_dir: Path) -> Any:
    """:func:`_stamp` of a setting, or of each item of a list setting (e.g. speed's models); None: no input."""
    if isinstance(value, (list, tuple)):
        stamps = [_stamp(v, run_dir) if isinstance(v, str) else None for v in value]
        return stamps if any(s is not None for s in stamps) else None
    return _stamp(value, run_dir) if isinstance(value, str) else None


def _in_run(value: Any, run_dir: Path) -> Any:
    """``value`` with a path inside the run folder written relative to it (``$RUN/...``); lists item by item."""
    if isinstance(value, (list, tuple)):
        return [_in_run(v, run_dir) for v in value]
    if not isinstance(value, str) or not value or "\n" in value:
        return value
    try:
        rel = Path(value).expanduser().resolve().relative_to(run_dir.resolve())
    except (ValueError, OSError):
        return value
    return f"$RUN/{rel.as_posix()}"


def fingerprints(plan: Plan) -> dict[str, str]:
    """Each stage's fingerprint (see the module docstring), in plan order."""
    out: dict[str, str] = {}
    for stage in plan.stages:
        cfg = config_to_dict(stage.config)
        cfg.pop("resume", None)  # set by the pipeline when it resumes a stage
        # paths inside the run folder count relative to it: a moved or copied run folder keeps its fingerprints
        cfg = {k: _in_run(v, plan.output_dir) for k, v in cfg.items()}
        inputs = {k: s for k, v in cfg.items() if (s := _stamps(v, plan.output_dir))}
        payload = {"command": stage.command, "config": cfg, "inputs": inputs,
                   "depends": {d: out[d] for d in stage.depends}}
        out[stage.name] = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return out


def read_state(plan: Plan) -> dict[str, Any]:
    path = plan.output_dir / STATE
    if not path.is_file():
        return {"stages": {}}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable pipeline state ({exc}); delete it to run every stage again") from None
    state.setdefault("stages", {})
    return state


def _write_state(plan: Plan, state: dict[str, Any]) -> None:
    state.update(pipeline=str(plan.path), description=plan.description, variables=plan.variables)
    atomic_write_json(plan.output_dir / STATE, json.loads(json.dumps(state, default=str)))


def _can_resume(stage: Stage) -> bool:
    """An unfinished stage that can continue where it stopped instead of starting over."""
    if stage.command in ("train", "distill-mlm"):
        from distilrank.training.checkpoint import checkpoints

        if (stage.folder / "model").exists():  # it finished but was not recorded: nothing left to resume
            return False
        head = stage.folder / "teacher_head" / "model"
        return bool(checkpoints(stage.folder)) or (stage.command == "distill-mlm" and head.is_dir())
    if stage.command == "label":
        output = Path(stage.outputs["output"])
        return output.with_name(output.name + ".partial").is_file()
    return False


def plan_steps(plan: Plan, state: dict[str, Any]) -> list[Step]:
    """Decide, before anything runs, what happens to each stage."""
    prints = fingerprints(plan)
    steps: list[Step] = []
    running: set[str] = set()
    for stage in plan.stages:
        fp, record = prints[stage.name], state["stages"].get(stage.name)
        upstream = next((d for d in stage.depends if d in running), None)
        if record is None:
            action, reason = "run", "not run yet"
            _check_foreign(plan, stage)
        elif upstream is not None:
            action, reason = "run", f"stage '{upstream}' runs again"
        elif record.get("fingerprint") != fp:
            action, reason = "run", "settings or inputs changed"
        elif record.get("status") == "done" and not stage.folder.exists():
            action, reason = "run", f"its folder {stage.folder} is gone"
        elif record.get("status") == "done":
            action, reason = "skip", "done"
        elif _can_resume(stage):
            action, reason = "resume", f"{record.get('status', 'unfinished')} earlier; continues where it stopped"
        else:
            action, reason = "run", f"{record.get('status', 'unfinished')} earlier; starts over"
        if action != "skip":
            running.add(stage.name)
        steps.append(Step(stage, action, reason, fp))
    return steps


def _check_foreign(plan: Plan, stage: Stage) -> None:
    """Refuse to clear a folder this pipeline did not write (a typo in output_dir must not delete data)."""
    if stage.folder.exists() and (not stage.folder.is_dir() or any(stage.folder.iterdir())):
        raise ConfigError(f"{plan.path}: stage '{stage.name}': {stage.folder} already exists and was not written "
                          f"by this pipeline ({plan.output_dir / STATE} has no record of it); move it away or "
                          "choose another output_dir")


def _clear(step: Step) -> Any:
    """The stage's folder made ready for it; returns the config to run (``resume=true`` when resuming)."""
    stage, cfg = step.stage, step.stage.config
    if step.action == "resume":
        if stage.command == "label":  # labelling resumes from its own partial file; a finished file is redone
            Path(stage.outputs["output"]).unlink(missing_ok=True)
            return cfg
        return dataclasses.replace(cfg, resume=True)
    if stage.folder.is_dir():
        shutil.rmtree(stage.folder)
    elif stage.folder.exists():
        stage.folder.unlink()
    if COMMANDS[stage.command].output == "output":
        stage.folder.mkdir(parents=True, exist_ok=True)
    return cfg


def _call(command: str, cfg: Any) -> dict[str, Any]:
    module, function = COMMANDS[command].function.split(":")
    result = getattr(importlib.import_module(module), function)(cfg)
    return json.loads(json.dumps(result or {}, default=str))


def _say(msg: str) -> None:
    print(f"[pipeline] {msg}", flush=True)


def run_step(plan: Plan, step: Step, state: dict[str, Any], position: str) -> None:
    """Run one stage and record it; a failure is recorded too, and names the stage and how to resume."""
    stage = step.stage
    head = f"stage {position} {stage.name} ({stage.command})"
    if step.action == "skip":
        _say(f"{head}: skipped (done)")
        return
    _say(f"{head} ..." + (" resuming" if step.action == "resume" else "")
         + (f" ({step.reason})" if step.reason != "not run yet" else ""))
    cfg = _clear(step)
    record: dict[str, Any] = {"command": stage.command, "fingerprint": step.fingerprint, "status": "running",
                              "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    state["stages"][stage.name] = record
    _write_state(plan, state)
    began = time.perf_counter()
    try:
        result = _call(stage.command, cfg)
    except BaseException as exc:
        record.update(status="failed", seconds=round(time.perf_counter() - began, 1),
                      error=f"{type(exc).__name__}: {exc}")
        _write_state(plan, state)
        tip = (f"the stages before it are kept; rerun `distilrank pipeline {plan.path}` (same variables) to resume "
               f"from '{stage.name}'")
        if isinstance(exc, DistilrankError):
            raise StageFailed(f"stage '{stage.name}' ({stage.command}) failed: {exc}; {tip}") from None
        print(f"[pipeline] stage '{stage.name}' ({stage.command}) "
              f"{'was interrupted' if isinstance(exc, KeyboardInterrupt) else 'failed'}; {tip}", file=sys.stderr)
        raise
    record.update(status="done", seconds=round(time.perf_counter() - began, 1), result=result)
    _write_state(plan, state)
    _say(f"{head}: done in {record['seconds']:.0f}s")


def run_pipeline(plan: Plan) -> dict[str, Any]:
    """Run every stage that is not done; write and print the summary; returns it."""
    from distilrank.pipeline.summary import print_summary, write_summary

    state = read_state(plan)
    steps = plan_steps(plan, state)  # may refuse (a foreign folder) before anything runs
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    for name in list(state["stages"]):  # stages no longer in the file are forgotten, their folders kept
        if all(s.name != name for s in plan.stages):
            del state["stages"][name]
    began = time.perf_counter()
    if plan.description:
        _say(plan.description)
    _say(f"{len(plan.stages)} stages -> {plan.output_dir}/ "
         f"({sum(s.action == 'skip' for s in steps)} done earlier)")
    for k, step in enumerate(steps, start=1):
        run_step(plan, step, state, f"{k}/{len(steps)}")
    summary = write_summary(plan, state, seconds=time.perf_counter() - began)
    print_summary(summary)
    return summary


def describe_plan(plan: Plan) -> str:
    """The resolved plan as text (``--dry-run``): each stage, its non-default settings and what a run does."""
    steps = plan_steps(plan, read_state(plan))
    verbs = {"skip": "done: skipped", "run": "would run", "resume": "would resume"}
    lines = [f"pipeline {plan.path}" + (f": {plan.description}" if plan.description else ""),
             f"run folder: {plan.output_dir}",
             "variables: " + ", ".join(f"{k}={v}" for k, v in plan.variables.items())]
    for k, step in enumerate(steps, start=1):
        stage = step.stage
        status = verbs[step.action] + (f" ({step.reason})" if step.action != "skip" else "")
        lines.append(f"\n{k}/{len(steps)} {stage.name} ({stage.command}): {status}")
        for key, value in stage.settings().items():
            lines.append(f"    {key}: {value}")
        if stage.depends:
            lines.append(f"    (reads from: {', '.join(stage.depends)})")
    return "\n".join(lines)
