"""``distilrank serve``: an HTTP rerank API that the Cohere, Jina, vLLM and Infinity clients can call.

``POST /rerank``, ``/v1/rerank`` and ``/v2/rerank`` (one handler) take ``{"query", "documents",
"top_n"?, "return_documents"?, "rank_fields"?, "max_tokens_per_doc"?}`` and answer ``{"id", "model",
"results": [{"index", "relevance_score", "document"?}], "usage", "meta"}``, best first (the shapes:
rerank_protocol.py). ``GET /health`` answers ``{"status": "ok", "model"}``. The model is loaded once
at start-up from the config; a request never names a path.

Concurrent requests share scoring calls: a background worker collects the pairs of the requests
that arrive within ``batch_wait_ms`` and scores them together in a worker thread, one call at a
time, so the event loop keeps accepting requests while the model runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilrank.config import ServeConfig
from distilrank.errors import ConfigError, MissingExtraError
from distilrank.inference import rerank_protocol as protocol

if TYPE_CHECKING:
    import fastapi

    from distilrank.inference.reranker import Reranker

logger = logging.getLogger(__name__)

Pair = tuple[str, str]
ScoreFn = Callable[[Sequence[Pair]], list[float]]

# a hub id such as "org/name": the only model string that may name no local folder
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
ROUTES = ("/rerank", "/v1/rerank", "/v2/rerank")


@dataclass
class _Job:
    pairs: list[Pair]
    future: asyncio.Future[list[float]]


class BatchScorer:
    """Scores the pairs of concurrent requests together, one scoring call at a time.

    ``score_fn(pairs) -> scores`` runs in a worker thread. A call gathers the jobs that arrived
    within ``wait_s`` of the first one, up to ``max_pairs`` pairs (a single larger job is scored
    alone). A failing call fails only the requests in it; the worker carries on.
    """

    def __init__(self, score_fn: ScoreFn, *, wait_s: float, max_pairs: int) -> None:
        self._score_fn = score_fn
        self._wait_s = wait_s
        self._max_pairs = max_pairs
        self._queue: asyncio.Queue[_Job | None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="distilrank-batch-scorer")

    async def stop(self) -> None:
        """Score every job already queued, then end the worker."""
        if self._task is None or self._queue is None:
            return
        await self._queue.put(None)  # FIFO: jobs queued before the sentinel are still scored
        await self._task
        self._task = None

    async def score(self, pairs: list[Pair]) -> list[float]:
        """Scores of ``pairs`` in order, computed in a shared batch."""
        if self._task is None or self._task.done() or self._queue is None:
            raise RuntimeError("the batch scorer is not running (the app's lifespan did not start it)")
        future: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(pairs, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        carry: _Job | None = None
        while True:
            first = carry if carry is not None else await self._queue.get()
            if first is None:
                return
            if self._wait_s > 0 and carry is None:
                await asyncio.sleep(self._wait_s)  # let requests arriving together join this call
            batch, carry, stopping = self._drain(first)
            await self._score_batch(batch)
            if stopping and carry is None:
                return

    def _drain(self, first: _Job) -> tuple[list[_Job], _Job | None, bool]:
        """``first`` plus the queued jobs that fit in ``max_pairs``; the one that did not; sentinel seen."""
        assert self._queue is not None
        batch, n = [first], len(first.pairs)
        while n < self._max_pairs:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if job is None:
                return batch, None, True
            if n + len(job.pairs) > self._max_pairs:
                return batch, job, False
            batch.append(job)
            n += len(job.pairs)
        return batch, None, False

    async def _score_batch(self, batch: list[_Job]) -> None:
        batch = [j for j in batch if not j.future.done()]  # a cancelled request needs no scores
        if not batch:
            return
        pairs = [p for j in batch for p in j.pairs]
        try:
            scores = await asyncio.to_thread(self._score_fn, pairs)
            if len(scores) != len(pairs):
                raise RuntimeError(f"the scorer returned {len(scores)} scores for {len(pairs)} pairs")
        except Exception as exc:  # answer these requests with the error; keep serving others
            logger.exception("scoring %d pairs failed", len(pairs))
            for j in batch:
                if not j.future.done():
                    j.future.set_exception(exc)
            return
        start = 0
        for j in batch:
            if not j.future.done():
                j.future.set_result([float(s) for s in scores[start:start + len(j.pairs)]])
            start += len(j.pairs)


def _error(status: int, message: str, detail: Any = None) -> Any:
    from fastapi.responses import JSONResponse

    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(status_code=status, content=body)


def _validation_error(exc: Any) -> Any:
    """422 naming each bad field, without echoing the (possibly huge) input back."""
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    where = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors)
    return _error(422, f"invalid request: {where}", errors)


def _request_error(exc: protocol.RequestError) -> Any:
    where = ".".join(str(p) for p in exc.loc)
    return _error(422, f"invalid request: {where}: {exc.msg}", [{"loc": exc.loc, "msg": exc.msg, "type": "value_error"}])


def _too_large(req: Any, texts: list[str], cfg: ServeConfig) -> str:
    """Why the request is over a size limit ("" when it is not)."""
    if len(texts) > cfg.max_documents:
        return f"{len(texts)} documents; at most {cfg.max_documents} per request (max_documents)"
    if len(req.query) > cfg.max_query_chars:
        return f"query has {len(req.query)} characters; at most {cfg.max_query_chars} (max_query_chars)"
    for i, d in enumerate(texts):
        if len(d) > cfg.max_document_chars:
            return f"document {i} has {len(d)} characters; at most {cfg.max_document_chars} (max_document_chars)"
    return ""


class _BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, by Content-Length and by the bytes read.

    The body is read here (at most ``max_bytes`` of it) and replayed to the app, so a client that
    lies about or omits Content-Length cannot make the server buffer more.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = _error(413, f"request body over {self.max_bytes} bytes (max_body_bytes)")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                await _error(400, "invalid Content-Length header")(scope, receive, send)
                return
            if int(length) > self.max_bytes:
                await too_big(scope, receive, send)
                return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await too_big(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the disconnect, as the server's would

        await self.app(scope, replay, send)


def _import_serve_deps() -> None:
    for package in ("fastapi", "uvicorn", "pydantic"):
        try:
            __import__(package)
        except ImportError as exc:
            raise MissingExtraError(package, "serve") from exc


def create_app(reranker: Reranker, cfg: ServeConfig, model_name: str = "") -> fastapi.FastAPI:
    """The rerank API over an already loaded ``reranker`` (anything with ``score(pairs) -> list[float]``).

    Its lifespan starts and stops the batching worker; run it with uvicorn, or with
    ``fastapi.testclient.TestClient`` used as a context manager.
    """
    _import_serve_deps()
    import contextlib

    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from pydantic import ValidationError

    name = model_name or Path(cfg.model).name or str(cfg.model)
    # reranker.score already batches by batch_size; several of its batches per call amortise the thread hop
    scorer = BatchScorer(reranker.score, wait_s=cfg.batch_wait_ms / 1000, max_pairs=max(256, 4 * getattr(reranker, "batch_size", 64)))
    request_model = protocol.request_model()
    counter = protocol.TokenCounter(getattr(getattr(reranker, "model", None), "tokenizer", None))

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        await scorer.start()
        try:
            yield
        finally:
            await scorer.stop()

    app = FastAPI(title="distilrank rerank API", lifespan=lifespan)
    app.add_middleware(_BodyLimit, max_bytes=cfg.max_body_bytes)

    async def health(request: Any) -> Any:
        return JSONResponse({"status": "ok", "model": name})

    async def rerank(request: Any) -> Any:
        started = time.perf_counter()
        try:
            req = request_model.model_validate_json(await request.body())
            texts = protocol.document_texts(req.documents, req.rank_fields)
        except ValidationError as exc:  # malformed JSON lands here too (type json_invalid)
            return _validation_error(exc)
        except protocol.RequestError as exc:
            return _request_error(exc)
        if reason := _too_large(req, texts, cfg):
            return _error(413, reason)
        try:
            prepared = await asyncio.to_thread(counter.prepare, req.query, texts, req.max_tokens_per_doc)
            scores = await scorer.score([(req.query, d) for d in prepared.texts])
        except Exception as exc:
            return _error(500, f"scoring failed: {type(exc).__name__}: {exc}")
        body = protocol.rerank_response(req, scores, prepared, model=name, scale=cfg.score_scale)
        body["meta"]["seconds"] = round(time.perf_counter() - started, 6)
        return JSONResponse(body)

    # plain Starlette routes: the handlers parse the body themselves (size limits first, then pydantic)
    app.add_route("/health", health, methods=["GET"])
    for path in ROUTES:  # one handler: Jina, vLLM and Infinity post to /rerank or /v1/rerank, Cohere to /v1 or /v2
        app.add_route(path, rerank, methods=["POST"])
    return app


def _check_model_folder(model: str) -> None:
    p = Path(model)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"model: {model} is a file; give the folder of a saved reranker")
    if not p.exists() and not _HUB_ID.match(model):
        raise ConfigError(f"model: no model folder at {model} "
                          "(give a folder written by `distilrank train` or `distilrank export`)")


def run_server(cfg: ServeConfig) -> None:
    """Load ``cfg.model`` once, then serve it with uvicorn until SIGINT/SIGTERM.

    Shutdown is uvicorn's graceful one: in-flight requests finish, then the lifespan stops the
    batching worker after it has scored what was queued.
    """
    _import_serve_deps()
    _check_model_folder(cfg.model)
    # oneDNN caches a compiled kernel per (batch, length) shape, up to 1024 of them; exact-length
    # batches bring many shapes, so a long-running server's memory grew 58% in the load test
    # (benchmarks/load_test.py). Without the cache it stays flat. Set before torch is imported.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")
    import uvicorn

    from distilrank.inference.reranker import Reranker

    reranker = Reranker.load(cfg.model, batch_size=cfg.batch_size, backend=cfg.backend,
                             long_documents=cfg.long_documents, passage_stride=cfg.passage_stride,
                             max_passages=cfg.max_passages)
    app = create_app(reranker, cfg)
    print(f"serving {cfg.model} on http://{cfg.host}:{cfg.port} (POST /rerank, /v1/rerank, /v2/rerank; GET /health); Ctrl+C stops")
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info")
