"""Listwise LLM teachers (RankGPT / RankZephyr style): a causal LM orders a window of passages.

The prompt is RankZephyr's (Pradeep et al., 2023, "RankZephyr: Effective and Robust Zero-Shot Listwise
Reranking is a Breeze!"; rank_llm's ``rank_zephyr`` template, itself RankGPT's, Sun et al., 2023): the
passages are numbered ``[1] .. [n]`` and the model answers a permutation ``[2] > [1] > ...``.
:func:`parse_permutation` reads that answer robustly, repairing missing, repeated and out-of-range
identifiers (and counting each repair), and :func:`sliding_windows` merges the windows into one
ranking per query, RankGPT's way: a window of ``window`` passages slides from the bottom of the
candidate list to the top by ``stride``, each window reordered in place, so that the best
``window - stride`` passages of the whole list reach the top in one pass.

Generation goes through a ``generate(prompts) -> answers`` callable: :class:`TransformersGenerator`
(greedy ``generate``), or :class:`VllmGenerator` when vLLM is installed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from distilrank.errors import ConfigError

SYSTEM = "You are RankLLM, an intelligent assistant that can rank passages based on their relevancy to the query."
PRE = ("I will provide you with {num} passages, each indicated by a numerical identifier []. Rank the passages "
       "based on their relevance to the search query: {query}.\n")
POST = ("Search Query: {query}.\nRank the {num} passages above based on their relevance to the search query. All "
        "the passages should be included and listed using identifiers, in descending order of relevance. The "
        "output format should be [] > [], e.g., [4] > [2]. Only respond with the ranking results, do not say any "
        "word or explain.")
PASSAGE_TOKENS = 300  # each passage is cut to this many tokens in the prompt, as rank_llm does

Generate = Callable[[Sequence[str]], list[str]]


@dataclass
class Repairs:
    """How often the teacher's answers needed mending (reported by ``label mode=listwise``)."""

    windows: int = 0
    missing: int = 0  # identifiers the answer left out (appended in their input order)
    repeated: int = 0  # identifiers named again (later mentions dropped)
    out_of_range: int = 0  # numbers that name no passage of the window (dropped)
    unparsable: int = 0  # answers with no identifier at all (the window keeps its input order)

    def add(self, other: Repairs) -> None:
        for name in ("windows", "missing", "repeated", "out_of_range", "unparsable"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("windows", "missing", "repeated", "out_of_range", "unparsable")}


def parse_permutation(answer: str, n: int) -> tuple[list[int], Repairs]:
    """A window's answer (``"[2] > [1] > [3]"``) -> 0-based order of its ``n`` passages, and the repairs made.

    Identifiers are read as ``[k]`` (bare numbers when the answer has no brackets at all); repeated
    and out-of-range ones are dropped, missing ones appended in input order (as RankGPT's
    ``receive_permutation`` does), so the result is always a permutation of ``range(n)``.

    Example:
        >>> order, fixed = parse_permutation("[2] > [2] > [9] > [1]", 3)
        >>> order, fixed.repeated, fixed.out_of_range, fixed.missing
        ([1, 0, 2], 1, 1, 1)
    """
    found = re.findall(r"\[\s*(\d+)\s*\]", answer) or re.findall(r"\d+", answer)
    repairs = Repairs(windows=1, unparsable=int(not found))
    order: list[int] = []
    for token in found:
        k = int(token) - 1
        if not 0 <= k < n:
            repairs.out_of_range += 1
        elif k in order:
            repairs.repeated += 1
        else:
            order.append(k)
    missing = [k for k in range(n) if k not in order]
    repairs.missing = len(missing) if found else 0
    return order + missing, repairs


def window_prompt(query: str, passages: Sequence[str]) -> list[dict[str, str]]:
    """The chat messages asking for a permutation of ``passages`` (numbered from 1)."""
    num = len(passages)
    body = "".join(f"[{k + 1}] {p}\n" for k, p in enumerate(passages))
    user = PRE.format(num=num, query=query) + "\n" + body + "\n" + POST.format(num=num, query=query)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The prompt text: the tokenizer's chat template if it has one, else plain ``role: content`` turns."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "


