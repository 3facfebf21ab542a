"""monoT5-style reranker over any T5-family model: relevance = P("true") at the first decoder step.

Nogueira et al. 2020, "Document Ranking with a Pretrained Sequence-to-Sequence Model": the input is
``Query: {q} Document: {d} Relevant:`` and the score is the log-softmax of the ``true`` token's
logit against the ``false`` token's at the first decoder step. InRanker distils these two logits.
One function, :meth:`Seq2SeqReranker.encode_pairs`, builds the input for training, labelling and
inference, so the three cannot drift apart.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, BatchEncoding

from distilrank.data.collate import EncodedPairs, length_sorted_batches
from distilrank.data.passages import SCORE_CHUNK, default_score_batch_size
from distilrank.errors import ConfigError
from distilrank.models.cross_encoder import (
    CrossEncoder,
    max_positions,
    resolve_model_path,
)

logger = logging.getLogger(__name__)

TEMPLATE = "Query: {query} Document: {document} Relevant:"
# The template in the pieces a too-long input is rebuilt from: PREFIX " q" MIDDLE " d" SUFFIX.
PREFIX, MIDDLE, SUFFIX = "Query:", " Document:", " Relevant:"
DEFAULT_MAX_LENGTH = 512  # monoT5's and InRanker's input length
# A tokenizer's model_max_length above this was never set (transformers stores ~1e30 then).
SANE_MAX_LENGTH = 100_000


def label_token_id(tokenizer, word: str, source: str) -> int:
    """The single token id of ``word`` ("true"/"false"; for T5 "▁true" = 1176, "▁false" = 6136)."""
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise ConfigError(
            f"the tokenizer of '{source}' lacks single 'true'/'false' tokens ('{word}' -> {pieces}), "
            "so it cannot be a monoT5-style reranker; use a T5-family checkpoint (e.g. t5-base, "
            "castorini/monot5-base-msmarco) or score with a cross-encoder"
        )
    return ids[0]


@dataclass(frozen=True)
class TemplateIds:
    """Token ids of the template's fixed parts, for rebuilding inputs that are too long."""

    before: list[int]  # special tokens the tokenizer puts first (none for T5)
    after: list[int]  # special tokens it puts last (T5: EOS)
    prefix: list[int]  # "Query:"
    middle: list[int]  # " Document:"
    suffix: list[int]  # " Relevant:"

    @classmethod
    def from_tokenizer(cls, tokenizer) -> TemplateIds:
        plain = tokenizer("x", add_special_tokens=False)["input_ids"]
        full = tokenizer("x")["input_ids"]
        lead = next((i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain), None)
        if lead is None:
            raise ConfigError(f"cannot tell which special tokens {type(tokenizer).__name__} adds to an input")
        parts = tokenizer([PREFIX, MIDDLE, SUFFIX], add_special_tokens=False)["input_ids"]
        return cls(full[:lead], full[lead + len(plain) :], *parts)

    @property
    def fixed(self) -> int:
        """Tokens every input has whatever its query and document."""
        return len(self.before) + len(self.prefix) + len(self.middle) + len(self.suffix) + len(self.after)


def _fp32_linear(module: nn.Linear, hidden: Tensor) -> Tensor:
    bias = None if module.bias is None else module.bias.float()
    return nn.functional.linear(hidden.float(), module.weight.float(), bias)


def lm_head_in_fp32(model: nn.Module) -> None:
    """Compute the LM head's logits in float32 from half-precision decoder states, in place.

    A bf16 logit keeps 8 bits of mantissa: near-tied true/false logits would round together and the
    documents' order fall to the tie-break. (The head's weights stay shared with the embeddings.)
    """
    head = model.get_output_embeddings()
    if isinstance(head, nn.Linear):
        head.forward = partial(_fp32_linear, head)


def check_texts(queries: Sequence[str], docs: Sequence[str]) -> None:
    if len(queries) != len(docs):
        raise ConfigError(f"got {len(queries)} queries but {len(docs)} documents; pass one query per document")
    for i, (q, d) in enumerate(zip(queries, docs)):
        for name, text in (("query", q), ("document", d)):
            if not isinstance(text, str) or not text.strip():
                raise ConfigError(f"pair {i}: the {name} must be a non-empty string, got {text!r}")


