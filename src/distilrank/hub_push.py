"""Push a trained model to the Hugging Face hub with a generated model card.

The card (``README.md``) names the kind of model and how to use it, and carries the training
config and the metrics table of the run that produced it (``config.yaml`` and ``metrics.json``
beside the ``model`` folder, or a metrics file given explicitly). The upload goes from a
temporary copy, so the local model folder is never changed, whether the push succeeds or fails.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from distilrank.errors import ConfigError, DistilrankError

logger = logging.getLogger(__name__)


class HubPushError(DistilrankError):
    """The hub refused or could not be reached; the local model is unchanged."""


def _kind(model_dir: Path) -> tuple[str, str, str]:
    """(description, library, pipeline tag) of the checkpoint in ``model_dir``."""
    from distilrank.models.bi_encoder import is_bi_encoder_checkpoint

    if is_bi_encoder_checkpoint(model_dir):
        return "bi-encoder (query and passage embedded apart; cosine similarity)", "sentence-transformers", \
            "sentence-similarity"
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("is_encoder_decoder"):
        return "seq2seq (monoT5-style) reranker: log P(true) per (query, passage)", "transformers", "text-ranking"
    return "cross-encoder reranker: one relevance logit per (query, passage)", "transformers", "text-ranking"


def _flat_metrics(metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """``{system: {metric: value}}`` rows from a metrics.json (nested dicts of numbers are systems)."""
    rows = {}
    for name, value in metrics.items():
        numbers = isinstance(value, Mapping) and value and all(isinstance(v, (int, float)) for v in value.values())
        if numbers and any("@" in k or k in ("MAP", "accuracy", "f1", "exact_match") for k in value):
            rows[name] = {k: float(v) for k, v in value.items()}
    return rows


def model_card(model_dir: str | Path, repo_id: str, config: Mapping[str, Any] | None = None,
               metrics: Mapping[str, Any] | None = None) -> str:
    """The README.md pushed with the model: front matter, intended use, usage, training config, metrics."""
    model_dir = Path(model_dir)
    kind, library, pipeline = _kind(model_dir)
    base = (config or {}).get("model", "")
    front = {"library_name": library, "pipeline_tag": pipeline, "tags": ["distilrank", "reranking"],
             "license": "apache-2.0"}
    if base and not Path(str(base)).exists() and not str(base).startswith("packaged:"):
        front["base_model"] = base
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", f"# {repo_id}", "",
             f"A {kind}, trained with distilrank.", "",
             "## Intended use", "",
             "Reranking the candidates of a first-stage retriever (e.g. BM25 top-100) for English passage "
             "search. Scores are comparable within one query, not across queries. Not evaluated for other "
             "languages, long documents beyond the training length, or high-stakes decisions.", "",
             "## Usage", "", "```python", "from distilrank.inference.reranker import Reranker", "",
             f'reranker = Reranker.load("{repo_id}")',
             'reranker.rank("how do I sort a list", ["sorted(iterable) returns a new list", "..."])', "```", ""]
    rows = _flat_metrics(metrics or {})
    if rows:
        names = list(dict.fromkeys(m for r in rows.values() for m in r))
        lines += ["## Metrics", "", "| system | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        lines += [f"| {s} | " + " | ".join(f"{r[m]:.4f}" if m in r else "" for m in names) + " |"
                  for s, r in rows.items()]
        lines.append("")
    if config:
        lines += ["## Training configuration", "", "```yaml", yaml.safe_dump(dict(config), sort_keys=False).strip(),
                  "```", ""]
    return "\n".join(lines)


def _run_files(model_dir: Path, metrics_file: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    run_dir = model_dir.parent
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) \
        if (run_dir / "config.yaml").is_file() else None
    path = Path(metrics_file) if metrics_file else run_dir / "metrics.json"
    if metrics_file and not path.is_file():
        raise ConfigError(f"metrics file {path} does not exist")
    metrics = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    return config, metrics


def push_to_hub(model_dir: str | Path, repo_id: str, *, private: bool = False, token: str | None = None,
                metrics_file: str = "") -> str:
    """Upload ``model_dir`` (+ a generated model card) to ``repo_id``; returns the repo URL.

    Offline (``HF_HUB_OFFLINE=1``) or on any hub failure this raises :class:`HubPushError` with one
    clear message; the local folder is left exactly as it was.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"{model_dir} is not a saved model folder (no config.json)")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ConfigError(f"repo_id must look like user/name, got {repo_id!r}")
    config, metrics = _run_files(model_dir, metrics_file)
    card = model_card(model_dir, repo_id, config, metrics)
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise HubPushError(f"cannot push {model_dir} to {repo_id}: the hub is offline (HF_HUB_OFFLINE is set); "
                           "unset it and check your network, then run the push again (the local model is unchanged)")
    with tempfile.TemporaryDirectory(prefix="distilrank-push-") as tmp:
        staged = Path(tmp) / "model"
        shutil.copytree(model_dir, staged)
        (staged / "README.md").write_text(card, encoding="utf-8")
        try:
            api = HfApi(token=token or None)
            url = api.create_repo(repo_id, private=private, exist_ok=True)
            api.upload_folder(folder_path=str(staged), repo_id=repo_id, commit_message="Upload with distilrank")
        except Exception as exc:  # offline, no token, no permission, network: one message, nothing changed
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise HubPushError(f"cannot push {model_dir} to {repo_id}: {type(exc).__name__}: {reason}; "
                               "check your network and token (huggingface-cli login or HF_TOKEN); "
                               "the local model is unchanged") from None
    return str(url)
