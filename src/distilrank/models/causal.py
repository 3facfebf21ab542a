"""Pointwise causal-LM reranker (Qwen3-Reranker style): relevance from the "yes"/"no" logits at the last position.

A decoder-only model (``AutoModelForCausalLM``: Qwen3, Llama, ...) reads a prompt holding the query and
the document and would answer "yes" or "no"; the logits of ``true_token`` and ``false_token`` at the
prompt's last position are its ``[false, true]`` logits, exactly as the seq2seq (monoT5) reranker's
first decoder step. The default prompt is Qwen3-Reranker's (Zhang et al., 2025, "Qwen3 Embedding:
Advancing Text Embedding and Reranking Through Foundation Models"). One function,
:meth:`CausalReranker.encode_pairs`, builds the input for labelling, scoring and evaluation.

The settings (template, tokens) travel with a folder in ``distilrank_causal.json``; without that file
the defaults (Qwen3-Reranker's prompt, "yes"/"no") apply.
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from distilrank.data.collate import EncodedPairs
from distilrank.errors import ConfigError
from distilrank.models.cross_encoder import max_positions, resolve_model_path
from distilrank.models.seq2seq import SANE_MAX_LENGTH, Seq2SeqReranker, check_texts, pack

SETTINGS_FILE = "distilrank_causal.json"
QWEN3_SYSTEM = ('Judge whether the Document meets the requirements based on the Query and the Instruct provided. '
                'Note that the answer can only be "yes" or "no".')
QWEN3_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
DEFAULT_TEMPLATE = (
    f"<|im_start|>system\n{QWEN3_SYSTEM}<|im_end|>\n<|im_start|>user\n"
    f"<Instruct>: {QWEN3_INSTRUCTION}\n<Query>: {{query}}\n<Document>: {{document}}<|im_end|>\n"
    "<|im_start|>assistant\n<think>\n\n</think>\n\n"
)
DEFAULT_MAX_LENGTH = 1024


@dataclass(frozen=True)
class CausalSettings:
    """How a causal LM is asked: the prompt (``{query}`` then ``{document}``) and its answer tokens."""

    template: str = DEFAULT_TEMPLATE
    true_token: str = "yes"
    false_token: str = "no"

    def parts(self) -> tuple[str, str, str]:
        """``(head, middle, tail)``: the prompt is ``head + query + middle + document + tail``."""
        return split_template(self.template)

    @classmethod
    def read(cls, folder: str | Path, **overrides: str) -> CausalSettings:
        """The folder's saved settings (defaults without a file), with non-empty ``overrides`` on top."""
        path = Path(folder) / SETTINGS_FILE
        saved = {}
        if path.is_file():
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigError(f"{path}: not valid JSON ({exc}); fix or delete it") from None
        known = {k: v for k, v in saved.items() if k in ("template", "true_token", "false_token")}
        settings = cls(**{**known, **{k: v for k, v in overrides.items() if v}})
        settings.parts()  # a bad template fails here, before any weights load
        return settings


