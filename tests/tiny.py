"""Tiny random models and tokenizers for tests (built in seconds, no hub)."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

WORDS = ["the", "a", "of", "to", "and", "in", "is", "for", "on", "with", "as", "by", "it", "be", "are", "this", "that", "from", "or", "an", "at", "return", "list", "sort", "python", "query", "document", "file", "string", "value", "object", "number", "function", "class", "method", "module", "error", "data", "key", "dict", "set", "item", "items", "type", "name", "path", "read", "write", "open", "close", "new", "default", "time", "true", "false", "none", "self", "args", "argument", "arguments", "result", "results", "given", "if", "not", "all", "any", "each"]


def make_tokenizer(folder: Path) -> BertTokenizer:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab_list = specials + letters + ["##" + c for c in letters] + WORDS + ["##s", "##ing", "##ed"]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(vocab_list))}
    try:
        tok = BertTokenizer(vocab=vocab)  # transformers >= 5
    except TypeError:  # transformers 4.x: from a vocab file
        from transformers import BertTokenizerFast

        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
        tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    tok.model_max_length = 128
    return tok


def make_tiny_bert(folder: Path, seed: int = 0, layers: int = 2) -> Path:
    """A 2-layer, 32-wide BERT cross-encoder with a random classification head, saved to ``folder``."""
    tok = make_tokenizer(folder)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=1,
                     hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    model = BertForSequenceClassification(cfg)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())
