"""Load test of ``distilrank serve`` on loopback: latency, throughput, 5xx count, memory, bad requests.

Starts ``python -m distilrank.cli serve`` as a subprocess on a free 127.0.0.1 port, waits for
``GET /health``, sends a warm-up, then ``--requests`` ``POST /rerank`` calls from ``--clients``
threads (one keep-alive ``httpx.Client`` each) while sampling the server's resident memory, then
a set of bad requests (malformed JSON, wrong types, empty query, a 10 MB body, too many documents)
that must all get a 4xx without harming the server. The server is always stopped with SIGTERM at
the end and its exit code checked. Prints a markdown summary, writes everything to ``--out``
(JSON) and exits 1 when a check fails (any 5xx or transport error, the server died, a bad request
got no 4xx, memory grew by 10% or more after warm-up, or the server did not exit cleanly).

    python benchmarks/load_test.py --out benchmarks/results/load_test_cpu.json
    python benchmarks/load_test.py --requests 300 --clients 8 --out /tmp/lt_quick.json   # a quick check

The server inherits this process's environment: on CPU, ``ONEDNN_PRIMITIVE_CACHE_CAPACITY=0``
shows whether RSS growth comes from oneDNN caching one primitive per (batch, length) shape.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on the network

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark's helpers
import bench_vs_sentence_transformers as bench  # noqa: E402

MAX_RSS_GROWTH = 0.10  # the bound on resident-memory growth after warm-up


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="JSON file to write the results to")
    p.add_argument("--model", default="", help="saved reranker folder (PyTorch or ONNX); default: the packaged "
                   "MiniLM with a fresh seeded head, built into a temp folder")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "onnx"), help="the server's backend")
    p.add_argument("--requests", type=int, default=10_000, help="measured POST /rerank requests")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (threads, keep-alive)")
    p.add_argument("--docs", type=int, default=10, help="documents per request")
    p.add_argument("--doc-chars", type=int, default=300, help="documents are cut to this many characters")
    p.add_argument("--warmup", type=int, default=None,
                   help="requests sent before measuring, not counted (default: --requests/5, within [50, 200])")
    p.add_argument("--max-seconds", type=float, default=900, help="time bound of warm-up + measured requests")
    p.add_argument("--request-timeout", type=float, default=120, help="client timeout per request (s)")
    p.add_argument("--startup-timeout", type=float, default=300, help="how long to wait for GET /health (s)")
    p.add_argument("--rss-interval", type=float, default=0.5, help="seconds between RSS samples of the server")
    p.add_argument("--max-length", type=int, default=256, help="max_length of the default model")
    p.add_argument("--seed", type=int, default=42, help="seed of the default model's head and of the texts")
    p.add_argument("--serve", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra `distilrank serve` settings, e.g. batch_size=32 batch_wait_ms=5")
    args = p.parse_args(argv)
    if args.warmup is None:
        args.warmup = min(200, max(50, args.requests // 5))
    if min(args.requests, args.clients, args.docs, args.doc_chars) < 1 or args.warmup < 0:
        p.error("--requests, --clients, --docs and --doc-chars must be >= 1 and --warmup >= 0")
    return args


# ---------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``distilrank serve`` in a subprocess; its output goes to ``log``."""

    def __init__(self, model: str, backend: str, extra: list[str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.cmd = [sys.executable, "-m", "distilrank.cli", "serve", f"model={model}", "host=127.0.0.1",
                    f"port={self.port}", f"backend={backend}", *extra]
        with open(log, "wb") as f:  # the child keeps its own handle
            self.proc = subprocess.Popen(self.cmd, stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_healthy(self, timeout: float) -> float:
        """Seconds until ``GET /health`` answered 200; raises when the server died or timed out."""
        import httpx

        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if not self.alive():
                raise RuntimeError(f"the server exited with code {self.proc.returncode} while starting")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return time.monotonic() - start
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"GET /health did not answer within {timeout:.0f}s")

    def rss(self) -> int:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss

    def stop(self, timeout: float = 60) -> dict[str, Any]:
        """SIGTERM, wait for a graceful exit (SIGKILL after ``timeout``); its exit code."""
        was_alive = self.alive()
        if was_alive:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code, killed = self.proc.wait(timeout), False
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code, killed = self.proc.wait(), True
        # uvicorn re-raises the SIGTERM it caught once its graceful shutdown is done: -15 is clean then
        graceful = "Application shutdown complete" in self.log_tail(10)
        return {"alive_before_stop": was_alive, "exit_code": code, "killed": killed,
                "graceful_shutdown": graceful, "clean": not killed and graceful and code in (0, -signal.SIGTERM)}

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------- load


def build_payloads(n_docs: int, doc_chars: int, seed: int, count: int = 512) -> list[bytes]:
    """``count`` distinct request bodies: a demo query with ``n_docs`` demo passages (its own first)."""
    from distilrank.data.demo import build_demo_dataset

    test = build_demo_dataset()["test"]
    rng = random.Random(seed)
    passages = [p.contents[:doc_chars] for p in test.corpus.values()]
    queries = [(q.text, [test.corpus[d].contents[:doc_chars] for d in test.qrels.get(qid, {}) if d in test.corpus])
               for qid, q in test.queries.items()]
    payloads = []
    for i in range(count):
        query, relevant = queries[i % len(queries)]
        docs = relevant[:1] + rng.sample(passages, n_docs - len(relevant[:1]))
        rng.shuffle(docs)
        payloads.append(json.dumps({"query": query, "documents": docs}).encode())
    return payloads


def send_requests(url: str, payloads: list[bytes], n: int, args: argparse.Namespace, deadline: float):
    """``n`` POST /rerank calls from ``args.clients`` threads, stopping at ``deadline`` (monotonic).

    Returns one ``(latency_s, status, problem)`` per request sent; status 0 is a transport error
    and ``problem`` says what was wrong ("" for a good answer).
    """
    import httpx

    records: list[tuple[float, int, str]] = []
    lock, counter = threading.Lock(), iter(range(n))
    headers = {"content-type": "application/json"}

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=args.request_timeout) as client:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                start = time.perf_counter()
                try:
                    r = client.post("/rerank", content=payloads[i % len(payloads)], headers=headers)
                    took, status, problem = time.perf_counter() - start, r.status_code, check_answer(r, args.docs)
                except httpx.HTTPError as exc:
                    took, status, problem = time.perf_counter() - start, 0, f"{type(exc).__name__}: {exc}"
                with lock:
                    records.append((took, status, problem))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records


def check_answer(r: Any, n_docs: int) -> str:
    """What is wrong with a /rerank answer ("" when nothing): a 200 must rank every document once."""
    if r.status_code != 200:
        return f"status {r.status_code}: {r.text[:200]}"
    indices = sorted(item["index"] for item in r.json()["results"])
    return "" if indices == list(range(n_docs)) else f"results rank indices {indices}"


class RssSampler(threading.Thread):
    """Samples the server's RSS every ``interval`` seconds until ``stop()``."""

    def __init__(self, server: Server, interval: float) -> None:
        super().__init__(daemon=True)
        self.server, self.interval = server, interval
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()
        self._t0 = time.monotonic()

    def run(self) -> None:
        while not self._stop_event.is_set():
            if self.server.alive():
                self.samples.append((round(time.monotonic() - self._t0, 2), self.server.rss()))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 < q <= 100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil
    return sorted_values[int(rank) - 1]


def trend_pct(values: list[int]) -> float:
    """Growth (%) of the median of the last quarter of ``values`` over the first quarter's: a leak
    shows as a steady rise, while single samples also catch transient activation peaks."""
    import statistics

    if len(values) < 4:
        return float("nan")
    q = len(values) // 4
    first, last = statistics.median(values[:q]), statistics.median(values[-q:])
    return 100 * (last - first) / first


def summarize(records: list[tuple[float, int, str]], wall: float, n_docs: int) -> dict[str, Any]:
    latencies = sorted(r[0] * 1000 for r in records)
    classes = collections.Counter("error" if s == 0 else f"{s // 100}xx" for _, s, _ in records)
    good = sum(1 for _, s, problem in records if s == 200 and not problem)
    problems = collections.Counter(p for _, _, p in records if p)
    return {"sent": len(records), "good": good, "wall_s": wall,
            "status_classes": dict(sorted(classes.items())),
            "status_codes": dict(sorted(collections.Counter(str(s) for _, s, _ in records).items())),
            "problems": dict(problems.most_common(10)),
            "latency_ms": {"p50": percentile(latencies, 50), "p90": percentile(latencies, 90),
                           "p99": percentile(latencies, 99), "max": latencies[-1] if latencies else float("nan"),
                           "mean": sum(latencies) / len(latencies) if latencies else float("nan")},
            "requests_per_s": len(records) / wall if wall else 0.0,
            "pairs_per_s": good * n_docs / wall if wall else 0.0}


# ---------------------------------------------------------------------------- bad requests


def bad_requests(url: str, max_documents: int) -> list[dict[str, Any]]:
    """Send each malformed request once; status of each (0: transport error) and /health after all."""
    import httpx

    big = 10_000_000

    def chunked_10mb():  # no Content-Length: the server must stop reading at its own limit
        for _ in range(big // 1_000_000):
            yield b"x" * 1_000_000

    cases: list[tuple[str, dict[str, Any]]] = [
        ("malformed JSON", {"content": b'{"query": "a", "documents": ["b",'}),
        ("not JSON at all", {"content": b"query=a&documents=b"}),
        ("documents not a list", {"json": {"query": "a", "documents": "b"}}),
        ("document not a string", {"json": {"query": "a", "documents": ["b", 3]}}),
        ("query a number", {"json": {"query": 5, "documents": ["b"]}}),
        ("query missing", {"json": {"documents": ["b"]}}),
        ("empty query", {"json": {"query": "", "documents": ["b"]}}),
        ("blank query", {"json": {"query": "   ", "documents": ["b"]}}),
        ("no documents", {"json": {"query": "a", "documents": []}}),
        ("top_n zero", {"json": {"query": "a", "documents": ["b"], "top_n": 0}}),
        ("JSON array body", {"json": ["a", "b"]}),
        ("10 MB body", {"content": json.dumps({"query": "a", "documents": ["x" * big]}).encode()}),
        ("10 MB chunked body", {"content": chunked_10mb()}),
        (f"too many documents ({max_documents + 1})",
         {"json": {"query": "a", "documents": ["b"] * (max_documents + 1)}}),
    ]
    results = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for name, kwargs in cases:
            try:
                r = client.post("/rerank", headers={"content-type": "application/json"}, **kwargs)
                status, body = r.status_code, r.text[:200]
            except httpx.HTTPError as exc:
                status, body = 0, f"{type(exc).__name__}: {exc}"
            results.append({"case": name, "status": status, "answer": body})
        try:
            health = client.get("/health").status_code
        except httpx.HTTPError:
            health = 0
    results.append({"case": "GET /health afterwards", "status": health, "answer": ""})
    return results


# ---------------------------------------------------------------------------- report


def checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    load, rss, stop = results.get("load", {}), results.get("rss", {}), results.get("server_stop", {})
    classes = load.get("status_classes", {})
    bad = [b for b in results.get("bad_requests", []) if b["case"] != "GET /health afterwards"]
    health = [b["status"] for b in results.get("bad_requests", []) if b["case"] == "GET /health afterwards"]
    out = [("zero 5xx", classes.get("5xx", 0) == 0, f"{classes.get('5xx', 0)} 5xx"),
           ("zero transport errors", classes.get("error", 0) == 0, f"{classes.get('error', 0)} errors"),
           ("every answer 200 and well formed", load.get("good", -1) == load.get("sent"),
            f"{load.get('good', 0)}/{load.get('sent', 0)}"),
           ("all requests sent in time", not results.get("stopped_early", True),
            f"{load.get('sent', 0)}/{results['settings']['requests']}"),
           (f"RSS growth < {MAX_RSS_GROWTH:.0%} after warm-up", rss.get("growth_pct", 1e9) < 100 * MAX_RSS_GROWTH,
            f"{rss.get('growth_pct', float('nan')):+.1f}%"),
           ("bad requests all 4xx", bool(bad) and all(400 <= b["status"] < 500 for b in bad),
            ", ".join(str(b["status"]) for b in bad)),
           ("/health answers after bad requests", health == [200], str(health)),
           ("server alive until SIGTERM", stop.get("alive_before_stop", False), ""),
           ("server exited cleanly on SIGTERM", stop.get("clean", False),
            f"exit code {stop.get('exit_code')}, graceful shutdown logged: {stop.get('graceful_shutdown')}")]
    return [{"check": c, "pass": bool(ok), "detail": d} for c, ok, d in out]


def markdown(results: dict[str, Any]) -> str:
    s, load, rss = results["settings"], results.get("load", {}), results.get("rss", {})
    lines = [f"## load test: {s['requests']} requests x {s['docs']} docs, {s['clients']} clients, "
             f"model {results.get('model', '?')}", ""]
    if load:
        lat = load["latency_ms"]
        lines += ["| measure | value |", "|---|---:|",
                  f"| requests sent / good | {load['sent']} / {load['good']} |",
                  f"| status classes | {', '.join(f'{k}: {v}' for k, v in load['status_classes'].items())} |",
                  f"| latency p50 / p90 / p99 / max (ms) | {lat['p50']:.0f} / {lat['p90']:.0f} / "
                  f"{lat['p99']:.0f} / {lat['max']:.0f} |",
                  f"| throughput | {load['requests_per_s']:.1f} req/s, {load['pairs_per_s']:.0f} pairs/s |",
                  f"| wall time | {load['wall_s']:.1f} s |"]
    if rss:
        mib = 2 ** 20
        lines.extend([f"| server RSS after warm-up / max / end (MiB) | {rss['after_warmup'] / mib:.0f} / "
                     f"{rss['max'] / mib:.0f} / {rss['end'] / mib:.0f} ({rss['growth_pct']:+.1f}%) |",
                     f"| server RSS median, last vs first quarter of the run | {rss['trend_pct']:+.1f}% |"])
    if results.get("stopped_early"):
        lines += ["", f"**stopped early**: the {s['max_seconds']:.0f}s bound (--max-seconds) was reached"]
    if results.get("bad_requests"):
        lines += ["", "| bad request | status |", "|---|---:|"]
        lines += [f"| {b['case']} | {b['status']} |" for b in results["bad_requests"]]
    lines += ["", "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {c['check']} | {'pass' if c['pass'] else '**FAIL**'} | {c['detail']} |" for c in results["checks"]]
    if results.get("error"):
        lines += ["", f"**error**: {results['error']}"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main


def serve_setting(extra: list[str], key: str, default: int) -> int:
    values = [kv.split("=", 1)[1] for kv in extra if kv.startswith(key + "=")]
    return int(values[-1]) if values else default


def load_phase(server: Server, payloads: list[bytes], args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Warm-up, then the measured requests with RSS sampling; fills results["load"] and ["rss"]."""
    deadline = time.monotonic() + args.max_seconds
    print(f"warm-up: {args.warmup} requests", flush=True)
    warm = send_requests(server.url, payloads, args.warmup, args, deadline)
    results["warmup"] = summarize(warm, 1.0, args.docs)["status_classes"]
    rss_after_warmup = server.rss()
    sampler = RssSampler(server, args.rss_interval)
    sampler.start()
    print(f"measuring: {args.requests} requests from {args.clients} clients", flush=True)
    start = time.monotonic()
    records = send_requests(server.url, payloads, args.requests, args, deadline)
    wall = time.monotonic() - start
    sampler.stop()
    results["stopped_early"] = len(warm) + len(records) < args.warmup + args.requests
    results["load"] = summarize(records, wall, args.docs)
    if not server.alive():
        raise RuntimeError(f"the server died during the load (exit code {server.proc.returncode})")
    end = server.rss()
    peak = max([end, *(r for _, r in sampler.samples)])
    results["rss"] = {"after_warmup": rss_after_warmup, "max": peak, "end": end,
                      "growth_pct": 100 * (end - rss_after_warmup) / rss_after_warmup,
                      "max_growth_pct": 100 * (peak - rss_after_warmup) / rss_after_warmup,
                      "trend_pct": trend_pct([r for _, r in sampler.samples]), "samples": sampler.samples}


def run(args: argparse.Namespace, work: Path, results: dict[str, Any]) -> None:
    from distilrank.config import ServeConfig

    model = args.model
    if not model:
        print("building the default model (packaged MiniLM, fresh seeded head)", flush=True)
        model = str(bench.make_start_model(work / "model", args.seed, args.max_length))
    results["model"] = args.model or f"packaged MiniLM, fresh head (seed {args.seed})"
    payloads = build_payloads(args.docs, args.doc_chars, args.seed)
    server = Server(model, args.backend, args.serve, work / "server.log")
    results["server_command"] = " ".join(server.cmd)
    try:
        results["startup_s"] = server.wait_healthy(args.startup_timeout)
        print(f"server up on {server.url} after {results['startup_s']:.1f}s", flush=True)
        load_phase(server, payloads, args, results)
        max_documents = serve_setting(args.serve, "max_documents", ServeConfig.__dataclass_fields__[
            "max_documents"].default)
        print("bad requests", flush=True)
        results["bad_requests"] = bad_requests(server.url, max_documents)
    except (RuntimeError, OSError) as exc:
        results["error"] = str(exc)
    finally:
        results["server_stop"] = server.stop()
        results["server_log_tail"] = server.log_tail()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench.quiet_transformers()
    results = bench.results_header(args, argv)
    with tempfile.TemporaryDirectory(prefix="load-test-") as tmp:
        run(args, Path(tmp), results)
    results["load_avg_end"] = os.getloadavg()
    results["checks"] = checks(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(markdown(results))
    if results.get("error"):
        print("\nserver log (last lines):\n" + results["server_log_tail"])
    print(f"\nwrote {args.out}")
    return 0 if all(c["pass"] for c in results["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
