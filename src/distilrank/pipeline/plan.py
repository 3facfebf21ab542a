"""A pipeline file -> a validated plan: variables substituted, references resolved, every stage's config built.

Nothing runs here: every mistake (an unknown command, stage, variable or setting, a reference to a
later stage, a cycle, a setting a command rejects, a missing variable) is one :class:`ConfigError`
naming the file and the stage, raised before any stage computes anything.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilrank.config import (
    DistillConfig,
    EvalConfig,
    ExportConfig,
    LabelConfig,
    MineConfig,
    SpeedConfig,
    TrainConfig,
    build_config,
    config_to_dict,
    parse_overrides,
    parse_shard,
)
from distilrank.errors import ConfigError

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
REF = re.compile(r"\$\{([^}]*)\}")
TOP_KEYS = ("description", "variables", "stages")
PACKAGED = Path(__file__).resolve().parent.parent / "pipelines"


@dataclass(frozen=True)
class Command:
    """A distilrank command a stage can run: its config class, its function and what the pipeline sets."""

    config: type
    function: str  # module:function, imported when the stage runs
    output: str  # the setting the pipeline owns: "output_dir" (a folder) or "output" (a file)
    model: str = ""  # what ${stage.model} is: "model" (<output_dir>/model), "dir" (output_dir) or ""
    resumable: bool = False  # an unfinished stage continues from its checkpoints (resume=true)


COMMANDS: dict[str, Command] = {
    "mine": Command(MineConfig, "distilrank.mining.run:run_mine", "output"),
    "train": Command(TrainConfig, "distilrank.training.run:run_training", "output_dir", "model", True),
    "label": Command(LabelConfig, "distilrank.labeling:run_label", "output"),
    "distill-mlm": Command(DistillConfig, "distilrank.training.distill:run_distill", "output_dir", "model", True),
    "eval": Command(EvalConfig, "distilrank.evaluation.run:run_eval", "output_dir"),
    "speed": Command(SpeedConfig, "distilrank.evaluation.speed:run_speed", "output_dir"),
    "export": Command(ExportConfig, "distilrank.inference.export:run_export", "output_dir", "dir"),
}


@dataclass(frozen=True)
class Stage:
    """One resolved stage: its validated config, the stages it reads from and what it leaves behind."""

    name: str
    command: str
    config: Any  # the command's frozen config, output location set by the pipeline
    folder: Path  # <run folder>/<name>: everything the stage writes
    depends: tuple[str, ...]  # earlier stages it refers to (by ${name.key} or by a path in their folder)
    outputs: dict[str, Any]  # model / output: what ${name.model} and ${name.output} give

    def settings(self) -> dict[str, Any]:
        """The resolved settings that differ from the command's defaults (what --dry-run shows)."""
        defaults = _defaults(self.command)
        return {k: v for k, v in config_to_dict(self.config).items() if defaults.get(k, object()) != v}


@dataclass(frozen=True)
class Plan:
    """A pipeline file resolved against its variables: the stages in the order they run."""

    path: Path
    description: str
    output_dir: Path
    variables: dict[str, Any]
    stages: tuple[Stage, ...]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def _defaults(command: str) -> dict[str, Any]:
    cls = COMMANDS[command].config
    return {f.name: (list(f.default) if isinstance(f.default, tuple) else f.default)
            for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def resolve_pipeline_path(spec: str | Path) -> Path:
    """A pipeline file, or the name of a packaged one (``demo`` -> ``distilrank/pipelines/demo.yaml``)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    packaged = sorted(p.stem for p in PACKAGED.glob("*.yaml"))
    if path.suffix == "" and len(path.parts) == 1 and (PACKAGED / f"{path}.yaml").is_file():
        return PACKAGED / f"{path}.yaml"
    close = difflib.get_close_matches(str(spec), packaged, n=1)
    tip = f"; did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"pipeline file {spec} does not exist{tip} (packaged pipelines: {', '.join(packaged) or 'none'})")


def _read(path: Path) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping with description, variables and stages")
    unknown = [k for k in loaded if k not in TOP_KEYS]
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key '{unknown[0]}'{_tip(unknown[0], TOP_KEYS)}; a pipeline "
                          "has description, variables (overridable) and stages")
    return loaded


def _tip(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _refs(value: Any) -> list[str]:
    """Every ``${...}`` inside ``value`` (strings, lists and mappings, recursively)."""
    return [r for text in _strings(value) for r in REF.findall(text)]


def _substitute(value: Any, lookup: Any) -> Any:
    """Replace references; a string that is one whole reference takes the referred value's type."""
    if isinstance(value, str):
        whole = REF.fullmatch(value)
        if whole:
            return lookup(whole.group(1))
        return REF.sub(lambda m: _text(lookup(m.group(1))), value)
    if isinstance(value, list):
        return [_substitute(v, lookup) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, lookup) for k, v in value.items()}
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return "" if value is None else str(value)


