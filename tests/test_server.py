"""The HTTP rerank API: answers equal Reranker's, limits give 413/422, concurrent requests share calls."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from distilrank.config import ServeConfig  # noqa: E402
from distilrank.errors import ConfigError, MissingExtraError  # noqa: E402
from distilrank.inference.reranker import Reranker  # noqa: E402
from distilrank.inference.server import BatchScorer, create_app, run_server  # noqa: E402

QUERY = "python sort list"
DOCS = ["sort a list in python", "the file is open", "return the sorted list", "a dict of key value items",
        "python list sort method", "close the file"]


@pytest.fixture(scope="module")
def reranker(tiny_model: Path) -> Reranker:
    return Reranker.load(tiny_model, device="cpu", batch_size=4)


class Counting:
    """A reranker stand-in that counts scoring calls (and can be told to fail or be slow)."""

    def __init__(self, inner: Reranker, delay: float = 0.0) -> None:
        self.inner, self.delay, self.calls, self.fail = inner, delay, 0, False
        self.lock = threading.Lock()

    def score(self, pairs):
        with self.lock:
            self.calls += 1
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("model on fire")
        return self.inner.score(pairs)


def make_client(scorer, **overrides) -> TestClient:
    cfg = ServeConfig(model="/models/tiny", **overrides)
    return TestClient(create_app(scorer, cfg, model_name="tiny"))


def test_scores_and_order_equal_reranker(reranker: Reranker) -> None:
    expected = reranker.score([(QUERY, d) for d in DOCS])
    ranked = reranker.rank(QUERY, DOCS)
    with make_client(reranker) as client:
        r = client.post("/rerank", json={"query": QUERY, "documents": DOCS})
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "tiny" and body["meta"]["documents"] == len(DOCS)
    assert [x["index"] for x in body["results"]] == [x.index for x in ranked]
    for x in body["results"]:
        assert x["relevance_score"] == pytest.approx(expected[x["index"]], abs=1e-5)
        assert "document" not in x
    scores = [x["relevance_score"] for x in body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_top_n_and_return_documents(reranker: Reranker) -> None:
    ranked = reranker.rank(QUERY, DOCS, top_k=2)
    with make_client(reranker) as client:
        r = client.post("/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 2, "return_documents": True})
        big = client.post("/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 100})
    results = r.json()["results"]
    assert [x["index"] for x in results] == [x.index for x in ranked]
    assert [x["document"] for x in results] == [{"text": DOCS[x.index]} for x in ranked]
    assert len(big.json()["results"]) == len(DOCS)


def test_health(reranker: Reranker) -> None:
    with make_client(reranker) as client:
        r = client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok", "model": "tiny"}


@pytest.mark.parametrize("body, field", [
    ({"documents": ["a"]}, "query"),
    ({"query": "q"}, "documents"),
    ({"query": 3, "documents": ["a"]}, "query"),
    ({"query": "   ", "documents": ["a"]}, "query"),
    ({"query": "q", "documents": []}, "documents"),
    ({"query": "q", "documents": ["a", 7]}, "documents.1"),
    ({"query": "q", "documents": "a"}, "documents"),
    ({"query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
    ({"query": "q", "documents": ["a"], "top_n": "2"}, "top_n"),
    ({"query": "q", "documents": ["a"], "return_documents": "yes"}, "return_documents"),
])
def test_invalid_requests_are_422(reranker: Reranker, body: dict, field: str) -> None:
    with make_client(reranker) as client:
        r = client.post("/rerank", json=body)
    assert r.status_code == 422
    err = r.json()
    assert field in err["error"] and any(".".join(map(str, d["loc"])) == field for d in err["detail"])


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]", b'{"query": "q", "documents": ["a"]'])
def test_malformed_json_is_422(reranker: Reranker, content: bytes) -> None:
    with make_client(reranker) as client:
        r = client.post("/rerank", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "invalid request" in r.json()["error"]


@pytest.mark.parametrize("body, word", [
    ({"query": "q", "documents": ["a"] * 4}, "max_documents"),
    ({"query": "q" * 31, "documents": ["a"]}, "max_query_chars"),
    ({"query": "q", "documents": ["a", "b" * 51]}, "max_document_chars"),
])
def test_over_limits_are_413(reranker: Reranker, body: dict, word: str) -> None:
    with make_client(reranker, max_documents=3, max_query_chars=30, max_document_chars=50) as client:
        r = client.post("/rerank", json=body)
        ok = client.post("/rerank", json={"query": "q" * 30, "documents": ["a", "b" * 50, "c"]})
    assert r.status_code == 413 and word in r.json()["error"]
    assert ok.status_code == 200


def test_body_over_max_bytes_is_413(reranker: Reranker) -> None:
    counting = Counting(reranker)
    payload = json.dumps({"query": "q", "documents": ["x" * 300]}).encode()
    with make_client(counting, max_body_bytes=200) as client:
        declared = client.post("/rerank", content=payload, headers={"content-type": "application/json"})

        def chunks():  # streamed: no Content-Length, so only the bytes actually read can tell
            yield payload[:150]
            yield payload[150:]

        streamed = client.post("/rerank", content=chunks(), headers={"content-type": "application/json"})
        small = client.post("/rerank", json={"query": "q", "documents": ["x" * 50]})
    assert declared.status_code == 413 and "max_body_bytes" in declared.json()["error"]
    assert streamed.status_code == 413 and "max_body_bytes" in streamed.json()["error"]
    assert small.status_code == 200 and counting.calls == 1


def test_concurrent_requests_share_scoring_calls(reranker: Reranker) -> None:
    counting = Counting(reranker, delay=0.05)
    requests = [(f"{w} list", DOCS[i % 3:i % 3 + 3]) for i, w in enumerate(["python", "sort", "file", "key"] * 4)]
    expected = [reranker.score([(q, d) for d in docs]) for q, docs in requests]
    with make_client(counting, batch_wait_ms=50) as client:
        def send(req):
            return client.post("/rerank", json={"query": req[0], "documents": req[1]}).json()

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(send, requests))
    for answer, want in zip(answers, expected):
        got = {x["index"]: x["relevance_score"] for x in answer["results"]}
        assert [got[i] for i in range(len(want))] == pytest.approx(want, abs=1e-5)
    assert counting.calls < len(requests)


def test_scoring_error_is_500_and_worker_survives(reranker: Reranker) -> None:
    counting = Counting(reranker)
    with make_client(counting) as client:
        counting.fail = True
        bad = client.post("/rerank", json={"query": QUERY, "documents": DOCS})
        counting.fail = False
        good = client.post("/rerank", json={"query": QUERY, "documents": DOCS})
    assert bad.status_code == 500 and "model on fire" in bad.json()["error"]
    assert good.status_code == 200 and len(good.json()["results"]) == len(DOCS)


def test_batch_scorer_caps_pairs_and_drains_on_stop() -> None:
    import asyncio

    calls: list[int] = []

    def score(pairs):
        calls.append(len(pairs))
        return [float(len(d)) for _, d in pairs]

    async def main():
        scorer = BatchScorer(score, wait_s=0.01, max_pairs=5)
        await scorer.start()
        jobs = [asyncio.create_task(scorer.score([("q", "x" * (i + 1))] * 2)) for i in range(6)]
        await asyncio.sleep(0)  # all six queued before the worker wakes
        await scorer.stop()
        return [j.result() for j in jobs]

    results = asyncio.run(main())
    assert results == [[float(i + 1)] * 2 for i in range(6)]
    assert calls == [4, 4, 4]  # two 2-pair jobs per call: a third would pass max_pairs=5


def test_run_server_missing_model_is_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("uvicorn must not start"))
    with pytest.raises(ConfigError, match="no model folder"):
        run_server(ServeConfig(model=str(tmp_path / "missing")))
    with pytest.raises(ConfigError, match="no model folder"):
        run_server(ServeConfig(model="./missing-model"))


def test_run_server_loads_model_once_and_serves(tiny_model: Path, reranker: Reranker,
                                                 monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import uvicorn

    seen: dict = {}

    def fake_run(app, host, port, **kwargs):  # stands in for the blocking server: exercise the app once
        seen.update(host=host, port=port)
        with TestClient(app) as client:
            seen["health"] = client.get("/health").json()
            seen["top"] = client.post("/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 1}).json()

    monkeypatch.setattr(uvicorn, "run", fake_run)
    run_server(ServeConfig(model=str(tiny_model), port=8123, backend="torch", batch_size=4))
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123
    assert seen["health"] == {"status": "ok", "model": tiny_model.name}
    assert seen["top"]["results"][0]["index"] == reranker.rank(QUERY, DOCS)[0].index
    assert "http://127.0.0.1:8123" in capsys.readouterr().out


def test_missing_extra_names_serve(reranker: Reranker, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # makes `import uvicorn` fail
    with pytest.raises(MissingExtraError, match=r"uvicorn.*distilrank\[serve\]"):
        run_server(ServeConfig(model="/models/tiny"))


def test_real_uvicorn_server(reranker: Reranker) -> None:
    import httpx
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = ServeConfig(model="/models/tiny", port=port)
    server = uvicorn.Server(uvicorn.Config(create_app(reranker, cfg), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started
        r = httpx.post(f"http://127.0.0.1:{port}/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 1})
        assert r.status_code == 200
        assert r.json()["results"][0]["index"] == reranker.rank(QUERY, DOCS)[0].index
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not thread.is_alive()
