"""Tiny random decoder-only models (Qwen3, Llama) and a small tokenizer built at test time (no hub)."""

from __future__ import annotations

from pathlib import Path

import torch
from tiny import WORDS

CHAT_SPECIALS = ["<|im_start|>", "<|im_end|>", "<think>", "</think>"]
EXTRA_WORDS = ["yes", "no", "judge", "whether", "meets", "requirements", "based", "instruct", "provided",
               "note", "answer", "can", "only", "system", "user", "assistant", "given", "web", "search",
               "retrieve", "relevant", "passages", "answers", "passage", "Query", "Document", "Instruct",
               "Judge", "Note", "Given", "Search", "Results", "Rank", "rank", "identifier", "ranking", "I",
               "will", "provide", "you", "with", "based", "their", "relevance", "should", "be", "listed",
               "descending", "order", "using", "identifiers", "most", "first", "format", "e", "g", "only",
               "response", "do", "not", "say", "explain", "an", "assistant", "that", "can", "passages"]


def make_llm_tokenizer(bos: bool = False):
    """A WordPiece tokenizer (whole words, else letters) with chat special tokens; ``bos`` adds a BOS like Llama."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    letters = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    punct = list(".,;:!?'\"-()/[]<>=_{}")
    specials = ["<pad>", "<unk>", "<s>", "</s>", *CHAT_SPECIALS]
    vocab_list = specials + letters + ["##" + c for c in letters] + punct + WORDS + EXTRA_WORDS
    vocab = {w: i for i, w in enumerate(dict.fromkeys(vocab_list))}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="<unk>", max_input_chars_per_word=100))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.WordPiece()
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", additional_special_tokens=CHAT_SPECIALS)
    fast.model_max_length = 256  # the reranker's input length; listwise prompts may use the model's context
    return fast


def make_tiny_causal_lm(folder: Path, arch: str = "qwen3", seed: int = 0, context: int = 256) -> Path:
    """A 2-layer, 32-wide random Qwen3 or Llama causal LM (``context`` positions) and its tokenizer, saved to ``folder``."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    tok = make_llm_tokenizer(bos=arch == "llama")
    torch.manual_seed(seed)
    common = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                  pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    if arch == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(head_dim=8, **common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
