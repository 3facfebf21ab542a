"""``distilrank rank``: rank the lines of a file for one query."""

from __future__ import annotations

from pathlib import Path

from distilrank.config import RankConfig
from distilrank.errors import DataError
from distilrank.inference.reranker import RankResult, Reranker


def read_documents(path: str | Path) -> list[str]:
    """One document per line; blank lines are errors (they would shift every index after them)."""
    p = Path(path)
    if not p.is_file():
        raise DataError("no such file", path=p)
    docs = []
    for n, raw in enumerate(p.read_bytes().splitlines(), start=1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise DataError("not valid UTF-8", path=p, line=n, hint="re-encode the file as UTF-8") from None
        if not line:
            raise DataError("empty document", path=p, line=n, hint="remove blank lines")
        docs.append(line)
    if not docs:
        raise DataError("the file holds no documents", path=p)
    return docs


def run_rank(cfg: RankConfig) -> list[RankResult]:
    docs = read_documents(cfg.documents)
    reranker = Reranker.load(cfg.model, batch_size=cfg.batch_size, max_length=cfg.max_length or None)
    results = reranker.rank(cfg.query, docs, top_k=cfg.top_k)
    for rank, r in enumerate(results, start=1):
        text = r.text if len(r.text) <= 100 else r.text[:97] + "..."
        print(f"{rank:>3}  {r.score:>9.4f}  [{r.index}]  {text}")
    return results