def split_template(template: str) -> tuple[str, str, str]:
    """Check a prompt template and cut it at its placeholders (literal braces are written ``{{ }}``).

    Example:
        >>> split_template("Q: {query} D: {document} Relevant?")
        ('Q: ', ' D: ', ' Relevant?')
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"template {template[:80]!r} is not a valid format string ({exc}); write literal braces "
                          "as {{ and }}") from None
    fields = [name for _, name, _, _ in parsed if name is not None]
    if fields != ["query", "document"]:
        raise ConfigError(f"template must hold {{query}} and then {{document}}, each once and nothing else in "
                          f"braces; got the fields {fields} in {template[:80]!r}")
    texts = [literal for literal, _, _, _ in parsed]
    head, middle = texts[0], texts[1]
    tail = "".join(texts[2:])
    return head, middle, tail


def answer_token_id(tokenizer, word: str, setting: str, source: str) -> int:
    """The single vocabulary id of ``word``; a word missing or split into several tokens is an error."""
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        problem = "is not in the vocabulary" if ids and ids[0] == tokenizer.unk_token_id and len(ids) == 1 \
            else f"is split into {len(ids)} tokens {pieces}"
        raise ConfigError(f"{setting}={word!r} {problem} of the tokenizer of '{source}'; pick a word the tokenizer "
                          "keeps as one token (Qwen3-Reranker: true_token=yes false_token=no)")
    return ids[0]


def _special_prefix(tokenizer) -> list[int]:
    """Special tokens the tokenizer puts before a text (Llama: BOS; Qwen: none)."""
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x")["input_ids"]
    lead = next((i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain), 0)
    return list(full[:lead])


class CausalReranker(Seq2SeqReranker):
    """``AutoModelForCausalLM`` scoring pairs by ``[false, true]`` answer-token logits at the last position.

    Scores, logits and batching are the seq2seq reranker's (:class:`Seq2SeqReranker`): ``score`` is
    ``log_softmax([false, true])[1]``, ``score_logits`` the ``(false, true)`` pair labelling writes.
    """

    def __init__(self, model: nn.Module, tokenizer, max_length: int = DEFAULT_MAX_LENGTH,
                 settings: CausalSettings | None = None) -> None:
        nn.Module.__init__(self)
        source = getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.model, self.tokenizer = model, tokenizer
        self.settings = settings or CausalSettings()
        self.head, self.middle, self.tail = self.settings.parts()
        self.true_id = answer_token_id(tokenizer, self.settings.true_token, "true_token", source)
        self.false_id = answer_token_id(tokenizer, self.settings.false_token, "false_token", source)
        self.before = _special_prefix(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self.max_length = max_length
        self.check_max_length(max_length)

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, max_length: int | None = None, dtype: torch.dtype | None = None,
                        template: str = "", true_token: str = "", false_token: str = "") -> CausalReranker:
        """Load a causal LM folder; ``template``/``true_token``/``false_token`` override its saved settings."""
        path = resolve_model_path(name_or_path)
        settings = CausalSettings.read(path, template=template, true_token=true_token, false_token=false_token)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            for word, setting in ((settings.true_token, "true_token"), (settings.false_token, "false_token")):
                answer_token_id(tokenizer, word, setting, name_or_path)  # before the weights: fail in seconds
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load '{name_or_path}' as a causal language model: {exc}") from None
        if max_length is None:
            saved = getattr(tokenizer, "model_max_length", None)
            max_length = saved if isinstance(saved, int) and 0 < saved <= SANE_MAX_LENGTH else DEFAULT_MAX_LENGTH
            max_length = min(max_length, max_positions(model.config) or max_length)
        return cls(model, tokenizer, max_length=max_length, settings=settings)

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False,
                              verbose=False)["input_ids"]

    def fixed_tokens(self) -> int:
        """Tokens of the prompt around an empty query and document."""
        return len(self.before) + sum(len(x) for x in self._encode([self.head, self.middle, self.tail]))

    def check_max_length(self, max_length: int) -> None:
        least = self.fixed_tokens() + 2  # room for a query token and a document token
        limit = max_positions(self.model.config)
        if max_length < least or (limit is not None and max_length > limit):
            bound = f"between {least} and {limit}" if limit is not None else f"at least {least}"
            raise ConfigError(f"max_length must be {bound} for this model and template (the model's context is "
                              f"{limit} tokens, the prompt alone {least - 2}), got {max_length}")

    def encode_pairs(self, queries: Sequence[str], docs: Sequence[str], max_length: int | None = None,
                     ) -> list[list[int]]:
        """THE input builder: token ids of the prompt for each pair, at most ``max_length`` long.

        A prompt that fits is the tokenizer's encoding of ``head + query + middle + document + tail``
        (after its leading special tokens). A longer one keeps the whole prompt and query and cuts the
        document's end (Qwen3-Reranker truncates so); a query too long even for that is cut too, keeping
        one document token, so the question the model answers is always there.
        """
        max_length = max_length or self.max_length
        self.check_max_length(max_length)
        queries, docs = list(queries), list(docs)
        check_texts(queries, docs)
        rows = [self.before + r for r in
                self._encode([self.head + q + self.middle + d + self.tail for q, d in zip(queries, docs)])]
        for i in [i for i, r in enumerate(rows) if len(r) > max_length]:
            rows[i] = self._fit(queries[i], docs[i], max_length)
        return rows

    def _fit(self, query: str, doc: str, max_length: int) -> list[int]:
        head, body, tail = self._encode([self.head + query + self.middle, doc, self.tail])
        room = max_length - len(self.before) - len(head) - len(tail)
        if room >= 1:
            return self.before + head + body[:room] + tail
        start, q, middle = self._encode([self.head, query, self.middle])
        keep = max_length - len(self.before) - len(start) - len(middle) - len(tail) - 1
        return self.before + start + q[:keep] + middle + body[:1] + tail

    def _encoded(self, queries: Sequence[str], docs: Sequence[str], max_length: int | None) -> EncodedPairs:
        return pack(self.encode_pairs(queries, docs, max_length), self.pad_id, left_padding=True)

    def forward(self, **features: Tensor) -> Tensor:
        """``[false_logit, true_logit]`` at each row's last position: (B, 2). Rows are left-padded."""
        mask = features["attention_mask"]  # (B, L)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, L): padding does not shift the positions
        out = self.model(input_ids=features["input_ids"], attention_mask=mask, position_ids=positions,
                         use_cache=False, logits_to_keep=1)
        return out.logits[:, -1, [self.false_id, self.true_id]]  # (B, 2)

    def save_pretrained(self, path: str | Path) -> None:
        super().save_pretrained(path)
        (Path(path) / SETTINGS_FILE).write_text(json.dumps(asdict(self.settings), indent=1), encoding="utf-8")
