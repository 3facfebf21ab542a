"""Long documents: MaxP / FirstP passages, the same in training, evaluation and inference."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch

from distilrank import ConfigError, Reranker, TrainConfig
from distilrank.data.passages import (
    PassageSplit,
    describe_stats,
    encode_passages,
    max_per_owner,
    max_per_owner_torch,
    passage_stats,
)
from distilrank.models.cross_encoder import CrossEncoder

MAXP = PassageSplit("maxp", stride=4, max_passages=0)


def _words(n: int, seed: int) -> str:
    from tiny import WORDS

    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n))


@pytest.fixture(scope="module")
def ce(tiny_model) -> CrossEncoder:
    return CrossEncoder.from_pretrained(str(tiny_model), max_length=24).eval()


def _doc_ids(tokenizer, row: list[int]) -> list[int]:
    """The document tokens of one encoded pair: between the first and the last [SEP]."""
    sep = tokenizer.sep_token_id
    first = row.index(sep)
    return row[first + 1 : len(row) - 1]


def test_maxp_windows_cover_the_document_with_the_stride_overlap(ce):
    tok = ce.tokenizer
    query, doc = "alpha beta", _words(60, 0)
    encoded, owner = encode_passages(tok, [query, query], [doc, "short text"], 24, MAXP)
    rows = [encoded.fields["input_ids"][o : o + n].tolist() for o, n in zip(encoded.offsets, encoded.lengths)]
    assert owner.tolist()[-1] == 1 and (owner == 0).sum() > 3  # the long document is split, the short one is not
    assert all(len(r) <= 24 for r in rows)
    q_ids = tok(query, add_special_tokens=False)["input_ids"]
    full = tok(doc, add_special_tokens=False)["input_ids"]
    pieces = [_doc_ids(tok, r) for r, o in zip(rows, owner) if o == 0]
    for r in rows:
        assert r[1 : 1 + len(q_ids)] == q_ids  # every passage repeats the query
    for a, b in zip(pieces, pieces[1:]):
        assert a[-4:] == b[:4]  # neighbours share `stride` tokens
    rebuilt = pieces[0] + [t for p in pieces[1:] for t in p[4:]]
    assert rebuilt == full  # nothing lost, nothing invented


def test_max_passages_keeps_the_first_windows(ce):
    split = PassageSplit("maxp", stride=4, max_passages=2)
    _, owner = encode_passages(ce.tokenizer, ["q"] * 2, [_words(80, 1), _words(5, 2)], 24, split)
    assert owner.tolist() == [0, 0, 1]


def test_stats_count_exactly_what_encoding_does(ce):
    docs = [_words(n, n) for n in (3, 10, 19, 20, 21, 40, 77, 150)]
    pairs = [("gamma delta", d) for d in docs]
    for split in (MAXP, PassageSplit("maxp", stride=6, max_passages=3), PassageSplit("firstp", stride=4)):
        _, owner = encode_passages(ce.tokenizer, [q for q, _ in pairs], docs, 24, split)
        stats = passage_stats(ce.tokenizer, pairs, 24, split)
        assert stats["passages_scored"] == len(owner)
        windows = np.bincount(owner, minlength=len(pairs))
        full = encode_passages(ce.tokenizer, [q for q, _ in pairs], docs, 24, PassageSplit("maxp", split.stride, 0))[1]
        assert stats["longer_than_window"] == int((np.bincount(full) > 1).sum())
        if split.mode == "maxp":
            assert stats["truncated"] == int((np.bincount(full) > windows).sum())
        assert describe_stats(stats).startswith(f"long documents: {stats['longer_than_window']} of 8 candidates")


def test_maxp_score_is_the_best_passage_scored_alone(ce):
    ce.passages = MAXP
    try:
        pairs = [("alpha beta", _words(70, 3)), ("alpha beta", "short doc here"), ("gamma", _words(33, 4))]
        scores = ce.score(pairs, batch_size=3)
        encoded, owner = encode_passages(ce.tokenizer, [q for q, _ in pairs], [d for _, d in pairs], 24, MAXP)
        alone = []
        with torch.inference_mode():
            for i in range(len(owner)):
                feats = encoded.batch(np.array([i]))  # one passage, no padding
                alone.append(ce.model(**feats).logits.item())
        expected = max_per_owner(np.array(alone), owner, len(pairs))
        np.testing.assert_allclose(scores, expected, atol=1e-5)
        ce.passages = PassageSplit()
        assert ce.score(pairs[1:2])[0] == pytest.approx(scores[1], abs=1e-5)  # a short document: FirstP == MaxP
        assert (owner == 0).sum() > 1
        assert ce.score(pairs[:1])[0] == pytest.approx(alone[0], abs=1e-5)  # FirstP reads the first passage only
    finally:
        ce.passages = PassageSplit()


def test_training_forward_is_the_scoring_function(ce):
    """tokenize + forward (the training path) give the same per-document scores as score()."""
    ce.passages = MAXP
    try:
        queries, docs = ["alpha", "beta gamma", "alpha"], [_words(50, 5), _words(6, 6), _words(90, 7)]
        feats = ce.tokenize(queries, docs)
        assert feats["input_ids"].shape[0] > len(docs)
        with torch.inference_mode():
            trained_path = ce(**feats)
        assert trained_path.shape == (3,)
        np.testing.assert_allclose(trained_path.numpy(), ce.score(list(zip(queries, docs))), atol=1e-5)
    finally:
        ce.passages = PassageSplit()


def test_differentiable_max_sends_the_gradient_to_the_best_passage():
    scores = torch.tensor([1.0, 3.0, 2.0, 0.5], requires_grad=True)
    out = max_per_owner_torch(scores, torch.tensor([0, 0, 0, 1]), 2)
    assert out.tolist() == [3.0, 0.5]
    out.sum().backward()
    assert scores.grad.tolist() == [0.0, 1.0, 0.0, 1.0]


def _long_groups(path, n=12):
    rows = [{"query": _words(2, i), "positive": _words(40, 100 + i), "negatives": [_words(45, 200 + i)]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_model_trained_with_maxp_is_saved_and_loaded_with_it(tiny_model, tmp_path, capsys):
    from distilrank.training.run import run_training

    data = _long_groups(tmp_path / "long.jsonl")
    cfg = TrainConfig(train_file=str(data), model=str(tiny_model), output_dir=str(tmp_path / "run"), loss="listwise",
                      max_steps=3, batch_size=4, group_size=2, max_length=24, long_documents="maxp",
                      passage_stride=4, max_passages=5)
    metrics = run_training(cfg)
    assert metrics["long_documents"]["split"] == 24 and metrics["long_documents"]["mode"] == "maxp"
    assert "24 of 24 training pairs" in capsys.readouterr().out
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert saved["distilrank_passages"] == {"mode": "maxp", "stride": 4, "max_passages": 5}
    loaded = Reranker.load(tmp_path / "run" / "model", device="cpu")
    assert loaded.model.passages == PassageSplit("maxp", 4, 5)
    pairs = [("alpha", _words(60, 9))]
    first = Reranker.load(tmp_path / "run" / "model", device="cpu", long_documents="firstp")
    assert first.model.passages.mode == "firstp"
    assert loaded.score(pairs) != pytest.approx(first.score(pairs), abs=1e-5)


def test_onnx_backend_scores_maxp_like_pytorch(tiny_model, tmp_path):
    pytest.importorskip("onnxruntime")
    from distilrank.inference.export import export_onnx

    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    ce = CrossEncoder.from_pretrained(str(model), max_length=24, passages=MAXP)
    ce.save_pretrained(model)  # records maxp in config.json
    onnx_dir = export_onnx(model, tmp_path / "onnx")
    pairs = [("alpha beta", _words(70, 11)), ("gamma", "tiny"), ("delta", _words(30, 12))]
    torch_scores = Reranker.load(model, device="cpu").score(pairs)
    onnx = Reranker.load(onnx_dir)
    assert onnx.model.passages == MAXP
    np.testing.assert_allclose(onnx.score(pairs), torch_scores, atol=1e-4)


def test_eval_reports_how_many_documents_were_split_or_truncated(tiny_model, demo_beir, capsys):
    from distilrank.config import EvalConfig
    from distilrank.evaluation.run import run_eval

    common = dict(data=str(demo_beir), model=str(tiny_model), top_k=5, max_queries=4, max_length=32)
    first = run_eval(EvalConfig(**common))["long_documents"]
    out = capsys.readouterr().out
    assert first["mode"] == "firstp" and first["truncated"] == first["longer_than_window"] > 0
    assert "truncated (long_documents=firstp" in out
    maxp = run_eval(EvalConfig(**common, long_documents="maxp", passage_stride=8, max_passages=0))["long_documents"]
    assert maxp["split"] == maxp["longer_than_window"] > 0
    assert maxp["passages_scored"] > maxp["pairs"]
    assert "split into passages" in capsys.readouterr().out


def test_bad_settings_are_clear_errors(ce, tiny_model):
    with pytest.raises(ConfigError, match="long_documents must be"):
        PassageSplit("sliding")
    with pytest.raises(ConfigError, match="long_documents must be"):
        TrainConfig(train_file="x.jsonl", long_documents="max")
    with pytest.raises(ConfigError, match="passage_stride 20 must be below"):
        encode_passages(ce.tokenizer, ["q"], [_words(50, 0)], 24, PassageSplit("maxp", stride=20))
    with pytest.raises(ConfigError, match="cross-encoders"):
        from tiny import make_tiny_t5

        Reranker.load(make_tiny_t5(tiny_model.parent / "t5"), device="cpu", long_documents="maxp")
