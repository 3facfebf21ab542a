"""Tiny random models and tokenizers for tests (built in seconds, no hub)."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizer,
    T5Config,
    T5ForConditionalGeneration,
)

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


def make_t5_tokenizer(true_false: bool = True):
    """A T5 (Unigram) tokenizer over a tiny vocabulary in which any ASCII text tokenizes.

    Ids as in T5: ``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2. Whole words score higher than
    letters, so "Query: sort a list" becomes ``▁Query : ▁sort ▁a ▁list`` as real T5 splits it.
    ``true_false=False`` leaves out ``▁true``/``▁false`` (a tokenizer that cannot be a monoT5).
    """
    from transformers import T5Tokenizer

    template = ["▁Query", "▁Document", "▁Relevant", ":"] + (["▁true", "▁false"] if true_false else [])
    words = ["▁" + w for w in WORDS if true_false or w not in ("true", "false")]
    chars = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"-()/")
    pieces = dict.fromkeys(template + words + chars + ["▁" + c for c in chars] + ["▁"])
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(p, -1.0 if len(p) > 2 else -6.0) for p in pieces]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def make_tiny_t5(folder: Path, seed: int = 0, true_false: bool = True) -> Path:
    """A 2-layer, 32-wide random T5ForConditionalGeneration and its tokenizer, saved to ``folder``.

    The tokenizer keeps the unset (huge) ``model_max_length``, so loaders fall back to 512.
    """
    tok = make_t5_tokenizer(true_false)
    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=len(tok), d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2,
                   num_decoder_layers=2, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = T5ForConditionalGeneration(cfg)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def jsonl(path: Path, rows: list) -> Path:
    """Write ``rows`` as a JSON-lines file (parents created)."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def text(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path