def pack(rows: Sequence[Sequence[int]], pad_id: int, left_padding: bool = False) -> EncodedPairs:
    """Token-id rows -> :class:`EncodedPairs` (flat ids, offsets, lengths), ready to batch and pad."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
    return EncodedPairs({"input_ids": flat}, offsets, lengths, {"input_ids": pad_id, "attention_mask": 0},
                        left_padding)


class Seq2SeqReranker(nn.Module):
    """``AutoModelForSeq2SeqLM`` scoring pairs monoT5-style, plus its tokenizer.

    Saved checkpoints are plain Hugging Face folders (``AutoModelForSeq2SeqLM`` loads them).
    """

    def __init__(self, model: nn.Module, tokenizer, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        super().__init__()
        source = getattr(model.config, "_name_or_path", "") or type(model).__name__
        if tokenizer.pad_token_id is None:
            raise ConfigError(f"the tokenizer of '{source}' has no padding token")
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.true_id = label_token_id(tokenizer, "true", source)
        self.false_id = label_token_id(tokenizer, "false", source)
        self.template = TemplateIds.from_tokenizer(tokenizer)
        self.check_max_length(max_length)
        start = getattr(model.config, "decoder_start_token_id", None)
        if start is None:
            start = getattr(getattr(model, "generation_config", None), "decoder_start_token_id", None)
        self.decoder_start_id = tokenizer.pad_token_id if start is None else int(start)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str, *, max_length: int | None = None, dtype: torch.dtype | None = None
    ) -> Seq2SeqReranker:
        path = resolve_model_path(name_or_path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            # Check the labels before loading weights: a wrong 3B teacher should fail in seconds.
            for word in ("true", "false"):
                label_token_id(tokenizer, word, name_or_path)
            model = AutoModelForSeq2SeqLM.from_pretrained(path, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot load '{name_or_path}' as a seq2seq (T5-family) model: {exc}. "
                "Pass a local folder of a T5-style checkpoint."
            ) from None
        if dtype in (torch.bfloat16, torch.float16):
            lm_head_in_fp32(model)
        if max_length is None:  # the length the checkpoint was saved with, if it ever set one
            saved = getattr(tokenizer, "model_max_length", None)
            max_length = saved if isinstance(saved, int) and 0 < saved <= SANE_MAX_LENGTH else DEFAULT_MAX_LENGTH
            max_length = min(max_length, max_positions(model.config) or max_length)
        return cls(model, tokenizer, max_length=max_length)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def check_max_length(self, max_length: int) -> None:
        least = self.template.fixed + 1  # room for at least one query token
        limit = max_positions(self.model.config)  # None for T5 (relative positions)
        if max_length < least or (limit is not None and max_length > limit):
            bound = f"between {least} and {limit}" if limit is not None else f"at least {least}"
            raise ConfigError(f"max_length must be {bound} for this model and template, got {max_length}")

    def encode_pairs(
        self, queries: Sequence[str], docs: Sequence[str], max_length: int | None = None
    ) -> list[list[int]]:
        """THE input builder: token ids of ``TEMPLATE`` for each pair, at most ``max_length`` long.

        An input that fits is exactly ``tokenizer(TEMPLATE.format(...))`` (what monoT5 is fed). One
        that does not has its document cut so it is exactly ``max_length`` tokens and still ends with
        `` Relevant:`` + EOS (truncating the whole string would cut the question the model answers);
        a query too long even for an empty document is cut too, keeping ``Document:``.
        """
        max_length = max_length or self.max_length
        self.check_max_length(max_length)
        queries, docs = list(queries), list(docs)
        check_texts(queries, docs)
        if not queries:
            return []
        texts = [TEMPLATE.format(query=q, document=d) for q, d in zip(queries, docs)]
        # verbose=False: inputs above the tokenizer's maximum are expected; they are shortened below
        ids = self.tokenizer(texts, return_attention_mask=False, verbose=False)["input_ids"]
        long = [i for i, row in enumerate(ids) if len(row) > max_length]
        if long:
            fitted = self._fit([ids[i] for i in long], [queries[i] for i in long], [docs[i] for i in long], max_length)
            for i, row in zip(long, fitted):
                ids[i] = row
        return ids

    def _fit(self, full: list[list[int]], queries: list[str], docs: list[str], max_length: int) -> list[list[int]]:
        """Shorten too-long inputs ``full``: cut the document (and if need be the query), keep the rest."""
        t = self.template
        encode = self.tokenizer
        heads = encode([f"{PREFIX} {q}{MIDDLE}" for q in queries], add_special_tokens=False, verbose=False)["input_ids"]
        room = max_length - len(t.before) - len(t.suffix) - len(t.after)  # for the head and the document
        start, end = len(t.before), len(t.suffix) + len(t.after)
        rows = []
        for ids, q, d, head in zip(full, queries, docs, heads):
            if len(head) <= room:
                if ids[start : start + len(head)] == head:  # the usual case: the document's tokens are in ids
                    body = ids[start + len(head) : len(ids) - end]
                else:  # a tokenizer that merges across the template's spaces: encode " d" alone
                    body = encode(" " + d, add_special_tokens=False, verbose=False)["input_ids"]
                rows.append(t.before + head + body[: room - len(head)] + t.suffix + t.after)
                continue
            query = encode(" " + q, add_special_tokens=False, verbose=False)["input_ids"]
            keep = room - len(t.prefix) - len(t.middle)  # >= 1 by check_max_length
            rows.append(t.before + t.prefix + query[:keep] + t.middle + t.suffix + t.after)
        return rows

    def _encoded(self, queries: Sequence[str], docs: Sequence[str], max_length: int | None) -> EncodedPairs:
        rows = self.encode_pairs(queries, docs, max_length)
        return pack(rows, self.tokenizer.pad_token_id, self.tokenizer.padding_side == "left")

    def tokenize(self, queries: Sequence[str], docs: Sequence[str], max_length: int | None = None) -> BatchEncoding:
        """Pairs -> ``{input_ids, attention_mask}`` (B, L) padded to the longest row, from :meth:`encode_pairs`."""
        encoded = self._encoded(queries, docs, max_length)
        if not len(encoded.lengths):
            raise ConfigError("cannot tokenize an empty batch of pairs")
        return BatchEncoding(encoded.batch(np.arange(len(encoded.lengths))))

    def forward(self, **features: Tensor) -> Tensor:
        """``[false_logit, true_logit]`` at the first decoder step: (B, 2). One decoder step, no generate()."""
        input_ids = features["input_ids"]  # (B, L)
        start = torch.full((input_ids.shape[0], 1), self.decoder_start_id, dtype=torch.long, device=input_ids.device)
        features.setdefault("decoder_input_ids", start)  # (B, 1)
        logits = self.model(**features, use_cache=False).logits  # (B, 1, V)
        return logits[:, 0, [self.false_id, self.true_id]].float()  # (B, 2), fp32 before any softmax or loss

    @torch.inference_mode()
    def _pair_logits(
        self, pairs: Sequence[tuple[str, str]], batch_size: int, max_length: int | None, show_progress: bool
    ) -> Tensor:
        """(N, 2) float32 ``[false, true]`` logits in input order, batched in exact length order."""
        from tqdm.auto import tqdm

        was_training = self.model.training
        self.model.eval()
        out = torch.zeros((len(pairs), 2), dtype=torch.float32)
        try:
            with tqdm(total=len(pairs), desc="scoring", unit="pair", disable=not show_progress) as bar:
                for start in range(0, len(pairs), SCORE_CHUNK):  # bounds the memory of the token lists
                    chunk = pairs[start : start + SCORE_CHUNK]
                    for rows, logits in self._score_chunk(chunk, batch_size, max_length, bar.update):
                        out[torch.from_numpy(rows + start)] = logits
        finally:
            self.model.train(was_training)
        return out

    def _score_chunk(
        self, pairs: Sequence[tuple[str, str]], batch_size: int, max_length: int | None,
        progress: Callable[[int], object],
    ) -> Iterator[tuple[np.ndarray, Tensor]]:
        encoded = self._encoded([q for q, _ in pairs], [d for _, d in pairs], max_length)
        device = self.device
        for rows in length_sorted_batches(encoded.lengths, batch_size or default_score_batch_size(device)):
            features = {k: v.to(device) for k, v in encoded.batch(rows).items()}
            yield rows, self(**features).float().cpu()  # (b, 2)
            progress(len(rows))

    def score_logits(
        self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 0, max_length: int | None = None,
        show_progress: bool = False,
    ) -> list[tuple[float, float]]:
        """``(false_logit, true_logit)`` of each (query, document) pair, in input order (what InRanker distils)."""
        return [tuple(row) for row in self._pair_logits(pairs, batch_size, max_length, show_progress).tolist()]

    def score(
        self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 0, max_length: int | None = None,
        show_progress: bool = False,
    ) -> list[float]:
        """monoT5 scores: ``log_softmax([false, true])[1]`` (log P(true)) per pair, in input order."""
        logits = self._pair_logits(pairs, batch_size, max_length, show_progress)  # (N, 2)
        return logits.log_softmax(-1)[:, 1].tolist()

    def get_scores(
        self, query: str, docs: Sequence[str], return_logits: bool = False, *, batch_size: int = 64
    ) -> list[float] | tuple[list[float], list[list[float]]]:
        """InRanker's API: scores of ``docs`` for ``query``; with ``return_logits`` also ``[[false, true], ...]``."""
        logits = self._pair_logits([(query, d) for d in docs], batch_size, None, False)  # (N, 2)
        scores = logits.log_softmax(-1)[:, 1].tolist()
        return (scores, logits.tolist()) if return_logits else scores

    def save_pretrained(self, path: str | Path) -> None:
        """Write a standard HF folder (weights, config, tokenizer) with our max_length recorded."""
        path = Path(path)
        self.model.save_pretrained(path)
        self.tokenizer.model_max_length = self.max_length
        self.tokenizer.save_pretrained(path)


def _config(name_or_path: str):
    try:
        return AutoConfig.from_pretrained(resolve_model_path(name_or_path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load model '{name_or_path}': {exc}. Pass a local model folder, "
                          "or the embedded default 'packaged:all-MiniLM-L6-v2'.") from None


def is_seq2seq_checkpoint(name_or_path: str) -> bool:
    """True when the checkpoint is an encoder-decoder (T5-family) model, read from its config."""
    return bool(getattr(_config(name_or_path), "is_encoder_decoder", False))


def load_scoring_model(
    name_or_path: str, *, max_length: int | None = None, dtype: torch.dtype | None = None
) -> CrossEncoder | Seq2SeqReranker:
    """The scorer of ``name_or_path`` as its folder says (see :func:`distilrank.models.kind.load_scorer`)."""
    from distilrank.models.kind import load_scorer

    return load_scorer(name_or_path, max_length=max_length, dtype=dtype)
