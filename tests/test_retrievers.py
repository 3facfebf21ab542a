"""Retrievers: FAISS search equals exact brute force, batching invariance, saved indexes and their model check."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from distilrank.data.records import Passage
from distilrank.errors import ConfigError
from distilrank.mining.retrievers import (
    BM25Retriever,
    DenseEncoder,
    FaissRetriever,
    StaticEncoder,
    build_retriever,
    distill_static,
)

pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def corpus() -> dict[str, Passage]:
    import random

    from tiny import WORDS

    rng = random.Random(1)
    return {f"d{i}": Passage(f"d{i}", " ".join(rng.sample(WORDS, 6))) for i in range(300)}


@pytest.fixture(scope="module")
def queries() -> dict[str, str]:
    import random

    from tiny import WORDS

    rng = random.Random(2)
    return {f"q{i}": " ".join(rng.sample(WORDS, 3)) for i in range(20)}


@pytest.fixture(scope="module")
def dense(tiny_model: Path) -> DenseEncoder:
    return DenseEncoder(str(tiny_model))


@pytest.fixture(scope="module")
def static_folder(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("static") / "m2v"
    distill_static(str(tiny_model), out, pca_dims=16)
    return out


def brute_force(encoder, corpus, queries, k):
    ids = list(corpus)
    d = encoder.encode([corpus[i].contents for i in ids])
    q = encoder.encode(list(queries.values()))
    sims = q @ d.T  # the reference: the full matrix is fine for 20 x 300
    return {qid: [(ids[j], float(sims[r, j])) for j in np.argsort(-sims[r], kind="stable")[:k]]
            for r, qid in enumerate(queries)}


def test_flat_index_equals_brute_force_and_query_batching(dense, corpus, queries):
    retriever = FaissRetriever.build(dense, corpus)
    run = retriever.search(queries, k=10, query_batch=3)
    ref = brute_force(dense, corpus, queries, 10)
    for qid in queries:
        np.testing.assert_allclose([s for _, s in run[qid]], [s for _, s in ref[qid]], atol=1e-5)
        assert [d for d, _ in run[qid]][:3] == [d for d, _ in ref[qid]][:3]
    other = retriever.search(queries, k=10, query_batch=256)  # query batching changes nothing (up to BLAS rounding)
    for qid in queries:
        np.testing.assert_allclose([s for _, s in other[qid]], [s for _, s in run[qid]], atol=1e-6)
        assert [d for d, _ in other[qid]][:3] == [d for d, _ in run[qid]][:3]
    # score() agrees with the search scores
    qid = next(iter(queries))
    top = [corpus[d] for d, _ in run[qid][:4]]
    np.testing.assert_allclose(retriever.score(queries[qid], top), [s for _, s in run[qid][:4]], atol=1e-5)


def test_ivf_with_all_clusters_probed_is_exact_and_hnsw_recall(dense, corpus, queries):
    exact = FaissRetriever.build(dense, corpus).search(queries, k=10)
    ivf = FaissRetriever.build(dense, corpus, index="ivf", nlist=4, nprobe=4).search(queries, k=10)
    assert [[d for d, _ in ivf[q]] for q in queries] == [[d for d, _ in exact[q]] for q in queries]
    hnsw = FaissRetriever.build(dense, corpus, index="hnsw").search(queries, k=10)
    hits = sum(len({d for d, _ in hnsw[q]} & {d for d, _ in exact[q]}) for q in queries)
    assert hits / (10 * len(queries)) >= 0.9


def test_saved_index_reloads_and_rejects_another_model(dense, corpus, queries, tmp_path, tiny_model):
    folder = tmp_path / "index"
    built = build_retriever("dense", corpus, model=str(tiny_model), index_path=str(folder))
    assert (folder / "index.faiss").is_file() and (folder / "meta.json").is_file()
    loaded = build_retriever("dense", corpus, model=str(tiny_model), index_path=str(folder))
    assert loaded.search(queries, k=5) == built.search(queries, k=5)

    from tiny import make_tiny_bert

    other = make_tiny_bert(tmp_path / "other", seed=7)
    with pytest.raises(ConfigError, match="built with model .* queried with"):
        build_retriever("dense", corpus, model=str(other), index_path=str(folder))
    with pytest.raises(ConfigError, match="not this corpus"):
        build_retriever("dense", dict(list(corpus.items())[:10]), model=str(tiny_model), index_path=str(folder))


def test_static_encoder_distilled_offline_and_loaded(static_folder, tiny_model, corpus, queries, tmp_path):
    encoder = StaticEncoder(str(static_folder))
    vectors = encoder.encode(["sort a list", "read a file"])
    assert vectors.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    retriever = build_retriever("static", corpus, model=str(static_folder))
    run = retriever.search(queries, k=5)
    ref = brute_force(encoder, corpus, queries, 5)
    for qid in queries:
        np.testing.assert_allclose([s for _, s in run[qid]], [s for _, s in ref[qid]], atol=1e-5)
    # an encoder folder (not model2vec) is distilled on the fly: same vectors as the saved distillation
    copy = tmp_path / "enc"
    shutil.copytree(tiny_model, copy)
    np.testing.assert_allclose(StaticEncoder(str(copy), pca_dims=16).encode(["sort a list"]), vectors[:1], atol=1e-3)


def test_bm25_score_matches_search_and_bad_names(corpus, queries):
    bm25 = BM25Retriever(corpus)
    qid = next(iter(queries))
    run = bm25.search(queries, k=5)
    np.testing.assert_allclose(bm25.score(queries[qid], [corpus[d] for d, _ in run[qid]]),
                               [s for _, s in run[qid]], rtol=1e-5)
    with pytest.raises(ConfigError, match="retriever must be one of"):
        build_retriever("splade", corpus)
    with pytest.raises(ConfigError, match="cannot load static model"):
        StaticEncoder("/nonexistent/model2vec-folder")


def test_a_saved_bi_encoder_is_a_dense_retriever_with_its_own_pooling(tiny_model, tmp_path, corpus, queries):
    from distilrank.models.bi_encoder import BiEncoder

    cls = BiEncoder.from_pretrained(str(tiny_model), pooling="cls")
    cls.save_pretrained(tmp_path / "bi")
    encoder = DenseEncoder(str(tmp_path / "bi"))
    assert encoder.model.pooling == "cls"
    np.testing.assert_allclose(encoder.encode(["sort a list"]), cls.encode(["sort a list"]), atol=1e-6)
    mean = DenseEncoder(str(tiny_model)).encode(["sort a list"])
    assert not np.allclose(mean, encoder.encode(["sort a list"]), atol=1e-3)
