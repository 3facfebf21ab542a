"""The user-facing scoring API: ``Reranker.load(path).rank(query, docs)``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from distilrank.data.passages import default_score_batch_size
from distilrank.errors import ConfigError
from distilrank.models.bi_encoder import BiEncoder
from distilrank.models.cross_encoder import CrossEncoder
from distilrank.models.kind import check_encoder, load_scorer
from distilrank.models.seq2seq import Seq2SeqReranker

if TYPE_CHECKING:
    from distilrank.inference.onnx_backend import OnnxBiEncoder, OnnxCrossEncoder

BACKENDS = ("auto", "torch", "onnx")


@dataclass(frozen=True)
class RankResult:
    index: int  # position of the document in the list given to rank()
    text: str
    score: float


class Reranker:
    """Scores (query, document) pairs with a saved cross-encoder, bi-encoder or monoT5-style seq2seq reranker.

    A folder written by ``distilrank export`` (``model.onnx``) is scored by onnxruntime on the CPU. A
    bi-encoder's score is the cosine of the query's and the document's embeddings.

    Example:
        >>> rr = Reranker.load("runs/demo/model")                       # doctest: +SKIP
        >>> rr.rank("how do I sort a list", ["sorted(iterable)...", "..."], top_k=3)  # doctest: +SKIP
    """

    def __init__(self, model: CrossEncoder | BiEncoder | Seq2SeqReranker | OnnxCrossEncoder | OnnxBiEncoder,
                 batch_size: int = 0) -> None:
        if batch_size < 0:
            raise ConfigError(f"batch_size must be >= 0 (0: 8 pairs on CPU, 64 on GPU), got {batch_size}")
        self.model = model
        self.batch_size = batch_size or default_score_batch_size(model.device)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        device: str | None = None,
        batch_size: int = 0,
        max_length: int | None = None,
        dtype: torch.dtype | None = None,
        backend: str = "auto",
        long_documents: str = "",
        passage_stride: int = 0,
        max_passages: int = -1,
        encoder: str = "",
        allow_new_head: bool = False,
    ) -> Reranker:
        """Load a saved reranker folder: any HF sequence-classification or T5-family (monoT5) checkpoint.

        ``backend``: "torch" (PyTorch), "onnx" (onnxruntime on ``model.onnx``, CPU only) or "auto"
        (ONNX when the folder holds ``model.onnx``, else PyTorch). ``batch_size`` 0: pairs per forward
        pass chosen by device, 8 on CPU (faster there than larger batches) and 64 on GPU.

        Documents longer than ``max_length``: ``long_documents`` "firstp" (truncated) or "maxp" (the best
        of overlapping passages sharing ``passage_stride`` tokens, at most ``max_passages``); left
        empty / 0 / -1, the split the model was trained with (cross-encoders only).

        What the folder is decides how it scores (:func:`~distilrank.models.kind.detect_model_kind`): a
        sentence-transformers embedding model by the cosine of its pooled embeddings, as saved. ``encoder``
        "bi" scores any encoder that way (e.g. a distill-mlm student, zero-shot); "cross" as a cross-encoder.
        A folder without a trained scoring head is refused unless ``encoder="cross", allow_new_head=True``.
        """
        passages = {"mode": long_documents, "stride": passage_stride, "max_passages": max_passages}
        reranker = cls._load(path, device=device, batch_size=batch_size, max_length=max_length, dtype=dtype,
                             backend=backend, scoring=(encoder, allow_new_head))
        if long_documents or passage_stride or max_passages >= 0:
            if not hasattr(reranker.model, "passages"):
                raise ConfigError(f"long_documents / passage_stride / max_passages apply to cross-encoders; "
                                  f"{path} is a {type(reranker.model).__name__}, which truncates long documents")
            reranker.model.passages = reranker.model.passages.override(**passages)
        return reranker

    @classmethod
    def _load(cls, path: str | Path, *, device: str | None, batch_size: int, max_length: int | None,
              dtype: torch.dtype | None, backend: str, scoring: tuple[str, bool]) -> Reranker:
        p = Path(path)
        if str(path) and not p.exists() and (p.is_absolute() or str(path).startswith(".")):
            raise ConfigError(f"no model folder at {p}")
        if backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        check_encoder(scoring[0])
        onnx_file = p / "model.onnx"
        if backend == "auto":
            backend = "onnx" if onnx_file.is_file() else "torch"
        if backend == "onnx":
            model = _load_onnx(p, device=device, max_length=max_length, dtype=dtype)
            if scoring[0] and scoring[0] != ("bi" if type(model).__name__ == "OnnxBiEncoder" else "cross"):
                raise ConfigError(f"{p} is an ONNX export of a {type(model).__name__}; encoder={scoring[0]} cannot "
                                  "change how an export scores: drop encoder, or load the checkpoint it came from")
            return cls(model, batch_size=batch_size)
        if onnx_file.is_file() and not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
            raise ConfigError(f"{p} holds only an ONNX export (model.onnx, no PyTorch weights); load it with "
                              "backend='onnx' (or 'auto'), or pass the checkpoint folder it was exported from")
        # max_length None: the length the model was trained with (saved as the tokenizer's maximum)
        model = load_scorer(str(path), encoder=scoring[0], allow_new_head=scoring[1], dtype=dtype,
                            max_length=max_length)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device).eval()
        return cls(model, batch_size=batch_size)

    def score(self, pairs: Sequence[tuple[str, str]], *, show_progress: bool = False) -> list[float]:
        """Relevance scores for (query, document) pairs, in input order.

        Cross-encoder: the raw logit. Seq2seq: log P(true) = ``log_softmax([false, true])[1]`` (monoT5).
        """
        for i, pair in enumerate(pairs):
            if len(pair) != 2 or not all(isinstance(t, str) for t in pair):
                raise ConfigError(f"pair {i} must be a (query, document) tuple of two strings")
        return self.model.score(pairs, batch_size=self.batch_size, show_progress=show_progress)

    def rank(self, query: str, docs: Sequence[str], top_k: int | None = None) -> list[RankResult]:
        """Documents sorted by score, best first (ties keep input order); ``top_k`` cuts the list."""
        if not isinstance(query, str) or not query.strip():
            raise ConfigError("query must be a non-empty string")
        scores = self.score([(query, d) for d in docs])
        order = sorted(range(len(docs)), key=lambda i: -scores[i])
        return [RankResult(i, docs[i], scores[i]) for i in order[:top_k]]

    def get_scores(
        self, query: str, docs: Sequence[str], return_logits: bool = False
    ) -> list[float] | tuple[list[float], list[list[float]]]:
        """InRanker's API: scores of ``docs`` for ``query``, in input order.

        With ``return_logits`` (seq2seq rerankers only) also each document's ``[false_logit, true_logit]``.
        """
        if not isinstance(query, str) or not query.strip():
            raise ConfigError("query must be a non-empty string")
        if isinstance(self.model, Seq2SeqReranker):
            return self.model.get_scores(query, docs, return_logits, batch_size=self.batch_size)
        if return_logits:
            raise ConfigError("return_logits=True needs a seq2seq (monoT5-style) reranker: only those have "
                              "true/false logits; this model is a cross-encoder with one score per pair")
        return self.score([(query, d) for d in docs])


def _load_onnx(path: Path, *, device: str | None, max_length: int | None,
               dtype: torch.dtype | None) -> OnnxCrossEncoder | OnnxBiEncoder:
    from distilrank.inference.onnx_backend import load_export

    if not (path / "model.onnx").is_file():
        raise ConfigError(f"backend='onnx' needs {path / 'model.onnx'}, which does not exist; export the model "
                          f"with `distilrank export model={path} output_dir=<new folder>` or use backend='torch'")
    if device not in (None, "cpu"):
        raise ConfigError(f"the ONNX backend runs on the CPU (onnxruntime); got device={device!r}: "
                          "leave device unset, or use backend='torch' for a GPU")
    if dtype is not None:
        raise ConfigError("dtype applies to the PyTorch backend; an ONNX export keeps the precision it was "
                          "exported with (fp32 or int8)")
    return load_export(path, max_length=max_length)
