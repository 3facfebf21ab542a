"""Long documents: overlapping passages scored by max (MaxP) or the first passage only (FirstP).

One function, :func:`encode_passages`, builds the model input for training, evaluation and
inference, so a document is cut the same way everywhere. The windows come from the fast
tokenizer itself (``truncation="only_second"`` with ``return_overflowing_tokens`` and ``stride``):
each passage repeats the query, and neighbouring passages share ``stride`` document tokens.
:func:`passage_stats` counts, without hiding it, how many documents did not fit one window.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from distilrank.data.collate import EncodedPairs
from distilrank.errors import ConfigError

MODES = ("firstp", "maxp")
SCORE_CHUNK = 16384  # pairs tokenized at once when scoring: bounds the memory of the token lists
CPU_SCORE_BATCH = 8  # pairs per forward pass on a CPU (see default_score_batch_size)
GPU_SCORE_BATCH = 64  # pairs per forward pass on a GPU
CONFIG_KEY = "distilrank_passages"  # the attribute of a saved model's config.json that records the split


@dataclass(frozen=True)
class PassageSplit:
    """How a document longer than one window is scored.

    ``firstp``: the pair is truncated to ``max_length`` (longest first, as sentence-transformers and
    ``transformers`` do), so only the document's start is read. ``maxp``: the document is cut into
    windows that each hold the query and up to ``max_length`` tokens in all, neighbours sharing
    ``stride`` document tokens; the score is the best window's (Dai & Callan, 2019). At most
    ``max_passages`` windows per document are scored (0: all); documents cut there are counted.
    """

    mode: str = "firstp"
    stride: int = 64
    max_passages: int = 16

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"long_documents must be one of {MODES}, got {self.mode!r}")
        if self.stride < 0 or self.max_passages < 0:
            raise ConfigError(f"passage_stride and max_passages must be >= 0, got {self.stride} and {self.max_passages}")

    @classmethod
    def from_model_config(cls, config: Any) -> PassageSplit:
        """The split a checkpoint was trained with (FirstP for checkpoints that recorded none)."""
        saved = getattr(config, CONFIG_KEY, None)
        return cls(**saved) if isinstance(saved, dict) else cls()

    def record(self, config: Any) -> None:
        """Write this split into a model config, so a loaded checkpoint scores as it was trained."""
        setattr(config, CONFIG_KEY, asdict(self))

    def override(self, mode: str = "", stride: int = 0, max_passages: int = -1) -> PassageSplit:
        """This split with the settings that are given (empty / 0 / -1: keep)."""
        return PassageSplit(mode or self.mode, stride or self.stride,
                            self.max_passages if max_passages < 0 else max_passages)


def _special_tokens(tokenizer: Any) -> int:
    return tokenizer.num_special_tokens_to_add(pair=True)


def _query_cap(tokenizer: Any, max_length: int) -> int:
    return max(1, max_length // 2 - _special_tokens(tokenizer))


def _check_stride(tokenizer: Any, split: PassageSplit, max_length: int) -> None:
    room = max_length - _special_tokens(tokenizer) - _query_cap(tokenizer, max_length)  # document tokens per window
    if split.stride >= room:
        raise ConfigError(f"passage_stride {split.stride} must be below the {room} document tokens a window of "
                          f"max_length {max_length} holds; lower passage_stride (e.g. {room // 4}) or raise max_length")


def cap_queries(tokenizer: Any, queries: Sequence[str], max_length: int) -> tuple[list[str], int]:
    """Queries cut to half the window (so every passage keeps room for the document); how many were cut."""
    cap = _query_cap(tokenizer, max_length)
    enc = tokenizer(list(queries), add_special_tokens=False, truncation=True, max_length=cap,
                    return_overflowing_tokens=False, return_offsets_mapping=True, return_length=False)
    out, cut = [], 0
    for q, ids, offsets in zip(queries, enc["input_ids"], enc["offset_mapping"]):
        end = offsets[-1][1] if offsets else len(q)
        if len(ids) == cap and q[end:].strip():
            out.append(q[:end])
            cut += 1
        else:
            out.append(q)
    return out, cut


def encode_passages(
    tokenizer: Any, queries: Sequence[str], docs: Sequence[str], max_length: int, split: PassageSplit
) -> tuple[EncodedPairs, np.ndarray]:
    """``(windows, owner)``: token ids of every scored window, and ``owner[i]``, the pair window ``i`` belongs to.

    FirstP gives one window per pair (``owner = arange(n)``), the plain truncated encoding.
    MaxP windows of a pair are consecutive and in document order.
    """
    if split.mode == "firstp":
        return EncodedPairs.from_tokenizer(tokenizer, queries, docs, max_length), np.arange(len(queries))
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("long_documents=maxp needs a fast (Rust) tokenizer: it cuts the windows")
    _check_stride(tokenizer, split, max_length)
    capped, _ = cap_queries(tokenizer, queries, max_length)
    enc = tokenizer(capped, list(docs), truncation="only_second", max_length=max_length, stride=split.stride,
                    return_overflowing_tokens=True)
    owner = np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64)
    keep = np.arange(len(owner))
    if split.max_passages:
        first = np.searchsorted(owner, owner, side="left")  # index of each owner's first window (owner is sorted)
        keep = keep[(keep - first) < split.max_passages]
    fields = {k: [enc[k][i] for i in keep] for k in enc if k != "overflow_to_sample_mapping"}
    return EncodedPairs.from_encoding(tokenizer, fields), owner[keep]


def pair_progress(progress: Callable[[int], object], n_pairs: int, n_windows: int) -> Callable[[int], None]:
    """A progress callback fed scored windows that reports whole pairs (bars count pairs, not passages)."""
    done = {"windows": 0, "pairs": 0}

    def update(windows: int) -> None:
        done["windows"] += windows
        pairs = n_pairs * done["windows"] // max(1, n_windows)
        progress(pairs - done["pairs"])
        done["pairs"] = pairs

    return update


def max_per_owner(window_scores: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """``out[j] = max(window_scores[owner == j])``: each pair's best window (MaxP)."""
    out = np.full(n, -np.inf, dtype=np.float64)
    np.maximum.at(out, owner, window_scores)
    return out


