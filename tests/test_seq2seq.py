"""The monoT5-style seq2seq reranker: one input builder, exact scores, loading and saving."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from tiny import WORDS, make_tiny_t5

from distilrank import ConfigError, Reranker
from distilrank.models.cross_encoder import CrossEncoder
from distilrank.models.seq2seq import (
    MIDDLE,
    PREFIX,
    SUFFIX,
    TEMPLATE,
    Seq2SeqReranker,
    is_seq2seq_checkpoint,
    load_scoring_model,
)

# The tiny vocabulary holds every word of WORDS as one piece, so these texts have one token per word.
LONG_DOC = " ".join(random.Random(1).choices(WORDS, k=60))
PAIRS = [
    ("sort a list", "return a sorted list"),
    ("open a file", "open the file and read data"),
    ("python dict", "the key of a dict is a string"),
    ("what is a Module?", "An error (ValueError) in module 7."),
    ("sort a list", LONG_DOC),
    ("read write", "a"),
]


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved random 2-layer T5 with a true/false tokenizer (read-only)."""
    return make_tiny_t5(tmp_path_factory.mktemp("tiny-t5"))


@pytest.fixture(scope="module")
def t5(tiny_t5: Path) -> Seq2SeqReranker:
    return Seq2SeqReranker.from_pretrained(str(tiny_t5))


def plain_ids(model: Seq2SeqReranker, query: str, doc: str) -> list[int]:
    """What monoT5/pygaggle feed the model: the formatted template through the tokenizer."""
    return model.tokenizer(TEMPLATE.format(query=query, document=doc))["input_ids"]


def unpadded(features) -> list[tuple[int, ...]]:
    return [tuple(row[mask.bool()].tolist()) for row, mask in zip(features["input_ids"], features["attention_mask"])]


def test_template_pieces_spell_the_template():
    assert PREFIX + " {query}" + MIDDLE + " {document}" + SUFFIX == TEMPLATE


def test_loading_finds_labels_and_defaults(t5):
    tok = t5.tokenizer
    assert tok.convert_ids_to_tokens([t5.false_id, t5.true_id]) == ["▁false", "▁true"]
    assert t5.max_length == 512  # the tiny tokenizer never set model_max_length
    assert t5.decoder_start_id == 0


def test_short_inputs_are_the_plain_template_everywhere(t5):
    queries, docs = [q for q, _ in PAIRS], [d for _, d in PAIRS]
    rows = t5.encode_pairs(queries, docs)
    assert rows == [plain_ids(t5, q, d) for q, d in PAIRS]
    assert rows[0][-3:] == t5.tokenizer.convert_tokens_to_ids(["▁Relevant", ":", "</s>"])
    features = t5.tokenize(queries, docs)  # training input
    assert set(features) == {"input_ids", "attention_mask"}
    assert features["input_ids"].shape == (len(PAIRS), max(map(len, rows)))
    assert unpadded(features) == [tuple(r) for r in rows]
    assert (features["input_ids"][features["attention_mask"] == 0] == t5.tokenizer.pad_token_id).all()


def test_training_labelling_and_inference_feed_the_same_tokens(t5):
    """The ids the T5 actually receives when scoring equal encode_pairs and tokenize, also for cut inputs."""
    seen: list[tuple[int, ...]] = []

    def capture(module, args, kwargs):
        seen.extend(unpadded(kwargs))

    handle = t5.model.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        t5.score(PAIRS, batch_size=4, max_length=20)
        scored, seen[:] = list(seen), []
        t5.score_logits(PAIRS, batch_size=2, max_length=20)
        labelled, seen[:] = list(seen), []
        t5.get_scores("sort a list", [LONG_DOC], batch_size=1)
        single = list(seen)
    finally:
        handle.remove()
    queries, docs = [q for q, _ in PAIRS], [d for _, d in PAIRS]
    built = [tuple(r) for r in t5.encode_pairs(queries, docs, max_length=20)]
    trained = unpadded(t5.tokenize(queries, docs, max_length=20))
    assert trained == built
    assert sorted(scored) == sorted(built)  # scoring batches in length order, so compare as multisets
    assert sorted(labelled) == sorted(built)
    assert single == [tuple(t5.encode_pairs(["sort a list"], [LONG_DOC])[0])]  # default max_length


