"""Suites: NanoBEIR repos loaded through the real ``datasets.load_dataset`` from local folders, one table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from distilrank.config import EvalConfig
from distilrank.errors import ConfigError
from distilrank.evaluation.suite import expand_specs, inject_relevant, load_nanobeir, run_suite

CONFIGS = ["corpus", "queries", "qrels", "bm25"]


def jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def nano_repo(root: Path, name: str = "NanoToy", bm25: bool = True) -> Path:
    """A folder laid out like zeta-alpha-ai/NanoX: configs corpus, queries, qrels (+ bm25), split train."""
    from tiny import WORDS

    repo = root / name
    configs = CONFIGS if bm25 else CONFIGS[:3]
    front = "".join(f"- config_name: {c}\n  data_files:\n  - split: train\n    path: {c}/*.jsonl\n" for c in configs)
    repo.mkdir(parents=True)
    (repo / "README.md").write_text(f"---\nconfigs:\n{front}---\n# toy NanoBEIR\n", encoding="utf-8")
    docs = [{"_id": f"d{i}", "text": " ".join(WORDS[i : i + 5])} for i in range(40)]
    jsonl(repo / "corpus" / "c.jsonl", docs)
    jsonl(repo / "queries" / "q.jsonl", [{"_id": f"q{i}", "text": " ".join(WORDS[i * 3 : i * 3 + 2])}
                                         for i in range(8)])
    jsonl(repo / "qrels" / "r.jsonl", [{"query-id": f"q{i}", "corpus-id": f"d{i * 3}"} for i in range(8)])
    if bm25:  # deliberately poor: the relevant document is ranked 7th (or missing for q0)
        rows = [{"query-id": f"q{i}", "corpus-ids": [f"d{j}" for j in range(40) if j != i * 3][:6]
                 + ([f"d{i * 3}"] if i else [])} for i in range(8)]
        jsonl(repo / "bm25" / "b.jsonl", rows)
    return repo


def test_load_nanobeir_local_repo(tmp_path: Path):
    ds, run = load_nanobeir(str(nano_repo(tmp_path)))
    assert ds.name == "NanoToy" and len(ds.corpus) == 40 and len(ds.queries) == 8
    assert ds.qrels["q2"] == {"d6": 1}
    assert [d for d, _ in run["q1"]][-1] == "d3" and len(run["q0"]) == 6
    assert [s for _, s in run["q1"]] == sorted((s for _, s in run["q1"]), reverse=True)
    _, none = load_nanobeir(str(nano_repo(tmp_path / "b", bm25=False)))
    assert none is None


def test_expand_specs():
    assert expand_specs("demo, nanobeir:msmarco") == ["demo", "zeta-alpha-ai/NanoMSMARCO"]
    assert len(expand_specs("nanobeir")) == 13
    with pytest.raises(ConfigError, match="unknown NanoBEIR"):
        expand_specs("nanobeir:nope")


def test_suite_table_rows_and_mean_and_injection(tmp_path: Path, demo_beir: Path, tiny_model: Path, capsys):
    from distilrank.evaluation.run import run_eval

    nano = nano_repo(tmp_path)
    data = f"{demo_beir},{nano}"
    cfg = EvalConfig(data=data, model=str(tiny_model), top_k=5, max_queries=8, output_dir=str(tmp_path / "out"))
    result = run_suite(cfg)
    out = capsys.readouterr().out
    assert "NanoToy" in out and "mean" in out and "were NOT injected" in out
    rows = result["datasets"]
    assert [r["dataset"] for r in rows] == [demo_beir.name, "NanoToy"]
    assert rows[1]["first_stage_source"] == "shipped run"
    for part in ("first_stage", "reranker"):
        assert result["mean"][part]["nDCG@10"] == pytest.approx(sum(r[part]["nDCG@10"] for r in rows) / 2)
    # the suite's per-dataset figures are what a single-dataset eval reports
    single = run_eval(EvalConfig(data=str(demo_beir), model=str(tiny_model), top_k=5, max_queries=8))
    assert rows[0]["first_stage"] == pytest.approx(single["first_stage"])
    assert rows[0]["reranker"] == pytest.approx(single["reranker"])
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())["mean"]
    assert saved["reranker"] == pytest.approx(result["mean"]["reranker"])
    # top-5 of the toy BM25 run never holds the relevant document: nothing to rerank into place...
    assert rows[1]["reranker"]["nDCG@10"] == 0.0
    injected = run_suite(EvalConfig(data=str(nano), model=str(tiny_model), top_k=5, inject_relevant=True))
    assert "WERE injected into the candidates (8 added" in capsys.readouterr().out
    assert injected["datasets"][0]["reranker"]["nDCG@10"] > 0.0  # ...unless missed documents are injected
    assert injected["datasets"][0]["first_stage"] == rows[1]["first_stage"]


def test_inject_relevant_appends_below_candidates():
    from distilrank.data.records import Passage, Query, RetrievalDataset

    ds = RetrievalDataset({d: Passage(d, d) for d in "abc"}, {"q": Query("q", "x")}, {"q": {"c": 1, "b": 0}})
    run, n = inject_relevant(ds, {"q": [("a", 2.0), ("b", 1.0)]})
    assert n == 1 and run["q"] == [("a", 2.0), ("b", 1.0), ("c", 0.0)]