def max_per_owner_torch(window_scores: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    """The differentiable MaxP of training: (W,) window scores -> (n,) document scores."""
    init = torch.full((n,), float("-inf"), dtype=window_scores.dtype, device=window_scores.device)
    return init.scatter_reduce(0, owner, window_scores, reduce="amax", include_self=True)


def passage_stats(tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int,
                  split: PassageSplit) -> dict[str, Any]:
    """How many candidate documents did not fit one window, and what was done with them.

    Counted per (query, document) pair from exact token counts (each distinct text tokenized once).
    """
    queries = [q for q, _ in pairs]
    if split.mode == "maxp":
        queries, queries_cut = cap_queries(tokenizer, list(dict.fromkeys(queries)), max_length)
        capped = dict(zip(dict.fromkeys(q for q, _ in pairs), queries))
        queries = [capped[q] for q, _ in pairs]
    else:
        queries_cut = 0
    texts = list(dict.fromkeys([*queries, *(d for _, d in pairs)]))
    ids = tokenizer(texts, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False,
                    verbose=False)["input_ids"]
    n_tokens = {t: len(x) for t, x in zip(texts, ids)}
    special = _special_tokens(tokenizer)
    longer = passages = cut = 0
    for q, (_, d) in zip(queries, pairs):
        room = max_length - special - n_tokens[q]
        if n_tokens[d] <= room:
            passages += 1
            continue
        longer += 1
        if split.mode == "firstp":
            passages += 1
            continue
        windows = 1 + math.ceil((n_tokens[d] - room) / max(1, room - split.stride))
        scored = min(windows, split.max_passages) if split.max_passages else windows
        passages += scored
        cut += windows > scored
    return {"mode": split.mode, "max_length": max_length, "stride": split.stride, "max_passages": split.max_passages,
            "pairs": len(pairs), "longer_than_window": longer,
            "truncated": longer if split.mode == "firstp" else cut, "split": longer if split.mode == "maxp" else 0,
            "passages_scored": passages, "queries_cut": queries_cut}


def describe_stats(stats: dict[str, Any]) -> str:
    """One line for reports: how many documents were longer than the window, and what happened to them."""
    n, longer = stats["pairs"], stats["longer_than_window"]
    share = f"{longer / n:.1%}" if n else "0%"
    head = f"long documents: {longer} of {n} candidates ({share}) exceed max_length {stats['max_length']}"
    if stats["mode"] == "firstp":
        return head + ": truncated (long_documents=firstp: only their start is read)"
    line = (head + f": split into passages (long_documents=maxp, stride {stats['stride']}), "
            f"{stats['passages_scored']} passages scored")
    if stats["truncated"]:
        line += f"; {stats['truncated']} cut at max_passages={stats['max_passages']}"
    if stats["queries_cut"]:
        line += f"; {stats['queries_cut']} queries cut to half the window"
    return line


def default_score_batch_size(device: Any) -> int:
    """Pairs per scoring batch when the caller sets none (``batch_size`` 0): 8 on a CPU, 64 on a GPU.

    On CPU small batches keep each layer's activations in cache. On this project's 2-core machine
    (``benchmarks/bench_batch_size.py``, RESULTS.md "Scoring batch size on CPU"), batches of 8 scored
    TREC DL 2019 pairs 4-12% faster than 16, 12-21% faster than 32 and 32-53% faster than 64, for
    PyTorch, ONNX fp32 and ONNX int8 alike. On the shorter demo pairs, 8 and 16 were within 5% of
    each other and both faster than 64. GPUs want large batches.
    """
    kind = device.type if isinstance(device, torch.device) else str(device).split(":")[0]
    return GPU_SCORE_BATCH if kind not in ("cpu", "") else CPU_SCORE_BATCH


def score_in_passages(
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    run_batch: Callable[[dict[str, torch.Tensor]], np.ndarray],
    *,
    max_length: int,
    split: PassageSplit,
    batch_size: int,
    show_progress: bool = False,
) -> list[float]:
    """The scoring loop of the encoder backends (PyTorch and ONNX): one score per pair, in input order.

    Per chunk of ``SCORE_CHUNK`` pairs: tokenized in one call into passages (one per pair with
    FirstP), run in exact token-length order by ``run_batch`` (``{field: (B, L)}`` -> ``(B,)``
    scores), each batch padded to its own longest row, then each pair's best passage taken.
    """
    from tqdm.auto import tqdm

    from distilrank.data.collate import length_sorted_batches

    scores = np.zeros(len(pairs), dtype=np.float64)
    with tqdm(total=len(pairs), desc="scoring", unit="pair", disable=not show_progress) as bar:
        for start in range(0, len(pairs), SCORE_CHUNK):
            chunk = pairs[start : start + SCORE_CHUNK]
            encoded, owner = encode_passages(tokenizer, [q for q, _ in chunk], [d for _, d in chunk], max_length, split)
            window_scores, update = np.zeros(len(owner), dtype=np.float64), pair_progress(bar.update, len(chunk),
                                                                                          len(owner))
            for rows in length_sorted_batches(encoded.lengths, batch_size):
                window_scores[rows] = run_batch(encoded.batch(rows))
                update(len(rows))
            scores[start : start + len(chunk)] = (window_scores if len(owner) == len(chunk)
                                                  else max_per_owner(window_scores, owner, len(chunk)))
    return scores.tolist()
