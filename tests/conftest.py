"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public data in ../shared/data; a test using it is skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved 2-layer random BERT cross-encoder (read-only: copy it before changing it)."""
    from tiny import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def toy_groups(n: int = 24, negatives: int = 3, seed: int = 0) -> list[dict]:
    """Groups whose positive repeats the query's words and whose negatives do not."""
    import random

    from tiny import WORDS

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        q = rng.sample(WORDS, 3)
        others = [w for w in WORDS if w not in q]
        rows.append({
            "query": " ".join(q),
            "positive": " ".join(q + rng.sample(others, 4)),
            "negatives": [" ".join(rng.sample(others, 7)) for _ in range(negatives)],
        })
    return rows


@pytest.fixture
def groups_file(tmp_path: Path) -> Path:
    import json

    path = tmp_path / "groups.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in toy_groups()), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def demo_beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded demo dataset written as a BEIR folder (built once per session)."""
    from distilrank.data.demo import build_demo_dataset, write_beir

    return write_beir(build_demo_dataset(seed=13), tmp_path_factory.mktemp("demo") / "beir")


PIPELINE_WORDS = ["sort", "list", "file", "string", "value", "object", "number", "function", "class", "method",
                  "module", "error", "data", "key", "dict", "set", "item", "type", "name", "path", "read", "write",
                  "open", "close"]


@pytest.fixture(scope="session")
def tiny_beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60-document BEIR folder whose relevant document repeats its query's words (train and test qrels)."""
    import json
    import random

    rng = random.Random(0)
    folder = tmp_path_factory.mktemp("beir")
    corpus, queries, qrels = [], [], {"train": [], "test": []}
    for i in range(30):
        words = rng.sample(PIPELINE_WORDS, 3)
        queries.append({"_id": f"q{i}", "text": " ".join(words)})
        corpus.append({"_id": f"d{i}", "title": "", "text": " ".join(words + rng.sample(PIPELINE_WORDS, 4))})
        corpus.append({"_id": f"x{i}", "title": "", "text": " ".join(rng.sample(PIPELINE_WORDS, 7))})
        qrels["train" if i < 20 else "test"].append(f"q{i}\td{i}\t1")
    (folder / "qrels").mkdir()
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    for split, lines in qrels.items():
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(lines) + "\n")
    return folder
