"""Scores in fp32 under bf16 weights (issue 21): logits are upcast before any activation, sort or tie-break."""

from __future__ import annotations

import itertools
import random
import shutil

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from distilrank.models.bi_encoder import BiEncoder
from distilrank.models.cross_encoder import CrossEncoder

BIAS = 64.0  # logits near 64: one bf16 step there is 0.5, so a bf16 logit ties every document below


def _pairs(n: int = 40) -> list[tuple[str, str]]:
    from tiny import WORDS

    rng = random.Random(0)
    return [("sort a list", " ".join(rng.sample(WORDS, rng.randint(2, 12)))) for _ in range(n)]


def test_bf16_cross_encoder_orders_near_tied_pairs_as_fp32_does(tiny_model, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model, folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():  # documents spread over ~0.2 around 64: all inside one bf16 step of the logit
        model.bert.embeddings.word_embeddings.weight.mul_(50)
        model.bert.pooler.dense.weight.mul_(10)
        model.classifier.weight.mul_(100)
        model.classifier.bias.fill_(BIAS)
    model.save_pretrained(folder)
    pairs = _pairs()
    fp32 = np.array(CrossEncoder.from_pretrained(str(folder)).score(pairs))
    bf16 = np.array(CrossEncoder.from_pretrained(str(folder), dtype=torch.bfloat16).score(pairs))
    plain = CrossEncoder.from_pretrained(str(folder))
    plain.model.to(torch.bfloat16)  # everything in bf16, the logit too: what the upcast prevents
    rounded = np.array(plain.score(pairs))
    assert np.ptp(fp32) < 0.5 and len(set(rounded.tolist())) <= 2  # a bf16 logit ties (nearly) every document
    noise = np.abs(fp32 - bf16).max()  # what the bf16 encoder itself changes
    near = [(i, j) for i, j in itertools.combinations(range(len(pairs)), 2) if 2 * noise < abs(fp32[i] - fp32[j]) < 0.5]
    assert len(near) >= 20
    assert all(np.sign(bf16[i] - bf16[j]) == np.sign(fp32[i] - fp32[j]) for i, j in near)
    assert any(rounded[i] == rounded[j] for i, j in near)  # a bf16 logit ties some: this check would fail
    assert len(set(bf16.tolist())) == len(set(fp32.tolist()))  # no ties the fp32 scores lack


def test_bf16_forward_and_bi_encoder_give_float32(tiny_model):
    ce = CrossEncoder.from_pretrained(str(tiny_model), dtype=torch.bfloat16)
    features = ce.tokenize(["sort a list"], ["sort the list"])
    assert ce(**features).dtype == torch.float32
    bi = BiEncoder.from_pretrained(str(tiny_model), dtype=torch.bfloat16)
    assert bi(**bi.tokenize(["sort a list"])).dtype == torch.float32