def _check_ref(ref: str, where: str) -> tuple[str, str | None]:
    parts = ref.split(".")
    if len(parts) > 2 or not all(NAME.fullmatch(p) for p in parts):
        raise ConfigError(f"{where}: bad reference ${{{ref}}}: write ${{variable}} or ${{stage.key}}")
    return parts[0], (parts[1] if len(parts) == 2 else None)


def resolve_variables(path: Path, declared: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """The variables with command-line overrides applied and ``${other}`` references substituted."""
    if declared is None:
        declared = {}
    if not isinstance(declared, dict):
        raise ConfigError(f"{path}: variables must be a mapping of name: value")
    for name in overrides:
        if name not in declared:
            raise ConfigError(f"{path}: unknown variable '{name}'{_tip(name, declared)}; the file declares: "
                              f"{', '.join(declared) or 'none'}")
    raw = {**declared, **overrides}
    bad = next((n for n in raw if not NAME.fullmatch(str(n))), None)
    if bad is not None:
        raise ConfigError(f"{path}: variable name {bad!r} must be an identifier (letters, digits, _)")
    done: dict[str, Any] = {}

    def value(name: str, chain: tuple[str, ...]) -> Any:
        if name in done:
            return done[name]
        if name in chain:
            raise ConfigError(f"{path}: variables refer to each other in a cycle: {' -> '.join(chain + (name,))}")
        if raw.get(name) is None or raw.get(name) == "":
            raise ConfigError(f"{path}: variable '{name}' is not set; pass {name}=... on the command line")

        def lookup(ref: str) -> Any:
            var, key = _check_ref(ref, f"{path}: variable '{name}'")
            if key is not None:
                raise ConfigError(f"{path}: variable '{name}' refers to stage output ${{{ref}}}; variables may "
                                  "refer only to other variables")
            if var not in raw:
                raise ConfigError(f"{path}: variable '{name}' refers to unknown variable '{var}'{_tip(var, raw)}")
            return value(var, chain + (name,))

        done[name] = _substitute(raw[name], lookup)
        return done[name]

    for name in raw:
        value(name, ())
    if "output_dir" not in done:
        raise ConfigError(f"{path}: variables must set output_dir, the run folder (every stage writes below it)")
    return done


def load_plan(spec: str | Path, overrides: list[str] | None = None) -> Plan:
    """Read, check and resolve a pipeline file; ``overrides`` (``key=value``) set its variables."""
    path = resolve_pipeline_path(spec)
    data = _read(path)
    variables = resolve_variables(path, data.get("variables"), parse_overrides(overrides or []))
    stages = data.get("stages")
    if not isinstance(stages, dict) or not stages:
        raise ConfigError(f"{path}: stages must be a non-empty mapping of name: {{command: ..., settings}}")
    for name, body in stages.items():
        if not NAME.fullmatch(str(name)):
            raise ConfigError(f"{path}: stage name {name!r} must be an identifier (letters, digits, _)")
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: stage '{name}' must be a mapping with command: and its settings")
    _check_cycles(path, stages)
    out_dir = Path(str(variables["output_dir"])).expanduser()
    resolved: list[Stage] = []
    for name, body in stages.items():
        resolved.append(_resolve_stage(path, str(name), body, variables, resolved, list(stages), out_dir))
    return Plan(path, str(data.get("description") or ""), out_dir, variables, tuple(resolved))


def _check_cycles(path: Path, stages: dict[str, Any]) -> None:
    """Stages that refer to each other in a loop (before the order check, which would name only one edge)."""
    edges = {name: {r.split(".")[0] for r in _refs(body) if "." in r} & set(stages) for name, body in stages.items()}

    def visit(node: str, chain: tuple[str, ...]) -> None:
        for nxt in sorted(edges[node]):
            if nxt in chain:
                loop = chain[chain.index(nxt):] + (nxt,)
                raise ConfigError(f"{path}: stages refer to each other in a cycle: {' -> '.join(loop)}; a stage "
                                  "can use only the outputs of stages above it")
            visit(nxt, chain + (nxt,))

    for name in edges:
        visit(name, (name,))


def _resolve_stage(path: Path, name: str, body: dict[str, Any], variables: dict[str, Any],
                   earlier: list[Stage], order: list[str], out_dir: Path) -> Stage:
    """Substitute the stage's references, set its output location, build and validate its config."""
    settings = dict(body)
    command = settings.pop("command", None)
    if command not in COMMANDS:
        what = "has no command" if command is None else f"has unknown command {command!r}{_tip(command, COMMANDS)}"
        raise ConfigError(f"{path}: stage '{name}' {what}; commands: {', '.join(COMMANDS)}")
    spec = COMMANDS[command]
    where = f"{path}: stage '{name}' ({command})"
    folder = out_dir / name
    location = str(folder) if spec.output == "output_dir" else str(folder / f"{name}.jsonl")
    for key in (spec.output, "resume") if spec.resumable else (spec.output,):
        if key in settings:
            raise ConfigError(f"{where}: {key} is set by the pipeline ("
                              + (location if key == spec.output else "an unfinished stage resumes on rerun")
                              + "); remove it from the stage")
    by_name = {s.name: s for s in earlier}
    depends: list[str] = []
    resolved: dict[str, Any] = {}
    for key, value in settings.items():
        lookup = _lookup(f"{where}: {key}", name, variables, by_name, order, depends)
        resolved[key] = _substitute(value, lookup)
    given = dict(resolved)
    resolved[spec.output] = location
    try:
        cfg = build_config(spec.config, resolved)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    _check_inputs(where, given, out_dir)
    for other in earlier:  # a path into an earlier stage's folder is a dependency, even when written out
        if other.name not in depends and any(_inside(v, other.folder) for v in _strings(given)):
            depends.append(other.name)
    outputs: dict[str, Any] = {}
    if spec.output == "output":
        from distilrank.labeling import shard_path

        outputs["output"] = str(shard_path(location, *parse_shard(cfg.shard))) if command == "label" else location
    if spec.model:
        outputs["model"] = str(folder / "model") if spec.model == "model" else str(folder)
    return Stage(name, command, cfg, folder, tuple(dict.fromkeys(depends)), outputs)


def _lookup(where: str, name: str, variables: dict[str, Any], by_name: dict[str, Stage], order: list[str],
            depends: list[str]) -> Callable[[str], Any]:
    """The function that gives the value of one ``${...}`` inside a stage's setting."""
    def lookup(ref: str) -> Any:
        head, key = _check_ref(ref, where)
        if key is None:
            if head not in variables:
                hint = f" (stage outputs are ${{{head}.model}}, ${{{head}.output}}, ...)" if head in order else ""
                raise ConfigError(f"{where}: unknown variable ${{{head}}}{_tip(head, variables)}{hint}; "
                                  f"variables: {', '.join(variables)}")
            return variables[head]
        if head == name:
            raise ConfigError(f"{where}: ${{{ref}}} refers to the stage itself")
        if head not in by_name:
            if head in order:
                raise ConfigError(f"{where}: ${{{ref}}} refers to stage '{head}', which runs later; a stage can "
                                  f"use only the outputs of stages above it (move '{name}' below '{head}')")
            raise ConfigError(f"{where}: ${{{ref}}} refers to unknown stage '{head}'{_tip(head, by_name)}; "
                              f"stages above: {', '.join(by_name) or 'none'}")
        stage = by_name[head]
        values = {**config_to_dict(stage.config), **stage.outputs}
        if key not in values:
            raise ConfigError(f"{where}: ${{{ref}}}: stage '{head}' ({stage.command}) has no key '{key}'"
                              f"{_tip(key, values)}")
        depends.append(head)
        return values[key]

    return lookup


def _strings(values: Any) -> list[str]:
    if isinstance(values, str):
        return [values]
    if isinstance(values, (list, tuple)):
        return [s for v in values for s in _strings(v)]
    if isinstance(values, dict):
        return [s for v in values.values() for s in _strings(v)]
    return []


def _inside(value: str, folder: Path) -> bool:
    if not value or "\n" in value:
        return False
    try:
        return Path(value).expanduser().resolve().is_relative_to(folder.resolve())
    except (OSError, ValueError):
        return False


INPUT_SUFFIXES = (".jsonl", ".json", ".tsv", ".txt", ".csv", ".trec", ".run")


def _check_inputs(where: str, given: dict[str, Any], out_dir: Path) -> None:
    """A file named in a setting that neither exists nor lies in the run folder (an earlier stage's output)."""
    for key, value in given.items():
        if not isinstance(value, str) or "," in value or not value.lower().endswith(INPUT_SUFFIXES):
            continue
        if not Path(value).expanduser().exists() and not _inside(value, out_dir):
            raise ConfigError(f"{where}: {key}: {value} does not exist")
