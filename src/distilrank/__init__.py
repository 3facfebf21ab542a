"""distilrank: build small, fast passage rerankers by knowledge distillation."""

from distilrank.config import (
    DemoConfig,
    EvalConfig,
    MineConfig,
    RankConfig,
    TrainConfig,
    load_config,
)
from distilrank.errors import ConfigError, DataError, DistilrankError
from distilrank.inference.reranker import RankResult, Reranker
from distilrank.models.cross_encoder import CrossEncoder

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "CrossEncoder",
    "DataError",
    "DemoConfig",
    "DistilrankError",
    "EvalConfig",
    "MineConfig",
    "RankConfig",
    "RankResult",
    "Reranker",
    "TrainConfig",
    "load_config",
]
