"""First-stage retrievers behind one interface: BM25 (bm25s), dense (bi-encoder) and static (model2vec).

Every retriever has ``search(queries, k) -> Run`` and ``score(query, passages)`` (the score it
would give those passages, for margins against a positive). Dense and static retrievers embed
the corpus in batches into a FAISS index (exact inner product by default; IVF or HNSW for large
corpora) and search it in query batches, so memory stays bounded: the corpus vectors plus one
``(batch, k)`` result, never a query-by-corpus matrix.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from distilrank.data.records import Passage, Run
from distilrank.errors import ConfigError, MissingExtraError

logger = logging.getLogger(__name__)

RETRIEVERS = ("bm25", "dense", "static")
INDEXES = ("flat", "ivf", "hnsw")
PROBE = "distilrank index fingerprint: how do I sort a list of numbers in python?"
ENCODE_CHUNK = 16384  # documents embedded and added to the index at once


class Retriever(Protocol):
    def search(self, queries: Mapping[str, str], k: int = 100) -> Run: ...
    def score(self, query: str, passages: Sequence[Passage]) -> list[float]: ...


class BM25Retriever:
    """BM25 (Lucene variant, k1=0.9, b=0.4 as Anserini) over a corpus, English stopwords + stemming."""

    def __init__(self, corpus: Mapping[str, Passage], k1: float = 0.9, b: float = 0.4) -> None:
        import bm25s
        import Stemmer

        self._bm25s = bm25s
        self.stemmer = Stemmer.Stemmer("english")
        self.ids = list(corpus)
        self.position = {d: i for i, d in enumerate(self.ids)}
        texts = [corpus[i].contents for i in self.ids]
        self.index = bm25s.BM25(k1=k1, b=b)
        tokens = bm25s.tokenize(texts, stopwords="en", stemmer=self.stemmer, show_progress=False)
        self.index.index(tokens, show_progress=False)

    def search(self, queries: Mapping[str, str], k: int = 100, batch_size: int = 1024) -> Run:
        """Top-``k`` documents per query, best first. Queries go in batches to bound memory."""
        k = min(k, len(self.ids))
        run: Run = {}
        qids = list(queries)
        for start in range(0, len(qids), batch_size):
            chunk = qids[start : start + batch_size]
            tokens = self._bm25s.tokenize(
                [queries[q] for q in chunk], stopwords="en", stemmer=self.stemmer, show_progress=False
            )
            docs, scores = self.index.retrieve(tokens, k=k, show_progress=False, n_threads=0)
            for row, qid in enumerate(chunk):
                keep = np.asarray(scores[row]) > 0  # a zero score means no query term matched
                run[qid] = [(self.ids[int(d)], float(s)) for d, s in zip(docs[row][keep], scores[row][keep])]
        return run

    def score(self, query: str, passages: Sequence[Passage]) -> list[float]:
        """BM25 scores of indexed passages for ``query`` (one corpus-length vector for this one query)."""
        tokens = self._bm25s.tokenize(query, stopwords="en", stemmer=self.stemmer, show_progress=False,
                                      return_ids=False)
        if not tokens[0]:  # only stopwords: no document matches
            return [0.0] * len(passages)
        all_scores = self.index.get_scores(tokens[0])
        return [float(all_scores[self.position[p.id]]) for p in passages]


# ---------------------------------------------------------------------------- encoders


class Encoder(Protocol):
    name: str

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)
    return x


class DenseEncoder:
    """A bi-encoder (any HF encoder, mean or CLS pooling); vectors are L2-normalised (cosine = inner product)."""

    def __init__(self, model: str, pooling: str = "", max_length: int | None = None) -> None:
        import torch

        from distilrank.models.bi_encoder import BiEncoder

        self.name = model
        self.model = BiEncoder.from_pretrained(model, pooling=pooling, max_length=max_length)
        self.model.to("cuda" if torch.cuda.is_available() else "cpu")

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return _unit(self.model.encode(texts, batch_size=batch_size))


def _is_model2vec_folder(path: Path) -> bool:
    config = path / "config.json"
    if not config.is_file():
        return False
    return json.loads(config.read_text(encoding="utf-8")).get("model_type") == "model2vec"


def distill_static(source: str, output: str | Path = "", pca_dims: int = 256) -> Any:
    """A model2vec static model distilled offline from a local sentence-transformer/HF encoder folder.

    Every token of the source's vocabulary is embedded once by the source model (PCA to
    ``pca_dims``, SIF weighting), as ``model2vec.distill`` does; saved to ``output`` if given.
    """
    from distilrank.models.cross_encoder import resolve_model_path

    try:
        from model2vec.distill import distill
    except ImportError:
        raise MissingExtraError("model2vec", "mining") from None
    model = distill(resolve_model_path(source), pca_dims=pca_dims, device="cpu")
    if output:
        model.save_pretrained(str(output))
    return model


class StaticEncoder:
    """Static token embeddings (model2vec): a model2vec folder or hub name, or distilled from an encoder.

    ``model`` that is a local encoder folder (or the packaged MiniLM) is distilled first with
    :func:`distill_static`; a model2vec folder (``config.json`` with ``model_type: model2vec``) or hub
    name (e.g. ``minishlab/potion-base-8M``) is loaded as it is.
    """

    def __init__(self, model: str, pca_dims: int = 256) -> None:
        from distilrank.models.cross_encoder import PACKAGED_NAMES

        try:
            from model2vec import StaticModel
        except ImportError:
            raise MissingExtraError("model2vec", "mining") from None
        self.name = model
        path = Path(model).expanduser()
        if model in PACKAGED_NAMES or (path.is_dir() and not _is_model2vec_folder(path)):
            logger.info("distilling a static model from %s", model)
            self.model = distill_static(model, pca_dims=pca_dims)
        else:
            try:
                self.model = StaticModel.from_pretrained(model)
            except Exception as exc:  # offline, not found, not a model2vec repo
                raise ConfigError(f"cannot load static model '{model}': {exc}; pass a model2vec folder, or an "
                                  "encoder folder to distil one from") from None

    def encode(self, texts: Sequence[str], batch_size: int = 1024) -> np.ndarray:
        vectors = self.model.encode(list(texts), batch_size=batch_size, show_progress_bar=False,
                                    use_multiprocessing=False)
        return _unit(vectors)


def load_encoder(kind: str, model: str = "", pooling: str = "", max_length: int | None = None) -> Encoder:
    """``dense`` (default: the packaged MiniLM) or ``static`` (default: distilled from the packaged MiniLM)."""
    from distilrank.config import DEFAULT_MODEL

    if kind == "dense":
        return DenseEncoder(model or DEFAULT_MODEL, pooling=pooling, max_length=max_length)
    if kind == "static":
        return StaticEncoder(model or DEFAULT_MODEL)
    raise ConfigError(f"no encoder for retriever {kind!r}; use dense or static")


# ---------------------------------------------------------------------------- FAISS


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise MissingExtraError("faiss-cpu", "mining") from None
    return faiss


def _new_index(kind: str, dim: int, n: int, nlist: int) -> Any:
    faiss = _faiss()
    if kind == "flat":
        return faiss.IndexFlatIP(dim)  # exact inner product (= cosine on unit vectors)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        return index
    if kind == "ivf":
        nlist = nlist or max(1, min(int(4 * math.sqrt(n)), n // 39 or 1))
        return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    raise ConfigError(f"index must be one of {INDEXES}, got {kind!r}")


class FaissRetriever:
    """Corpus vectors from an :class:`Encoder` in a FAISS index; a saved index records its model."""

    def __init__(self, encoder: Encoder, index: Any, ids: list[str], meta: dict[str, Any], batch_size: int = 64,
                 nprobe: int = 16) -> None:
        self.encoder, self.index, self.ids, self.meta = encoder, index, ids, meta
        self.batch_size = batch_size
        if hasattr(index, "nprobe"):
            index.nprobe = min(nprobe, index.nlist)

    @classmethod
    def build(cls, encoder: Encoder, corpus: Mapping[str, Passage], *, index: str = "flat", nlist: int = 0,
              batch_size: int = 64, nprobe: int = 16, seed: int = 0) -> FaissRetriever:
        """Embed ``corpus`` chunk by chunk into a new index (only the index grows with the corpus)."""
        ids = list(corpus)
        if not ids:
            raise ConfigError("cannot index an empty corpus")
        probe = encoder.encode([PROBE], batch_size=1)[0]
        faiss_index = _new_index(index, len(probe), len(ids), nlist)
        if index == "ivf":  # train the coarse quantizer on a seeded sample of the corpus
            rng = np.random.default_rng(seed)
            sample = rng.choice(len(ids), size=min(len(ids), 64 * faiss_index.nlist), replace=False)
            faiss_index.train(encoder.encode([corpus[ids[i]].contents for i in sample], batch_size=batch_size))
        for start in tqdm(range(0, len(ids), ENCODE_CHUNK), desc="indexing", unit="chunk",
                          disable=len(ids) <= ENCODE_CHUNK):
            chunk = ids[start : start + ENCODE_CHUNK]
            faiss_index.add(encoder.encode([corpus[d].contents for d in chunk], batch_size=batch_size))
        meta = {"model": encoder.name, "dim": len(probe), "index": index, "documents": len(ids),
                "fingerprint": [round(float(x), 6) for x in probe]}
        return cls(encoder, faiss_index, ids, meta, batch_size=batch_size, nprobe=nprobe)

    def save(self, folder: str | Path) -> None:
        """``index.faiss``, ``ids.json`` and ``meta.json`` (model name, dimension, fingerprint vector)."""
        from distilrank.io import atomic_dir

        with atomic_dir(folder) as tmp:
            _faiss().write_index(self.index, str(tmp / "index.faiss"))
            (tmp / "ids.json").write_text(json.dumps(self.ids), encoding="utf-8")
            (tmp / "meta.json").write_text(json.dumps(self.meta, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path, encoder: Encoder, *, batch_size: int = 64, nprobe: int = 16) -> FaissRetriever:
        """A saved index, checked against ``encoder``: another model's vectors would give nonsense ranks."""
        folder = Path(folder)
        if not (folder / "meta.json").is_file():
            raise ConfigError(f"{folder} is not a saved index (no meta.json); build one with index_path={folder}")
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        probe = encoder.encode([PROBE], batch_size=1)[0]
        saved = np.asarray(meta["fingerprint"], dtype=np.float32)
        if len(saved) != len(probe) or float(saved @ probe) < 0.999:
            raise ConfigError(
                f"the index at {folder} was built with model '{meta['model']}' ({meta['dim']} dimensions), but it "
                f"is queried with '{encoder.name}' ({len(probe)} dimensions), whose vectors differ; query it with "
                f"the model that built it, or rebuild the index (delete {folder})")
        ids = json.loads((folder / "ids.json").read_text(encoding="utf-8"))
        index = _faiss().read_index(str(folder / "index.faiss"))
        return cls(encoder, index, ids, meta, batch_size=batch_size, nprobe=nprobe)

    def check_corpus(self, corpus: Mapping[str, Passage], folder: str | Path) -> None:
        if len(self.ids) != len(corpus) or any(d not in corpus for d in self.ids):
            raise ConfigError(f"the index at {folder} holds {len(self.ids)} documents that are not this corpus "
                              f"({len(corpus)} documents); delete it to rebuild it for this corpus")

    def search(self, queries: Mapping[str, str], k: int = 100, query_batch: int = 256) -> Run:
        """Top-``k`` per query, best first; ``query_batch`` queries are searched at once."""
        k = min(k, len(self.ids))
        if hasattr(self.index, "hnsw"):
            self.index.hnsw.efSearch = max(64, 2 * k)
        run: Run = {}
        qids = list(queries)
        for start in tqdm(range(0, len(qids), query_batch), desc="searching", unit="batch",
                          disable=len(qids) <= query_batch):
            chunk = qids[start : start + query_batch]
            vectors = self.encoder.encode([queries[q] for q in chunk], batch_size=self.batch_size)
            scores, positions = self.index.search(vectors, k)  # (b, k) each
            for row, qid in enumerate(chunk):
                run[qid] = [(self.ids[p], float(s)) for p, s in zip(positions[row], scores[row]) if p >= 0]
        return run

    def score(self, query: str, passages: Sequence[Passage]) -> list[float]:
        vectors = self.encoder.encode([query, *(p.contents for p in passages)], batch_size=self.batch_size)
        return (vectors[1:] @ vectors[0]).tolist()


def build_retriever(kind: str, corpus: Mapping[str, Passage], *, model: str = "", index: str = "flat",
                    index_path: str = "", batch_size: int = 64, nlist: int = 0, nprobe: int = 16) -> Retriever:
    """``bm25``, ``dense`` or ``static`` over ``corpus``. With ``index_path`` a FAISS index is loaded from
    there when it exists (and checked against the model and corpus), else built and saved there."""
    if kind == "bm25":
        return BM25Retriever(corpus)
    if kind not in RETRIEVERS:
        raise ConfigError(f"retriever must be one of {RETRIEVERS}, got {kind!r}")
    encoder = load_encoder(kind, model)
    if index_path and (Path(index_path) / "meta.json").is_file():
        retriever = FaissRetriever.load(index_path, encoder, batch_size=batch_size, nprobe=nprobe)
        retriever.check_corpus(corpus, index_path)
        return retriever
    retriever = FaissRetriever.build(encoder, corpus, index=index, nlist=nlist, batch_size=batch_size, nprobe=nprobe)
    if index_path:
        retriever.save(index_path)
    return retriever
