"""The rerank request and response shapes that existing clients send and parse.

One body serves them all: Cohere v1 (``documents`` as strings or objects, ``rank_fields``,
``return_documents``), Cohere v2 (``max_tokens_per_doc``), Jina (``{"text"}`` objects), vLLM
(``top_n: 0`` = all) and Infinity (``raw_scores``; reads ``usage``). Fields a client sends that
change nothing here (``model``, ``priority``, ``max_chunks_per_doc``...) are accepted and ignored.

The answer carries what each client reads: ``id``, ``model``, ``results[].{index,
relevance_score, document?.text}`` (best first), ``usage.{prompt_tokens, total_tokens}`` and
``meta`` (Cohere's ``ApiMeta`` keeps unknown keys, so ours ride along there).
"""

from __future__ import annotations

import copy
import functools
import math
import re
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SCORE_SCALES = ("raw", "sigmoid")


class RequestError(Exception):
    """A body that parsed but cannot be served; answered 422 naming ``loc`` (as pydantic's errors do)."""

    def __init__(self, loc: list[str | int], msg: str) -> None:
        super().__init__(msg)
        self.loc, self.msg = loc, msg


@functools.cache
def request_model() -> type:
    """The pydantic model of a rerank body (built on first use: pydantic comes with [serve])."""
    from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr, field_validator

    class RerankRequest(BaseModel):
        query: StrictStr
        documents: list[Any] = Field(min_length=1)  # strings or objects: read by document_texts()
        top_n: StrictInt | None = Field(default=None, ge=0)  # 0 or null: all (vLLM sends 0)
        return_documents: StrictBool | None = None  # null: false
        rank_fields: list[StrictStr] | None = None  # object fields scored, in order (default: text)
        max_tokens_per_doc: StrictInt | None = Field(default=None, ge=1)  # null: no cut but the model's
        raw_scores: StrictBool | None = None  # Infinity: true gives raw scores whatever score_scale says
        model: str | None = None  # clients send one; the served model is fixed at start-up

        @field_validator("query")
        @classmethod
        def _not_blank(cls, v: str) -> str:
            if not v.strip():
                raise ValueError("query must not be empty or blank")
            return v

    return RerankRequest


def document_texts(documents: Sequence[Any], rank_fields: Sequence[str] | None) -> list[str]:
    """The text scored for each document: a string as is; an object's ``rank_fields`` values joined by
    newlines (default: its ``text``). Raises RequestError naming the first bad document and field."""
    fields = list(rank_fields or ["text"])
    hint = "" if rank_fields else " (or name the fields to score with rank_fields)"
    texts = []
    for i, doc in enumerate(documents):
        if isinstance(doc, str):
            texts.append(doc)
            continue
        if not isinstance(doc, dict):
            raise RequestError(["documents", i], f"must be a string or an object with a \"text\" field, "
                                                 f"got {type(doc).__name__}")
        values = []
        for f in fields:
            value = doc.get(f)
            if not isinstance(value, str):
                what = "missing" if f not in doc else f"a {type(value).__name__}, not a string"
                raise RequestError(["documents", i, f], f"field {f!r} is {what}{hint}")
            values.append(value)
        texts.append("\n".join(values))
    return texts


@dataclass(frozen=True)
class Prepared:
    source: list[str]  # each document's text as given (document_texts)
    texts: list[str]  # the documents as scored (cut to max_tokens_per_doc)
    truncated: int  # how many were cut
    prompt_tokens: int  # query tokens per document plus the (cut) documents' tokens


class TokenCounter:
    """Counts and cuts texts in the served model's tokens, without special tokens or templates.

    It keeps its own copy of the tokenizer: a fast tokenizer shared with the scoring thread fails
    ("Already borrowed") when one thread changes its truncation while the other encodes. With no
    tokenizer (a stand-in scorer), whitespace-separated words count as tokens.
    """

    def __init__(self, tokenizer: Any | None) -> None:
        self._tok = copy.deepcopy(tokenizer) if tokenizer is not None else None
        self._lock = threading.Lock()

    def prepare(self, query: str, texts: list[str], max_tokens: int | None) -> Prepared:
        with self._lock:
            query_tokens = len(self._encode([query])[0][0])
            encoded = self._encode(texts)
        cut, truncated, doc_tokens = [], 0, 0
        for text, (ids, ends) in zip(texts, encoded):
            if max_tokens is not None and len(ids) > max_tokens:
                text, truncated = self._cut(text, ids, ends, max_tokens), truncated + 1
            doc_tokens += min(len(ids), max_tokens or len(ids))
            cut.append(text)
        return Prepared(list(texts), cut, truncated, query_tokens * len(texts) + doc_tokens)

    def _encode(self, texts: list[str]) -> list[tuple[list[Any], list[int] | None]]:
        """Each text's tokens and, where known, the character offset each token ends at."""
        if self._tok is None:
            return [(m, [w.end() for w in m]) for m in (list(re.finditer(r"\S+", t)) for t in texts)]
        fast = bool(getattr(self._tok, "is_fast", False))
        enc = self._tok(texts, add_special_tokens=False, return_offsets_mapping=fast, verbose=False)
        offsets = enc["offset_mapping"] if fast else [None] * len(texts)
        return [(ids, [e for _, e in off] if off is not None else None)
                for ids, off in zip(enc["input_ids"], offsets)]

    def _cut(self, text: str, ids: list[Any], ends: list[int] | None, n: int) -> str:
        """``text`` up to the end of its ``n``-th token (the original characters where offsets are known)."""
        if ends is not None:
            return text[:ends[n - 1]]
        return self._tok.decode(ids[:n])


def scaled(score: float, scale: str) -> float:
    """``score`` on the ``scale`` asked for: "raw" as the model gave it, "sigmoid" in (0, 1)."""
    if scale == "raw":
        return score
    if score >= 0:  # the two branches keep exp() from overflowing
        return 1.0 / (1.0 + math.exp(-score))
    e = math.exp(score)
    return e / (1.0 + e)


def rerank_response(req: Any, scores: list[float], prepared: Prepared, *, model: str,
                    scale: str) -> dict[str, Any]:
    """The answer body (without ``meta.seconds``): results best first, ties in input order."""
    if req.raw_scores:
        scale = "raw"
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:req.top_n or None]  # raw order: no saturation ties
    results = []
    for i in order:
        item: dict[str, Any] = {"index": i, "relevance_score": scaled(scores[i], scale)}
        if req.return_documents:
            doc = req.documents[i]
            item["document"] = {"text": doc} if isinstance(doc, str) else {"text": prepared.source[i], **doc}
        results.append(item)
    tokens = prepared.prompt_tokens
    meta: dict[str, Any] = {"documents": len(scores), "truncated_documents": prepared.truncated,
                            "score_scale": scale, "tokens": {"input_tokens": tokens, "output_tokens": 0}}
    if prepared.truncated:
        meta["warnings"] = [f"{prepared.truncated} of {len(scores)} documents were cut to "
                            f"max_tokens_per_doc={req.max_tokens_per_doc} tokens"]
    return {"id": str(uuid.uuid4()), "model": model, "results": results,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}, "meta": meta}
