"""The rerank server called by the client libraries people already use, over a real socket.

Each test is skipped when its client is not installed (``pip install "distilrank[clients]"``; the
``dev`` extra, which CI installs, includes them): what the clients send and what they parse is
what is tested, so nothing here builds a request body by hand except the raw Jina/vLLM calls.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from distilrank.config import ServeConfig  # noqa: E402
from distilrank.inference.reranker import Reranker  # noqa: E402
from distilrank.inference.server import create_app  # noqa: E402

QUERY = "python sort list"
DOCS = ["sort a list in python", "the file is open", "return the sorted list", "a dict of key value items",
        "python list sort method", "close the file"]


@pytest.fixture(scope="module")
def reranker(tiny_model: Path) -> Reranker:
    return Reranker.load(tiny_model, device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def base_url(reranker: Reranker) -> Iterator[str]:
    """A uvicorn server on a free localhost port, serving the tiny reranker; stopped after the module."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = ServeConfig(model="/models/tiny", port=port)
    server = uvicorn.Server(uvicorn.Config(create_app(reranker, cfg, model_name="tiny"), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if server.started and httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        else:
            pytest.fail("the server did not answer /health within 20 s")
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def expected(reranker: Reranker, docs: list[str] = DOCS, top_n: int | None = None) -> list[tuple[int, float]]:
    return [(r.index, r.score) for r in reranker.rank(QUERY, docs, top_k=top_n)]


def check(results: list, want: list[tuple[int, float]]) -> None:
    """``results`` (objects with .index and .relevance_score) in ``want``'s order, with its scores."""
    assert [r.index for r in results] == [i for i, _ in want]
    assert [r.relevance_score for r in results] == pytest.approx([s for _, s in want], abs=1e-5)


def test_cohere_client_v2(base_url: str, reranker: Reranker) -> None:
    cohere = pytest.importorskip("cohere")
    client = cohere.ClientV2(api_key="not-checked", base_url=base_url)
    resp = client.rerank(model="tiny", query=QUERY, documents=DOCS, top_n=3)
    check(resp.results, expected(reranker, top_n=3))
    assert resp.id
    cut = client.rerank(model="tiny", query=QUERY, documents=DOCS, max_tokens_per_doc=2)
    assert len(cut.results) == len(DOCS)
    assert cut.meta.truncated_documents >= 2 and "max_tokens_per_doc=2" in cut.meta.warnings[0]


def test_cohere_client_v1_strings_and_dicts(base_url: str, reranker: Reranker) -> None:
    cohere = pytest.importorskip("cohere")
    client = cohere.Client(api_key="not-checked", base_url=base_url)
    plain = client.rerank(model="tiny", query=QUERY, documents=DOCS, top_n=2, return_documents=True)
    check(plain.results, expected(reranker, top_n=2))
    assert [r.document.text for r in plain.results] == [DOCS[r.index] for r in plain.results]

    dicts = [{"text": d, "source": f"s{i}"} for i, d in enumerate(DOCS)]
    by_text = client.rerank(model="tiny", query=QUERY, documents=dicts, return_documents=True)
    check(by_text.results, expected(reranker))
    assert [r.document.text for r in by_text.results] == [DOCS[r.index] for r in by_text.results]

    titled = [{"title": f"doc {i}", "text": d} for i, d in enumerate(DOCS)]
    joined = [f"doc {i}\n{d}" for i, d in enumerate(DOCS)]
    by_fields = client.rerank(model="tiny", query=QUERY, documents=titled, rank_fields=["title", "text"])
    check(by_fields.results, expected(reranker, joined))


def test_langchain_cohere_rerank_compress_documents(base_url: str, reranker: Reranker) -> None:
    pytest.importorskip("cohere")
    langchain_cohere = pytest.importorskip("langchain_cohere")
    from langchain_core.documents import Document

    rerank = langchain_cohere.CohereRerank(cohere_api_key="not-checked", base_url=base_url, model="tiny", top_n=3)
    docs = [Document(page_content=d, metadata={"n": i}) for i, d in enumerate(DOCS)]
    kept = rerank.compress_documents(docs, QUERY)
    want = expected(reranker, top_n=3)
    assert [d.metadata["n"] for d in kept] == [i for i, _ in want]
    assert [d.page_content for d in kept] == [DOCS[i] for i, _ in want]
    assert [d.metadata["relevance_score"] for d in kept] == pytest.approx([s for _, s in want], abs=1e-5)


def test_infinity_client(base_url: str, reranker: Reranker) -> None:
    pytest.importorskip("infinity_client")
    from infinity_client import Client
    from infinity_client.api.default import rerank
    from infinity_client.models import HTTPValidationError, RerankInput, ReRankResult

    client = Client(base_url=base_url)
    result = rerank.sync(client=client, body=RerankInput(query=QUERY, documents=DOCS, top_n=4,
                                                          return_documents=True))
    assert isinstance(result, ReRankResult)
    check(result.results, expected(reranker, top_n=4))
    assert [r.document["text"] for r in result.results] == [DOCS[r.index] for r in result.results]
    assert result.usage.prompt_tokens == result.usage.total_tokens > 0
    bad = rerank.sync(client=client, body=RerankInput(query="  ", documents=DOCS))
    assert isinstance(bad, HTTPValidationError) and bad.detail[0].loc == ["query"]


def test_raw_jina_shaped_call(base_url: str, reranker: Reranker) -> None:
    body = {"model": "jina-reranker-v2-base-multilingual", "query": QUERY, "top_n": 3, "return_documents": True,
            "documents": [{"text": d} for d in DOCS]}
    r = httpx.post(f"{base_url}/v1/rerank", json=body, headers={"Authorization": "Bearer x"})
    assert r.status_code == 200
    answer = r.json()
    assert [(x["index"], x["document"]["text"]) for x in answer["results"]] == \
        [(i, DOCS[i]) for i, _ in expected(reranker, top_n=3)]
    assert answer["usage"]["total_tokens"] > 0 and answer["model"] == "tiny"


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank", "/v2/rerank"])
def test_raw_vllm_shaped_call(base_url: str, reranker: Reranker, path: str) -> None:
    # vLLM's body: top_n 0 means all; truncate_prompt_tokens and priority are accepted and ignored
    body = {"model": "BAAI/bge-reranker-base", "query": QUERY, "documents": DOCS, "top_n": 0,
            "truncate_prompt_tokens": -1, "priority": 0}
    r = httpx.post(f"{base_url}{path}", json=body)
    assert r.status_code == 200
    answer = r.json()
    want = expected(reranker)
    assert [x["index"] for x in answer["results"]] == [i for i, _ in want]
    assert answer["id"] and answer["usage"]["prompt_tokens"] == answer["usage"]["total_tokens"] > 0
