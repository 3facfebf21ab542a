"""First-stage retrieval with bm25s (sparse matrices, fast on CPU)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from distilrank.data.records import Passage, Run

logger = logging.getLogger(__name__)


class BM25Retriever:
    """BM25 (Lucene variant, k1=0.9, b=0.4 as Anserini) over a corpus, English stopwords + stemming."""

    def __init__(self, corpus: Mapping[str, Passage], k1: float = 0.9, b: float = 0.4) -> None:
        import bm25s
        import Stemmer

        self._bm25s = bm25s
        self.stemmer = Stemmer.Stemmer("english")
        self.ids = list(corpus)
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
