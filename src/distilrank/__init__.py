"""distilrank: build small, fast passage rerankers by knowledge distillation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distilrank.config import (
    DemoConfig,
    DistillConfig,
    EvalConfig,
    LabelConfig,
    MineConfig,
    RankConfig,
    TrainConfig,
    load_config,
)
from distilrank.errors import ConfigError, DataError, DistilrankError

if TYPE_CHECKING:
    from distilrank.inference.reranker import RankResult, Reranker
    from distilrank.labeling import run_label
    from distilrank.models.cross_encoder import CrossEncoder
    from distilrank.models.heads import PairClassifier, QuestionAnswerer
    from distilrank.models.seq2seq import Seq2SeqReranker
    from distilrank.training.distill import run_distill
    from distilrank.training.soft import SoftLabelTrainer

__version__ = "0.1.0"

# Model classes import torch and transformers: load them on first use so `import distilrank`
# (and `distilrank --help`) stays fast.
_LAZY = {
    "CrossEncoder": "distilrank.models.cross_encoder",
    "RankResult": "distilrank.inference.reranker",
    "Reranker": "distilrank.inference.reranker",
    "run_distill": "distilrank.training.distill",
    "run_label": "distilrank.labeling",
    "Seq2SeqReranker": "distilrank.models.seq2seq",
    "SoftLabelTrainer": "distilrank.training.soft",
    "PairClassifier": "distilrank.models.heads",
    "QuestionAnswerer": "distilrank.models.heads",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'distilrank' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "CrossEncoder",
    "DataError",
    "DemoConfig",
    "DistillConfig",
    "DistilrankError",
    "EvalConfig",
    "LabelConfig",
    "MineConfig",
    "RankConfig",
    "RankResult",
    "Reranker",
    "Seq2SeqReranker",
    "SoftLabelTrainer",
    "PairClassifier",
    "QuestionAnswerer",
    "TrainConfig",
    "load_config",
    "run_distill",
    "run_label",
]
