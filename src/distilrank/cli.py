"""Command line: each subcommand maps a YAML file + ``key=value`` overrides to a config and a function."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from distilrank.errors import DistilrankError

EPILOG = "Settings: pass --config FILE.yaml and/or key=value pairs (later ones win). Keys:\n"


def _keys_help(cls: type) -> str:
    import dataclasses

    rows = [f"  {f.name} (default: {f.default!r})" for f in dataclasses.fields(cls)]
    return EPILOG + "\n".join(rows)


def _cmd_train(args: argparse.Namespace) -> None:
    from distilrank.config import load_stages
    from distilrank.training.run import run_stages, run_training

    overrides = list(args.overrides) + (["resume=true"] if args.resume else [])
    stages = load_stages(args.config, overrides)  # a file without `stages:` gives one unnamed stage
    if len(stages) == 1 and not stages[0][0]:
        metrics = run_training(stages[0][1])
        if metrics:
            print(f"trained {metrics['train']['steps']} steps in {metrics['train']['seconds']:.0f}s")
        return
    for k, result in enumerate(run_stages(stages), start=1):
        head = f"stage {k}/{len(stages)} '{result['stage']}'"
        if result["skipped"]:
            print(f"{head}: already trained, skipped ({result['output_dir']}/model)")
        else:
            train = result["train"]
            print(f"{head}: trained {train['steps']} steps in {train['seconds']:.0f}s -> {result['output_dir']}/model")


def _cmd_distill(args: argparse.Namespace) -> None:
    from distilrank.config import DistillConfig, load_config
    from distilrank.training.distill import run_distill

    overrides = list(args.overrides) + (["resume=true"] if args.resume else [])
    run_distill(load_config(DistillConfig, args.config, overrides))


def _cmd_label(args: argparse.Namespace) -> None:
    from distilrank.config import LabelConfig, load_config
    from distilrank.labeling import run_label

    run_label(load_config(LabelConfig, args.config, args.overrides))


def _cmd_export(args: argparse.Namespace) -> None:
    from distilrank.config import ExportConfig, load_config
    from distilrank.inference.export import run_export

    run_export(load_config(ExportConfig, args.config, args.overrides))


def _cmd_serve(args: argparse.Namespace) -> None:
    from distilrank.config import ServeConfig, load_config
    from distilrank.inference.server import run_server

    run_server(load_config(ServeConfig, args.config, args.overrides))


def _cmd_eval(args: argparse.Namespace) -> None:
    from distilrank.config import EvalConfig, load_config
    from distilrank.evaluation.run import run_eval

    run_eval(load_config(EvalConfig, args.config, args.overrides))


def _cmd_speed(args: argparse.Namespace) -> None:
    from distilrank.config import SpeedConfig, load_config
    from distilrank.evaluation.speed import run_speed

    run_speed(load_config(SpeedConfig, args.config, args.overrides))


def _cmd_mine(args: argparse.Namespace) -> None:
    from distilrank.config import MineConfig, load_config
    from distilrank.mining.run import run_mine

    run_mine(load_config(MineConfig, args.config, args.overrides))


def _cmd_push(args: argparse.Namespace) -> None:
    from distilrank.config import PushConfig, load_config
    from distilrank.hub_push import push_to_hub

    cfg = load_config(PushConfig, args.config, args.overrides)
    url = push_to_hub(cfg.model, cfg.repo_id, private=cfg.private, token=os.environ.get(cfg.token_env) or None,
                      metrics_file=cfg.metrics)
    print(f"pushed {cfg.model} with a model card to {url}")


def _cmd_rank(args: argparse.Namespace) -> None:
    from distilrank.config import RankConfig, load_config
    from distilrank.inference.run import run_rank

    run_rank(load_config(RankConfig, args.config, args.overrides))


def _cmd_demo(args: argparse.Namespace) -> None:
    from distilrank.config import DemoConfig, load_config
    from distilrank.demo import run_demo

    overrides = list(args.overrides) + ([f"output_dir={args.output_dir}"] if args.output_dir else [])
    run_demo(load_config(DemoConfig, args.config, overrides))


def _cmd_compare(args: argparse.Namespace) -> None:
    from distilrank.compare import compare_runs
    from distilrank.config import CompareConfig, load_config

    runs = [a for a in args.overrides if "=" not in a]  # RUN_DIR... ; key=value pairs are settings
    overrides = [a for a in args.overrides if "=" in a] + ([f"runs={','.join(runs)}"] if runs else [])
    cfg = load_config(CompareConfig, args.config, overrides)
    print(compare_runs(cfg.runs, cfg.output))
    if cfg.output:
        print(f"chart: {cfg.output}")


def _cmd_pipeline(args: argparse.Namespace) -> None:
    from distilrank.pipeline import describe_plan, load_plan, run_pipeline

    # --dry-run may come after key=value pairs too (they are taken as the rest of the line)
    overrides = [a for a in args.overrides if a != "--dry-run"]
    plan = load_plan(args.file, overrides)  # every stage checked before anything runs
    if args.dry_run or len(overrides) < len(args.overrides):
        print(describe_plan(plan))
        return
    run_pipeline(plan)


def _add_pipeline(sub: Any) -> None:
    summary = ("run a YAML pipeline whose stages are distilrank commands (mine, train, label, distill-mlm, "
               "eval, speed, export); finished stages are skipped, unfinished ones resume")
    p = sub.add_parser("pipeline", help=summary, description=summary,
                       epilog="FILE: a pipeline YAML, or a packaged one by name (demo). key=value pairs set the "
                              "file's variables (e.g. output_dir=runs/x seed=14).",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE", help="pipeline YAML file, or the name of a packaged pipeline")
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="key=value",
                   help="variables that override the file's")
    p.add_argument("--dry-run", action="store_true", help="print the resolved plan and exit; run nothing")
    p.set_defaults(fn=_cmd_pipeline)


def _commands() -> dict[str, tuple[str, Callable[[argparse.Namespace], None], str]]:
    return {
        "demo": ("run the whole pipeline offline on the embedded demo dataset", _cmd_demo, "DemoConfig"),
        "mine": ("mine hard negatives (bm25, dense or static retriever + FAISS) for training queries (groups "
                 "jsonl)", _cmd_mine, "MineConfig"),
        "distill-mlm": ("distil a smaller encoder from a teacher's layers by masked-LM KD (DistilBERT recipe)",
                        _cmd_distill, "DistillConfig"),
        "label": ("score (query, document) pairs with a teacher reranker: soft labels as jsonl",
                  _cmd_label, "LabelConfig"),
        "train": ("fine-tune a reranker (cross-encoder or seq2seq), on binary or soft labels; a bi-encoder "
                  "with loss=triplet or mnrl, or encoder=bi on soft labels", _cmd_train, "TrainConfig"),
        "eval": ("rerank a first-stage run and report ir-measures metrics", _cmd_eval, "EvalConfig"),
        "speed": ("time models on the same first-stage pairs, back to back in one process: pairs/s and the "
                  "speedup over a reference model", _cmd_speed, "SpeedConfig"),
        "rank": ("rank the documents of a file for one query", _cmd_rank, "RankConfig"),
        "export": ("export a cross-encoder to ONNX (fp32 or int8) with a parity check", _cmd_export,
                   "ExportConfig"),
        "serve": ("serve a reranker over HTTP (POST /rerank, GET /health)", _cmd_serve, "ServeConfig"),
        "push": ("push a trained model with a generated model card to the Hugging Face hub", _cmd_push,
                 "PushConfig"),
        "compare": ("compare training runs: RUN_DIR... [output=chart.png] prints a table (model, method, "
                    "params trained, metrics, time)", _cmd_compare, "CompareConfig"),
    }


def build_parser() -> argparse.ArgumentParser:
    import distilrank.config as config_module

    parser = argparse.ArgumentParser(prog="distilrank", description="Small, fast passage rerankers.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, fn, cfg_name) in _commands().items():
        p = sub.add_parser(name, help=summary, description=summary,
                           epilog=_keys_help(getattr(config_module, cfg_name)),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--config", metavar="FILE", help="YAML file with settings")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="settings that override the file")
        if name in ("train", "distill-mlm"):
            p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
        if name == "demo":
            p.add_argument("--output-dir", help="folder for everything the demo writes (default: a new folder)")
        p.set_defaults(fn=fn)
    _add_pipeline(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args: Any = build_parser().parse_args(argv)
    if not args.verbose:  # keep the output to our own progress and results (set before transformers loads)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if not args.verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # e.g. "Writing model shards" on every save
    level = logging.DEBUG if args.verbose else logging.WARNING
    # the level sits on the handler too: some libraries (bm25s) set their own loggers to DEBUG on import
    handler = logging.StreamHandler()
    handler.setLevel(level)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", handlers=[handler])
    try:
        args.fn(args)
    except DistilrankError as exc:
        print(f"distilrank {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"distilrank {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
