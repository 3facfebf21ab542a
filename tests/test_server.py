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
        self.model = inner.model  # the server counts tokens with model.tokenizer, alongside scoring
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
    ({"query": "q", "documents": ["a"], "top_n": -1}, "top_n"),
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


# ---- the shapes real clients send (Cohere v1/v2, Jina, vLLM, Infinity) ----

def rerank(client: TestClient, path: str = "/rerank", **body) -> dict:
    r = client.post(path, json={"query": QUERY, "documents": DOCS, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_same_answer_at_every_route(reranker: Reranker) -> None:
    with make_client(reranker) as client:
        answers = [rerank(client, path, top_n=3) for path in ("/rerank", "/v1/rerank", "/v2/rerank")]
        assert client.post("/v3/rerank", json={"query": QUERY, "documents": DOCS}).status_code == 404
    assert answers[0]["results"] == answers[1]["results"] == answers[2]["results"]
    assert len({a["id"] for a in answers}) == 3  # a fresh id per answer
    for a in answers:
        assert a["model"] == "tiny" and set(a) == {"id", "model", "results", "usage", "meta"}


def test_text_objects_score_as_strings_and_come_back_whole(reranker: Reranker) -> None:
    objects = [{"text": d, "id": f"doc-{i}"} for i, d in enumerate(DOCS)]
    with make_client(reranker) as client:
        plain = rerank(client)
        wrapped = rerank(client, documents=objects, return_documents=True)
    assert [(x["index"], x["relevance_score"]) for x in wrapped["results"]] == \
        [(x["index"], x["relevance_score"]) for x in plain["results"]]
    for x in wrapped["results"]:  # the object as given, extra fields kept (Cohere v1)
        assert x["document"] == {"text": DOCS[x["index"]], "id": f"doc-{x['index']}"}


def test_rank_fields_score_the_named_fields_in_order(reranker: Reranker) -> None:
    docs = [{"title": f"title {i}", "body": d} for i, d in enumerate(DOCS)]
    joined = [f"title {i}\n{d}" for i, d in enumerate(DOCS)]
    want = reranker.score([(QUERY, t) for t in joined])
    with make_client(reranker) as client:
        got = rerank(client, documents=docs, rank_fields=["title", "body"], return_documents=True)
        mixed = rerank(client, documents=[DOCS[0], {"body": DOCS[1]}], rank_fields=["body"])
    for x in got["results"]:
        assert x["relevance_score"] == pytest.approx(want[x["index"]], abs=1e-5)
        # no "text" field: document.text is the text that was scored
        assert x["document"] == {"text": joined[x["index"]], **docs[x["index"]]}
    assert sorted(x["index"] for x in mixed["results"]) == [0, 1]  # strings stay strings


def test_top_n_zero_or_null_is_all_and_return_documents_null_is_false(reranker: Reranker) -> None:
    with make_client(reranker) as client:
        for top_n in (0, None):
            body = rerank(client, top_n=top_n, return_documents=None)
            assert len(body["results"]) == len(DOCS)
            assert all("document" not in x for x in body["results"])
        assert len(rerank(client, top_n=2)["results"]) == 2


def test_max_tokens_per_doc_cuts_documents_and_reports_it(reranker: Reranker) -> None:
    tok = reranker.model.tokenizer
    ids = [tok(d, add_special_tokens=False)["input_ids"] for d in DOCS]
    cut = [tok.decode(i[:3]) for i in ids]
    want = reranker.score([(QUERY, c) for c in cut])
    n_query = len(tok(QUERY, add_special_tokens=False)["input_ids"])
    with make_client(reranker) as client:
        body = rerank(client, max_tokens_per_doc=3, return_documents=True)
        whole = rerank(client)
    long = sum(len(i) > 3 for i in ids)
    assert long >= 2 and body["meta"]["truncated_documents"] == long
    assert "max_tokens_per_doc=3" in body["meta"]["warnings"][0]
    uncut = reranker.score([(QUERY, d) for d in DOCS])
    assert max(abs(a - b) for a, b in zip(want, uncut)) > 1e-5  # cutting changes scores: the check below can fail
    for x in body["results"]:
        assert x["relevance_score"] == pytest.approx(want[x["index"]], abs=1e-6)
        assert x["document"]["text"] == DOCS[x["index"]]  # the document as given, not the cut one
    tokens = n_query * len(DOCS) + sum(min(len(i), 3) for i in ids)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert whole["meta"]["truncated_documents"] == 0 and "warnings" not in whole["meta"]
    assert whole["usage"]["prompt_tokens"] == n_query * len(DOCS) + sum(map(len, ids))


def test_without_a_tokenizer_words_count_as_tokens() -> None:
    class ByLength:  # no .model.tokenizer: the server falls back to whitespace-separated words
        def score(self, pairs):
            return [float(len(d)) for _, d in pairs]

    with make_client(ByLength()) as client:
        body = client.post("/rerank", json={"query": "two words", "documents": ["a bb ccc dddd", "e"],
                                            "max_tokens_per_doc": 2}).json()
    assert [x["relevance_score"] for x in body["results"]] == [4.0, 1.0]  # "a bb" was scored
    assert body["usage"]["prompt_tokens"] == 2 * 2 + 2 + 1 and body["meta"]["truncated_documents"] == 1


def test_score_scale_sigmoid_keeps_order_and_raw_scores_overrides(reranker: Reranker) -> None:
    import math

    with make_client(reranker) as client:
        raw = rerank(client)
    with make_client(reranker, score_scale="sigmoid") as client:
        sig = rerank(client)
        infinity_raw = rerank(client, raw_scores=True)
    assert raw["meta"]["score_scale"] == "raw" and sig["meta"]["score_scale"] == "sigmoid"
    assert [x["index"] for x in sig["results"]] == [x["index"] for x in raw["results"]]
    for r, s in zip(raw["results"], sig["results"]):
        assert 0 < s["relevance_score"] < 1
        assert s["relevance_score"] == pytest.approx(1 / (1 + math.exp(-r["relevance_score"])), abs=1e-9)
    assert infinity_raw["results"] == raw["results"]


def test_sigmoid_is_stable_at_extremes() -> None:
    from distilrank.inference.rerank_protocol import scaled

    assert scaled(-1000.0, "sigmoid") == 0.0 and scaled(1000.0, "sigmoid") == 1.0
    assert scaled(0.0, "sigmoid") == 0.5 and scaled(-3.5, "raw") == -3.5


@pytest.mark.parametrize("body, field, words", [
    ({"documents": [{"text": "a"}, {"title": "b"}]}, "documents.1.text", "rank_fields"),
    ({"documents": ["a", {"text": 3}]}, "documents.1.text", "int, not a string"),
    ({"documents": ["a", 7]}, "documents.1", "string or an object"),
    ({"documents": [["a"]]}, "documents.0", "string or an object"),
    ({"documents": [{"title": "a", "text": "b"}], "rank_fields": ["title", "author"]}, "documents.0.author", "missing"),
    ({"documents": ["a"], "rank_fields": "title"}, "rank_fields", ""),
    ({"documents": ["a"], "max_tokens_per_doc": 0}, "max_tokens_per_doc", ""),
    ({"documents": ["a"], "max_tokens_per_doc": "10"}, "max_tokens_per_doc", ""),
    ({"documents": ["a"], "raw_scores": "no"}, "raw_scores", ""),
])
def test_bad_documents_and_fields_are_422(reranker: Reranker, body: dict, field: str, words: str) -> None:
    with make_client(reranker) as client:
        for path in ("/rerank", "/v2/rerank"):
            r = client.post(path, json={"query": "q", **body})
            assert r.status_code == 422
            err = r.json()
            assert f"invalid request: {field}" in err["error"] and words in err["error"]
            assert any(".".join(map(str, d["loc"])) == field for d in err["detail"])


def test_size_limits_apply_to_the_scored_text_of_objects(reranker: Reranker) -> None:
    with make_client(reranker, max_document_chars=10) as client:
        r = client.post("/rerank", json={"query": "q", "documents": [{"a": "x" * 6, "b": "y" * 6}],
                                         "rank_fields": ["a", "b"]})
    assert r.status_code == 413 and "document 0 has 13 characters" in r.json()["error"]


def test_bad_score_scale_is_one_clear_line(capsys) -> None:
    from distilrank.cli import main

    with pytest.raises(ConfigError, match="score_scale must be raw or sigmoid, got 'percent'"):
        ServeConfig(model="/models/tiny", score_scale="percent")
    assert main(["serve", "model=/models/tiny", "score_scale=percent"]) == 2
    err = capsys.readouterr().err
    assert "score_scale must be raw or sigmoid" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
