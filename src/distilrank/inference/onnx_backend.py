"""Score (query, document) pairs with an exported ONNX cross-encoder on onnxruntime (CPU)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distilrank.data.passages import PassageSplit, default_score_batch_size, score_in_passages
from distilrank.errors import ConfigError, MissingExtraError

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
ONNX_META = "onnx.json"


def import_onnxruntime() -> Any:
    """The onnxruntime module, or :class:`MissingExtraError` naming the `[onnx]` extra."""
    try:
        import onnxruntime
    except ImportError:
        raise MissingExtraError("onnxruntime", "onnx") from None
    return onnxruntime


def make_session(model_file: str | Path) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU with every graph optimisation enabled."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: quantised graphs log benign warnings
    return ort.InferenceSession(str(model_file), sess_options=options, providers=["CPUExecutionProvider"])


class OnnxCrossEncoder:
    """The scoring surface of :class:`~distilrank.models.cross_encoder.CrossEncoder`, run by onnxruntime.

    Reads a folder written by :func:`distilrank.inference.export.export_onnx` (``model.onnx``, the
    HF ``config.json`` and the tokenizer). Scores are the raw logits, as the PyTorch model's.

    Example:
        >>> ce = OnnxCrossEncoder.from_pretrained("runs/demo/onnx")       # doctest: +SKIP
        >>> ce.score([("sort a list", "sorted(iterable) returns a new list")])  # doctest: +SKIP
    """

    device = torch.device("cpu")

    def __init__(self, session: Any, tokenizer, max_length: int, passages: PassageSplit | None = None) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.passages = passages or PassageSplit()
        self.input_names = [i.name for i in session.get_inputs()]

    @classmethod
    def from_pretrained(cls, path: str | Path, *, max_length: int | None = None,
                        passages: PassageSplit | None = None) -> OnnxCrossEncoder:
        """Load ``path/model.onnx`` and its tokenizer; ``max_length`` None: the length saved at export.

        ``passages`` None: the long-document split recorded in the exported ``config.json``.
        """
        from transformers import AutoConfig, AutoTokenizer

        from distilrank.models.cross_encoder import max_positions

        folder = Path(path)
        model_file = folder / ONNX_FILE
        if not model_file.is_file():
            raise ConfigError(f"no {ONNX_FILE} in {folder}: export one with "
                              f"`distilrank export model=<checkpoint> output_dir={folder}`")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            config = AutoConfig.from_pretrained(str(folder))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load the tokenizer/config of the ONNX folder {folder}: {exc}") from None
        limit = max_positions(config) or 512
        if max_length is None:
            max_length = min(getattr(tokenizer, "model_max_length", None) or limit, limit)
        if not 0 < max_length <= limit:
            raise ConfigError(f"max_length {max_length} is outside what the model in {folder} can read "
                              f"(1..{limit} tokens)")
        return cls(make_session(model_file), tokenizer, max_length,
                   passages or PassageSplit.from_model_config(config))

    def eval(self) -> OnnxCrossEncoder:
        return self  # no training mode: kept so callers can treat both backends alike

    def score(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        batch_size: int = 0,
        max_length: int | None = None,
        show_progress: bool = False,
    ) -> list[float]:
        """Raw logits for (query, document) pairs, in input order (MaxP: the best passage's).

        The same loop as :meth:`CrossEncoder.score` (:func:`~distilrank.data.passages.score_in_passages`):
        exact token-length batches, each padded to its own longest row.
        """
        def run_batch(batch: dict[str, torch.Tensor]) -> np.ndarray:
            feeds = {name: batch[name].numpy() for name in self.input_names}  # field -> (B, L) int64
            return self.session.run(None, feeds)[0].reshape(-1)  # (B, 1) -> (B,)

        return score_in_passages(self.tokenizer, pairs, run_batch, max_length=max_length or self.max_length,
                                 split=self.passages, batch_size=batch_size or default_score_batch_size(self.device),
                                 show_progress=show_progress)
