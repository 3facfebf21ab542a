"""The fast paths of scoring and training: token-exact batching and the first-token last layer."""

import numpy as np
import pytest
import torch

from distilrank.data.collate import EncodedPairs, length_sorted_batches, pair_lengths
from distilrank.models.cross_encoder import CrossEncoder, first_token_last_layer

QUERIES = ["sort a list", "open a file", "python", "a much longer query about reading and writing files"]
DOCS = ["return a new sorted list from the items", "open file and return a stream", "the python data model",
        "read data " * 20]


@pytest.fixture()
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.mark.parametrize("side", ["right", "left"])
def test_encoded_batches_equal_the_tokenizer_padding(tokenizer, side):
    tokenizer.padding_side = side
    encoded = EncodedPairs.from_tokenizer(tokenizer, QUERIES, DOCS, max_length=24)
    for rows in ([0, 1, 2, 3], [3, 1], [2]):
        ref = tokenizer([QUERIES[i] for i in rows], [DOCS[i] for i in rows], padding=True, truncation=True,
                        max_length=24, return_tensors="pt")
        got = encoded.batch(np.asarray(rows))
        assert got.keys() == ref.keys()
        for key in ref:
            assert torch.equal(got[key], ref[key]), key


def test_pair_lengths_are_the_encoded_lengths(tokenizer):
    for max_length in (8, 24, 128):
        ref = [len(x) for x in tokenizer(QUERIES, DOCS, truncation=True, max_length=max_length)["input_ids"]]
        assert pair_lengths(tokenizer, QUERIES, DOCS, max_length) == ref


def test_length_sorted_batches_are_neighbours_in_token_order():
    lengths = [5, 50, 7, 30, 2, 90, 11, 40, 3, 90]
    batches = length_sorted_batches(lengths, batch_size=3)
    assert [b.tolist() for b in batches] == [[5, 9, 1], [7, 3, 6], [2, 0, 8], [4]]
    assert length_sorted_batches([], 4) == []


def _tiny_classifier(kind: str, attn: str):
    import transformers

    cls = {"bert": "Bert", "roberta": "Roberta", "electra": "Electra"}[kind]
    torch.manual_seed(0)
    config = getattr(transformers, f"{cls}Config")(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                                  num_attention_heads=4, intermediate_size=37, num_labels=1,
                                                  max_position_embeddings=64, pad_token_id=1)
    config._attn_implementation = attn
    return getattr(transformers, f"{cls}ForSequenceClassification")(config).eval()


@pytest.mark.parametrize("kind", ["bert", "roberta", "electra"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_first_token_last_layer_gives_the_same_logits(kind, attn):
    model = _tiny_classifier(kind, attn)
    ids = torch.randint(5, 99, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # padded rows
    mask[2, 4:] = 0
    with torch.inference_mode():
        plain = model(input_ids=ids, attention_mask=mask).logits
        with first_token_last_layer(model) as active:
            fast = model(input_ids=ids, attention_mask=mask).logits
        again = model(input_ids=ids, attention_mask=mask).logits
    assert active
    assert torch.allclose(plain, fast, atol=1e-5)
    assert torch.equal(plain, again)  # restored on exit


def test_first_token_last_layer_leaves_training_and_other_models_alone(tiny_model):
    model = _tiny_classifier("bert", "sdpa").train()
    with first_token_last_layer(model) as active:
        assert not active
    ours = CrossEncoder.from_pretrained(str(tiny_model))
    ours.model.eval()
    with first_token_last_layer(ours.model) as active:
        assert active
        with first_token_last_layer(ours.model) as nested:  # already wrapped: left as it is
            assert not nested
    assert "forward" not in vars(ours.model.bert.encoder.layer[-1].attention.self)
