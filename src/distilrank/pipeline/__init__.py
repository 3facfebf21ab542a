"""``distilrank pipeline FILE.yaml [key=value ...]``: a YAML of stages, each a distilrank command.

A pipeline file has a one-line ``description``, ``variables`` (overridable on the command line;
``output_dir`` is the run folder) and ``stages``, an ordered mapping of name -> settings whose
``command`` picks the distilrank command (mine, train, label, distill-mlm, eval, export); the other
settings are exactly that command's. ``${variable}`` substitutes a variable and ``${stage.key}`` an
earlier stage's resolved setting, or what it left behind: ``${teacher.model}`` (``train`` and
``distill-mlm``: ``<folder>/model``; ``export``: its folder) and ``${mined.output}`` (``mine`` and
``label``: the jsonl file). Each stage writes under ``<output_dir>/<stage name>/``.

Example::

    description: BM25 negatives, a bi-encoder, evaluated
    variables: {output_dir: runs/tiny, seed: 13}
    stages:
      negatives: {command: mine, data: demo, num_negatives: 7}
      reranker: {command: train, train_file: "${negatives.output}", loss: mnrl, seed: "${seed}"}
      scored: {command: eval, data: demo, model: "${reranker.model}"}

Everything is checked (:func:`load_plan`) before any stage runs; finished stages are skipped on a
rerun and unfinished ones resume (:func:`run_pipeline`).
"""

from __future__ import annotations

from distilrank.pipeline.plan import COMMANDS, Plan, Stage, load_plan, resolve_pipeline_path
from distilrank.pipeline.run import describe_plan, plan_steps, read_state, run_pipeline

__all__ = ["COMMANDS", "Plan", "Stage", "describe_plan", "load_plan", "plan_steps", "read_state",
           "resolve_pipeline_path", "run_pipeline"]