def test_long_document_is_cut_to_max_length_keeping_relevant(t5):
    words = LONG_DOC.split()
    row = t5.encode_pairs(["sort a list"], [LONG_DOC], max_length=24)[0]
    assert len(row) == 24
    # "▁Query : ▁sort ▁a ▁list ▁Document :" (7) + k doc words + "▁Relevant : </s>" (3) = 24 -> k = 14
    assert row == plain_ids(t5, "sort a list", " ".join(words[:14]))
    naive = t5.tokenizer(TEMPLATE.format(query="sort a list", document=LONG_DOC), truncation=True, max_length=24)
    assert naive["input_ids"][-3:-1] != row[-3:-1]  # plain truncation loses "Relevant:"; we keep it


def test_every_input_fits_and_ends_with_relevant(t5):
    """Random queries and documents at several max_lengths: plain template when it fits, else exactly max_length."""
    rng = random.Random(3)
    queries = [" ".join(rng.choices(WORDS + ["Zq9", "x-y"], k=rng.randint(1, 25))) for _ in range(40)]
    docs = [" ".join(rng.choices(WORDS + ["Zq9", "x-y"], k=rng.randint(1, 40))) for _ in range(40)]
    head = t5.tokenizer(PREFIX, add_special_tokens=False)["input_ids"]
    tail = t5.tokenizer(SUFFIX)["input_ids"]  # "▁Relevant : </s>"
    for max_length in (8, 13, 30, 64):
        for q, d, row in zip(queries, docs, t5.encode_pairs(queries, docs, max_length=max_length)):
            plain = plain_ids(t5, q, d)
            assert row == plain if len(plain) <= max_length else len(row) == max_length
            assert row[: len(head)] == head and row[-len(tail) :] == tail


def test_cut_falls_back_to_encoding_the_document_alone(t5):
    """When the full encoding does not start with the separately encoded head, the document is re-encoded."""
    expected = t5.encode_pairs(["sort a list"], [LONG_DOC], max_length=24)
    assert t5._fit([[99] * 80], ["sort a list"], [LONG_DOC], 24) == expected


def test_too_long_query_is_cut_keeping_document_and_relevant(t5):
    query = " ".join(WORDS[:30])
    row = t5.encode_pairs([query], ["open the file"], max_length=16)[0]
    assert len(row) == 16
    # "▁Query :" (2) + k query words + "▁Document : ▁Relevant : </s>" (5) = 16 -> k = 9, no document left
    assert row == t5.tokenizer(f"Query: {' '.join(WORDS[:9])} Document: Relevant:")["input_ids"]


def test_bad_inputs_are_clear_errors(t5):
    with pytest.raises(ConfigError, match="pair 1: the document must be a non-empty string"):
        t5.encode_pairs(["a", "b"], ["x", "  "])
    with pytest.raises(ConfigError, match="pair 0: the query"):
        t5.score([("", "doc")])
    with pytest.raises(ConfigError, match="2 queries but 1 documents"):
        t5.tokenize(["a", "b"], ["x"])
    with pytest.raises(ConfigError, match="max_length must be at least 8"):
        t5.encode_pairs(["a"], ["b"], max_length=7)
    assert t5.encode_pairs(["a"], ["b"], max_length=9) == [plain_ids(t5, "a", "b")]
    # the shortest allowed length leaves no room for the document
    assert t5.encode_pairs(["a"], ["b"], max_length=8) == [t5.tokenizer("Query: a Document: Relevant:")["input_ids"]]


def test_score_equals_hand_computation(t5):
    """log_softmax over the [false, true] logits of one decoder step, each pair alone and unpadded."""
    expected, expected_logits = [], []
    for q, d in PAIRS:
        ids = torch.tensor([plain_ids(t5, q, d)])
        with torch.no_grad():
            out = t5.model(input_ids=ids, decoder_input_ids=torch.zeros((1, 1), dtype=torch.long)).logits  # (1, 1, V)
        two = out[0, 0, [t5.false_id, t5.true_id]]  # (2,)
        expected_logits.append(two.tolist())
        expected.append(torch.log_softmax(two, -1)[1].item())
    assert t5.score(PAIRS) == pytest.approx(expected, abs=1e-5)
    logits = t5.score_logits(PAIRS)
    flat = torch.tensor(expected_logits).flatten().tolist()
    assert torch.tensor(logits).flatten().tolist() == pytest.approx(flat, abs=1e-5)
    assert all(s < 0 for s in expected) and len(set(expected)) == len(set(PAIRS))


