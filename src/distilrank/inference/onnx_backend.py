"""Score (query, document) pairs with an exported ONNX cross-encoder or bi-encoder on onnxruntime (CPU)."""

from __future__ import annotations

import json
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


def export_kind(folder: str | Path) -> str:
    """What an export folder holds: ``"bi_encoder"`` or ``"cross_encoder"`` (from ``onnx.json``)."""
    meta = Path(folder) / ONNX_META
    if not meta.is_file():
        return "cross_encoder"  # exports written before bi-encoders could be exported
    try:
        return str(json.loads(meta.read_text(encoding="utf-8")).get("kind", "cross_encoder"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {meta}: {exc}; export the model again") from None


def load_export(folder: str | Path, max_length: int | None = None) -> OnnxCrossEncoder | OnnxBiEncoder:
    """The scoring model of an export folder, by its ``kind``: :class:`OnnxBiEncoder` or :class:`OnnxCrossEncoder`."""
    if export_kind(folder) == "bi_encoder":
        return OnnxBiEncoder.from_pretrained(folder, max_length=max_length)
    return OnnxCrossEncoder.from_pretrained(folder, max_length=max_length)


def _read_folder(folder: Path, max_length: int | None) -> tuple[Any, Any, int]:
    """An export folder's tokenizer, HF config and scoring length (``max_length`` None: the one saved at export)."""
    from transformers import AutoConfig, AutoTokenizer

    from distilrank.models.cross_encoder import max_positions

    if not (folder / ONNX_FILE).is_file():
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
    return tokenizer, config, max_length


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
        folder = Path(path)
        tokenizer, config, max_length = _read_folder(folder, max_length)
        return cls(make_session(folder / ONNX_FILE), tokenizer, max_length,
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


class OnnxBiEncoder:
    """The scoring surface of :class:`~distilrank.models.bi_encoder.BiEncoder`, run by onnxruntime.

    Reads a folder that :func:`distilrank.inference.export.export_onnx` wrote from a bi-encoder: the
    graph maps token ids to the pooled (and, as saved, L2-normalised) embedding of each text. A pair's
    score is the cosine of its two embeddings; each distinct text of a call is encoded once.
    """

    device = torch.device("cpu")

    def __init__(self, session: Any, tokenizer, max_length: int, dim: int) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.dim = dim
        self.input_names = [i.name for i in session.get_inputs()]

    @classmethod
    def from_pretrained(cls, path: str | Path, *, max_length: int | None = None) -> OnnxBiEncoder:
        folder = Path(path)
        tokenizer, config, max_length = _read_folder(folder, max_length)
        session = make_session(folder / ONNX_FILE)
        dim = session.get_outputs()[0].shape[-1]  # (batch, D): D is static in the traced graph
        return cls(session, tokenizer, max_length, dim if isinstance(dim, int) else int(config.hidden_size))

    def eval(self) -> OnnxBiEncoder:
        return self

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """``(N, D)`` float32 embeddings in input order, as :meth:`BiEncoder.encode` gives them."""
        from distilrank.models.bi_encoder import encode_by_length

        def run(batch: Sequence[str]) -> np.ndarray:
            features = self.tokenizer(list(batch), padding=True, truncation=True, max_length=self.max_length,
                                      return_tensors="np")
            return self.session.run(None, {n: features[n].astype(np.int64) for n in self.input_names})[0]

        return encode_by_length(texts, run, self.dim, batch_size, show_progress)

    def score(self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 0, max_length: int | None = None,
              show_progress: bool = False) -> list[float]:
        """Cosine similarity of each (query, document) pair, in input order."""
        from distilrank.models.bi_encoder import cosine_scores

        size = batch_size or default_score_batch_size(self.device)
        return cosine_scores(pairs, lambda texts: self.encode(texts, batch_size=size, show_progress=show_progress))