@dataclass
class SlidingWindows:
    """RankGPT's sliding windows over one query's candidates (input order = first-stage order)."""

    window: int = 20
    stride: int = 10
    repairs: Repairs = field(default_factory=Repairs)

    def __post_init__(self) -> None:
        if self.window < 2 or not 1 <= self.stride <= self.window:
            raise ConfigError(f"window must be >= 2 and stride in [1, window], got window={self.window} "
                              f"stride={self.stride}")

    def starts(self, n: int) -> list[int]:
        """Window starts, bottom to top: ``n - window``, then ``stride`` earlier each time, ending at 0."""
        if n <= self.window:
            return [0]
        out, start = [], n - self.window
        while start > 0:
            out.append(start)
            start -= self.stride
        return [*out, 0]

    def rank(self, queries: Sequence[str], candidates: Sequence[Sequence[str]], generate: Generate,
             prompt: Callable[[str, Sequence[str]], str]) -> list[list[int]]:
        """One ranking (0-based candidate indices, best first) per query.

        Every query's k-th window is generated in the same call, so a backend batches across queries.
        """
        orders = [list(range(len(c))) for c in candidates]
        plans = [self.starts(len(c)) for c in candidates]
        for step in range(max((len(p) for p in plans), default=0)):
            todo = [q for q, p in enumerate(plans) if step < len(p) and len(candidates[q]) > 1]
            spans = {q: (plans[q][step], min(plans[q][step] + self.window, len(candidates[q]))) for q in todo}
            prompts = [prompt(queries[q], [candidates[q][i] for i in orders[q][slice(*spans[q])]]) for q in todo]
            answers = generate(prompts) if prompts else []
            for q, answer in zip(todo, answers, strict=True):
                a, b = spans[q]
                permutation, fixed = parse_permutation(answer, b - a)
                self.repairs.add(fixed)
                orders[q][a:b] = [orders[q][a + k] for k in permutation]
        return orders


class TransformersGenerator:
    """Greedy generation with a transformers causal LM; prompts are checked against its context."""

    def __init__(self, model: Any, tokenizer: Any, max_new_tokens: int, context: int, batch_size: int = 4) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.context, self.batch_size = max_new_tokens, context, batch_size
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"

    def __call__(self, prompts: Sequence[str]) -> list[str]:
        import torch

        out: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = self.tokenizer(list(prompts[start : start + self.batch_size]), return_tensors="pt",
                                   padding=True, add_special_tokens=False)
            check_context(batch["attention_mask"].sum(-1).max().item(), self.max_new_tokens, self.context)
            batch = {k: v.to(self.model.device) for k, v in batch.items()}
            with torch.inference_mode():
                ids = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False,
                                          pad_token_id=self.tokenizer.pad_token_id)
            out += self.tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        return out


class VllmGenerator:
    """Greedy generation with vLLM (``backend=vllm``), the usual engine for LLM inference at scale."""

    def __init__(self, model: str, max_new_tokens: int, context: int, tensor_parallel_size: int = 1,
                 dtype: str = "auto") -> None:
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise ConfigError("backend=vllm needs the vllm package (pip install vllm, on a CUDA machine); "
                              "or use backend=transformers") from None
        self.llm = LLM(model=model, tensor_parallel_size=tensor_parallel_size, dtype=dtype, max_model_len=context)
        self.params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_new_tokens, self.context = max_new_tokens, context

    def __call__(self, prompts: Sequence[str]) -> list[str]:
        for p in prompts:
            check_context(len(self.tokenizer(p, add_special_tokens=False)["input_ids"]), self.max_new_tokens,
                          self.context)
        return [o.outputs[0].text for o in self.llm.generate(list(prompts), self.params, use_tqdm=False)]


def check_context(prompt_tokens: int, max_new_tokens: int, context: int) -> None:
    if prompt_tokens + max_new_tokens > context:
        raise ConfigError(f"a window's prompt has {prompt_tokens} tokens and its answer up to {max_new_tokens}, more "
                          f"than the model's context ({context} tokens); lower window (passages per prompt)")


def answer_tokens(window: int) -> int:
    """Room for an answer naming every passage of a window (``[12] > `` is about 6 tokens)."""
    return 8 * window + 8
