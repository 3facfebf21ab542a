"""``distilrank rank``: rank the lines of a file for one query."""

from __future__ import annotations

from pathlib import Path

from distilrank.config import RankConfig
from distilrank.errors import DataError
from distilrank.inference.reranker import RankResult, Reranker


def read_documents(path: str | Path) -> list[str]:
    """One document per line; blank lines are errors (they would shift every index after them)."""
    p = Path(path)
    if p.is_dir():
        raise DataError("is a folder, not a file", path=p, hint="documents= takes a text file, one document per line")
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
    reranker = Reranker.load(cfg.model, batch_size=cfg.batch_size, max_length=cfg.max_length or None,
                             long_documents=cfg.long_documents, passage_stride=cfg.passage_stride,
                             max_passages=cfg.max_passages, encoder=cfg.encoder,
                             allow_new_head=cfg.allow_new_head)
    results = reranker.rank(cfg.query, docs, top_k=cfg.top_k)
    model = reranker.model
    if hasattr(model, "passages"):  # say how long documents were read instead of hiding it
        from distilrank.data.passages import describe_stats, passage_stats

        stats = passage_stats(model.tokenizer, [(cfg.query, d) for d in docs], model.max_length, model.passages)
        if stats["longer_than_window"]:
            print(describe_stats(stats))
    for rank, r in enumerate(results, start=1):
        text = r.text if len(r.text) <= 100 else r.text[:97] + "..."
        print(f"{rank:>3}  {r.score:>9.4f}  [{r.index}]  {text}")
    return results
