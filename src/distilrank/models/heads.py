"""Task-head models over any Hugging Face encoder: NLI pair classification and extractive QA.

Both wrap a ``transformers`` model (``AutoModelForSequenceClassification`` with C labels, or
``AutoModelForQuestionAnswering``) and its tokenizer, with an optional :class:`SoftPrompt`.
``save_pretrained`` writes a plain Hugging Face folder holding the backbone *and the task head*
(the classifier / ``qa_outputs``), plus ``soft_prompt/`` when a prompt is used, so a reload gives
the same logits (see the tests).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BatchEncoding,
)

from distilrank.errors import ConfigError
from distilrank.models.cross_encoder import keep_first_layers, max_positions, resolve_model_path
from distilrank.models.prompts import SoftPrompt, freeze_backbone, prompted_inputs

logger = logging.getLogger(__name__)

QA_SETTINGS = "distilrank_qa"  # config.json key holding the answer post-processing settings


@dataclass(frozen=True)
class HeadOptions:
    """How to build a head model for training (soft prompt, frozen encoder, fewer layers)."""

    max_length: int | None = None  # total input tokens, virtual tokens included; None: the checkpoint's
    num_layers: int = 0
    prompt_tokens: int = 0
    prompt_method: str = "prompt_tuning"
    freeze_backbone: bool = False


class _HeadModel(nn.Module):
    auto_class: Any = None

    def __init__(self, model: nn.Module, tokenizer: Any, max_length: int, prompt: SoftPrompt | None = None) -> None:
        super().__init__()
        self.model, self.tokenizer, self.max_length, self.prompt = model, tokenizer, max_length, prompt

    @classmethod
    def _load(cls, name_or_path: str, opts: HeadOptions, **model_kwargs: Any) -> tuple[nn.Module, Any, int]:
        path = resolve_model_path(name_or_path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = cls.auto_class.from_pretrained(path, **model_kwargs)
        except OSError as exc:
            raise ConfigError(f"cannot load model '{name_or_path}': {exc}. Pass a local model folder, "
                              "or the embedded default 'packaged:all-MiniLM-L6-v2'.") from None
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError(f"the tokenizer of '{name_or_path}' is not a fast (Rust) tokenizer; offsets need one")
        if opts.num_layers:
            keep_first_layers(model, opts.num_layers)
        limit = max_positions(model.config) or 512
        max_length = opts.max_length or min(getattr(tokenizer, "model_max_length", limit) or limit, limit)
        if max_length > limit:
            raise ConfigError(f"max_length {max_length} is above what '{name_or_path}' can read ({limit} tokens)")
        return model, tokenizer, max_length

    @classmethod
    def _finish(cls, folder: str, model: nn.Module, tokenizer: Any, max_length: int, opts: HeadOptions) -> Any:
        prompt = SoftPrompt.load(folder, model)
        if prompt is not None and opts.prompt_tokens and opts.prompt_tokens != prompt.num_tokens:
            raise ConfigError(f"'{folder}' has a soft prompt of {prompt.num_tokens} tokens, not {opts.prompt_tokens}")
        if prompt is None and opts.prompt_tokens:
            prompt = SoftPrompt.create(model, opts.prompt_tokens, opts.prompt_method)
        if opts.freeze_backbone:
            freeze_backbone(model)
        return cls(model, tokenizer, max_length, prompt)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def text_length(self) -> int:
        """Tokens left for the text once the virtual tokens are in."""
        return self.max_length - (self.prompt.num_tokens if self.prompt is not None else 0)

    def _run(self, features: dict[str, Tensor]) -> Any:
        features = {k: v for k, v in features.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        if self.prompt is None:
            return self.model(**features)
        return self.model(**prompted_inputs(self.model, self.prompt, features))

    def save_pretrained(self, path: str | Path) -> None:
        """A plain HF folder (backbone + head + tokenizer), and ``soft_prompt/`` when there is one."""
        path = Path(path)
        self.model.save_pretrained(path)
        self.tokenizer.model_max_length = self.max_length
        self.tokenizer.save_pretrained(path)
        if self.prompt is not None:
            self.prompt.save(path)


class PairClassifier(_HeadModel):
    """Sentence-pair classification (NLI): ``forward`` gives ``(B, C)`` logits over ``label_names``."""

    auto_class = AutoModelForSequenceClassification

    @classmethod
    def from_pretrained(cls, name_or_path: str, label_names: Sequence[str] | None = None,
                        options: HeadOptions | None = None) -> PairClassifier:
        """A saved classifier (its labels in ``config.id2label``) or any encoder with a fresh head."""
        opts = options or HeadOptions()
        kwargs: dict[str, Any] = {}
        if label_names:
            names = list(label_names)
            kwargs = dict(num_labels=len(names), id2label=dict(enumerate(names)),
                          label2id={n: i for i, n in enumerate(names)}, ignore_mismatched_sizes=True)
        model, tokenizer, max_length = cls._load(name_or_path, opts, **kwargs)
        return cls._finish(resolve_model_path(name_or_path), model, tokenizer, max_length, opts)

    @property
    def label_names(self) -> list[str]:
        id2label = self.model.config.id2label
        return [str(id2label[i]) for i in range(self.model.config.num_labels)]

    def tokenize(self, premises: Sequence[str], hypotheses: Sequence[str]) -> BatchEncoding:
        return self.tokenizer(list(premises), list(hypotheses), padding=True, truncation=True,
                              max_length=self.text_length, return_tensors="pt")

    def forward(self, **features: Tensor) -> Tensor:
        return self._run(features).logits  # (B, C)

    @torch.inference_mode()
    def predict_logits(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> Tensor:
        """``(N, C)`` logits of (premise, hypothesis) pairs, in input order (float32, CPU)."""
        was_training = self.training
        self.eval()
        out = []
        try:
            for start in range(0, len(pairs), batch_size):
                chunk = pairs[start:start + batch_size]
                features = self.tokenize([p for p, _ in chunk], [h for _, h in chunk]).to(self.device)
                out.append(self(**features).float().cpu())
        finally:
            self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, len(self.label_names))

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> list[str]:
        """The predicted label name of each (premise, hypothesis) pair."""
        names = self.label_names
        return [names[k] for k in self.predict_logits(pairs, batch_size).argmax(-1).tolist()]


@dataclass(frozen=True)
class Answer:
    """An extracted answer: ``context[start:end] == text``; ``score`` = start logit + end logit."""

    text: str
    start: int
    end: int
    score: float


class QuestionAnswerer(_HeadModel):
    """Extractive QA: ``forward`` gives ``(start_logits, end_logits)``, each ``(B, L)`` over the text tokens.

    The virtual tokens of a soft prompt are cut off the logits, so positions always index the
    tokenizer's output (and its offset mapping).
    """

    auto_class = AutoModelForQuestionAnswering

    def __init__(self, model: nn.Module, tokenizer: Any, max_length: int, prompt: SoftPrompt | None = None,
                 doc_stride: int = 0, max_answer_length: int = 30, n_best: int = 20) -> None:
        super().__init__(model, tokenizer, max_length, prompt)
        self.doc_stride = doc_stride or max_length // 4
        self.max_answer_length, self.n_best = max_answer_length, n_best

    @classmethod
    def from_pretrained(cls, name_or_path: str, options: HeadOptions | None = None) -> QuestionAnswerer:
        opts = options or HeadOptions()
        # qa_outputs has config.num_labels outputs: 2 (start, end), whatever head the checkpoint had
        model, tokenizer, max_length = cls._load(name_or_path, opts, num_labels=2)
        qa = cls._finish(resolve_model_path(name_or_path), model, tokenizer, max_length, opts)
        saved = getattr(model.config, QA_SETTINGS, None) or {}
        qa.doc_stride = int(saved.get("doc_stride", qa.doc_stride))
        qa.max_answer_length = int(saved.get("max_answer_length", qa.max_answer_length))
        qa.n_best = int(saved.get("n_best", qa.n_best))
        return qa

    def save_pretrained(self, path: str | Path) -> None:
        setattr(self.model.config, QA_SETTINGS, {"doc_stride": self.doc_stride, "n_best": self.n_best,
                                                 "max_answer_length": self.max_answer_length})
        super().save_pretrained(path)

    def forward(self, **features: Tensor) -> tuple[Tensor, Tensor]:
        out = self._run(features)
        n = self.prompt.num_tokens if self.prompt is not None else 0
        return out.start_logits[:, n:], out.end_logits[:, n:]  # (B, L), (B, L)

    def encode(self, questions: Sequence[str], contexts: Sequence[str]) -> BatchEncoding:
        """Sliding windows over each context: ``overflow_to_sample_mapping`` and ``offset_mapping`` included."""
        from distilrank.data.qa import encode_windows

        return encode_windows(self.tokenizer, questions, contexts, self.text_length, self.doc_stride)

    def answer(self, question: str, context: str, batch_size: int = 16) -> Answer:
        """The best span of ``context`` answering ``question``, over every window of a long context."""
        answers = self.answer_batch([(question, context)], batch_size)
        return answers[0]

    @torch.inference_mode()
    def answer_batch(self, pairs: Sequence[tuple[str, str]], batch_size: int = 16) -> list[Answer]:
        """One :class:`Answer` per (question, context) pair (an empty answer, score -inf, if none fits)."""
        from distilrank.data.qa import check_question_fits, window_logits
        from distilrank.evaluation.qa import best_answer

        for question, context in pairs:
            if not question.strip() or not context.strip():
                raise ConfigError("question and context must be non-empty")
            check_question_fits(self.tokenizer, question, self.text_length, self.doc_stride)
        encoded = self.encode([q for q, _ in pairs], [c for _, c in pairs])
        starts, ends = window_logits(self, encoded, batch_size)
        owner = encoded["overflow_to_sample_mapping"]
        out = []
        for k, (_, context) in enumerate(pairs):
            windows = [i for i, o in enumerate(owner) if o == k]
            out.append(best_answer(context, [(starts[i], ends[i], encoded["offset_mapping"][i],
                                              encoded.sequence_ids(i)) for i in windows],
                                   self.n_best, self.max_answer_length))
        return out