def test_scores_do_not_depend_on_batch_size_or_order(t5):
    one = t5.score(PAIRS, batch_size=1)
    many = t5.score(PAIRS, batch_size=3)
    perm = list(range(len(PAIRS)))
    random.Random(0).shuffle(perm)
    shuffled = t5.score([PAIRS[i] for i in perm], batch_size=64)
    assert many == pytest.approx(one, abs=1e-5)
    assert [shuffled[perm.index(i)] for i in range(len(PAIRS))] == pytest.approx(one, abs=1e-5)


def test_get_scores_returns_false_true_logits(t5):
    docs = [d for _, d in PAIRS]
    scores, logits = t5.get_scores("sort a list", docs, return_logits=True)
    assert len(scores) == len(logits) == len(docs) and all(len(x) == 2 for x in logits)
    pairs = [("sort a list", d) for d in docs]
    assert torch.tensor(logits).tolist() == torch.tensor(t5.score_logits(pairs)).tolist()
    for s, (false, true) in zip(scores, logits):
        assert s == pytest.approx(true - torch.logaddexp(torch.tensor(false), torch.tensor(true)).item(), abs=1e-5)
    assert t5.get_scores("sort a list", docs) == pytest.approx(scores, abs=1e-6)
    assert t5.get_scores("sort a list", []) == []


def test_forward_is_trainable_and_scoring_restores_train_mode(t5):
    model = Seq2SeqReranker.from_pretrained(t5.model.config._name_or_path)
    model.train()
    features = model.tokenize(["sort a list", "open a file"], ["return a sorted list", LONG_DOC], max_length=32)
    logits = model(**features)  # (B, 2)
    assert logits.shape == (2, 2)
    logits.sum().backward()
    assert model.model.shared.weight.grad is not None
    model.score(PAIRS[:2])
    assert model.model.training


def test_save_then_load_gives_identical_scores(t5, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    model = Seq2SeqReranker.from_pretrained(t5.model.config._name_or_path, max_length=40)
    model.save_pretrained(tmp_path / "m")
    assert AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "m").config.is_encoder_decoder
    rr = Reranker.load(tmp_path / "m", device="cpu")
    assert isinstance(rr.model, Seq2SeqReranker) and rr.model.max_length == 40
    assert rr.score(PAIRS) == model.score(PAIRS)
    docs = [d for _, d in PAIRS]
    ranked = rr.rank("sort a list", docs)
    scores = model.score([("sort a list", d) for d in docs])
    assert [r.score for r in ranked] == sorted(scores, reverse=True)
    assert rr.get_scores("sort a list", docs, return_logits=True) == model.get_scores("sort a list", docs, True)


def test_tokenizer_without_true_false_is_rejected(tmp_path):
    folder = make_tiny_t5(tmp_path / "no-labels", true_false=False)
    with pytest.raises(ConfigError, match="lacks single 'true'/'false' tokens.*cannot be a monoT5-style reranker"):
        Seq2SeqReranker.from_pretrained(str(folder))
    with pytest.raises(ConfigError, match="no-labels"):
        Reranker.load(folder)


def test_tokenizer_without_padding_is_rejected(t5):
    from tiny import make_t5_tokenizer

    tok = make_t5_tokenizer()
    tok.pad_token = None
    with pytest.raises(ConfigError, match="has no padding token"):
        Seq2SeqReranker(t5.model, tok)


def test_load_scoring_model_picks_the_class(tiny_model, tiny_t5, tmp_path):
    assert is_seq2seq_checkpoint(str(tiny_t5)) and not is_seq2seq_checkpoint(str(tiny_model))
    assert type(load_scoring_model(str(tiny_t5), max_length=64)) is Seq2SeqReranker
    assert type(load_scoring_model(str(tiny_model))) is CrossEncoder
    with pytest.raises(ConfigError, match="cannot load model"):
        load_scoring_model(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="as a seq2seq"):
        Seq2SeqReranker.from_pretrained(str(tiny_model))  # a BERT folder is not a T5


def test_bf16_loading_scores_close_to_fp32(t5, tiny_t5):
    half = Seq2SeqReranker.from_pretrained(str(tiny_t5), dtype=torch.bfloat16)
    assert half.model.dtype == torch.bfloat16
    assert half.score(PAIRS) == pytest.approx(t5.score(PAIRS), abs=0.05)
