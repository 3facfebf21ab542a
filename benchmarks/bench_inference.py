"""Inference speed: PyTorch fp32, ONNX fp32 and ONNX int8 vs sentence-transformers, on one CPU.

One model (``--model``, or the packaged MiniLM with a fresh seeded one-logit head, as in
``bench_vs_sentence_transformers.py``) is exported to ONNX fp32 and int8 and scored by four backends:
``Reranker.load(model, backend="torch")``, ``Reranker.load(fp32 export)``, ``Reranker.load(int8 export)``
and ``sentence_transformers.CrossEncoder.predict``. For TREC DL 2019 (BM25 top-100) and the demo set
(BM25 top-100 of the test queries) it measures:

- throughput: every pair in one call per backend, repetitions interleaved with the order rotated,
  median pairs/s;
- latency: each query's candidates (up to 100) as one request, per backend; p50 and p99 (ms);
- quality: nDCG@10 of each backend's scores and max |score - PyTorch fp32 score|;
- the machine's fp32 matrix-multiply throughput (``torch.matmul`` with the same thread count, and
  onnxruntime's MatMul) and the GFLOP/s the model reaches on the real (unpadded) tokens, for
  PyTorch and ONNX fp32, as a share of each.

    python benchmarks/bench_inference.py --out benchmarks/results/inference_cpu.json
    python benchmarks/bench_inference.py --quick --out /tmp/bi_quick.json   # smoke run, ~2 min

The full run scores the 4,300 TREC pairs and the first 50 demo queries (``--demo-queries``) five times
per backend (``--repeats`` 3, one latency pass, one warm-up of 8 pairs): about 20 minutes on 2 quiet cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_vs_sentence_transformers import (  # noqa: E402
    DEFAULT_DATA,
    TREC,
    make_start_model,
    quiet_transformers,
    results_header,
    timed,
)

BACKENDS = ("torch fp32", "onnx fp32", "onnx int8", "sentence-transformers")
DEFAULT_MAX_LENGTH = {"trec-dl-2019": 256, "demo": 96}
TOP_K = 100
DEMO_TOP_K = 20  # the demo's evaluation protocol (distilrank demo / eval data=demo top_k=20)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=None,
                   help="a trained cross-encoder folder (default: packaged MiniLM with a fresh seeded head, untrained)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"folder holding {TREC}/")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write the results to")
    p.add_argument("--repeats", type=int, default=3, help="interleaved throughput repetitions per backend")
    p.add_argument("--batch-size", type=int, default=32, help="scoring batch size (pairs)")
    p.add_argument("--max-length", type=int, default=0,
                   help="tokens per pair; 0: 256 for TREC DL, 96 for the demo")
    p.add_argument("--queries", type=int, default=0, help="use only the first N TREC DL queries (0: all 43)")
    p.add_argument("--demo-queries", type=int, default=50,
                   help="use only the first N demo test queries (0: all 250, about 25,000 pairs: hours on 2 cores)")
    p.add_argument("--skip-demo", action="store_true", help="TREC DL 2019 only")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 queries per dataset, 1 repeat")
    p.add_argument("--matmul-size", type=int, default=4096, help="side of the square fp32 matrices timed")
    p.add_argument("--seed", type=int, default=42, help="seed of the fresh head when --model is not given")
    args = p.parse_args(argv)
    if args.model is not None and not (args.model / "config.json").is_file():
        p.error(f"--model {args.model}: no config.json there; pass a saved cross-encoder folder")
    if args.quick:
        args.queries = args.queries or 2
        args.demo_queries = 2
        args.repeats = 1
    return args


# ---------------------------------------------------------------------------- data


def load_trec(data: Path):
    from distilrank.data.readers import read_trec_folder

    if not (data / TREC).exists():
        sys.exit(f"benchmark data not found: {data / TREC}\npass --data FOLDER holding {TREC}/ "
                 f"(default: {DEFAULT_DATA})")
    return read_trec_folder(data / TREC)


def load_demo(work: Path):
    """The demo test split (built from this Python's stdlib docstrings) and its BM25 top-100."""
    import bm25s  # noqa: F401  (it sets its logger to DEBUG on import; quieten it after)

    from distilrank.data.demo import build_demo_dataset, write_beir
    from distilrank.data.readers import read_beir
    from distilrank.evaluation.run import first_stage_run

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    folder = write_beir(build_demo_dataset(), work / "demo")
    test = read_beir(folder, "test")
    return test, first_stage_run(test, None, TOP_K)


def cut_run(run: dict, queries: int) -> dict:
    """The first ``queries`` queries (0: all) that have candidates, each cut to the top-100."""
    kept = {q: docs[:TOP_K] for q, docs in run.items() if docs}
    return dict(list(kept.items())[:queries]) if queries else kept


def run_pairs(dataset, run: dict) -> list[list[tuple[str, str]]]:
    """Per query, its (query, document) pairs in run order: the order ``evaluate_reranking`` asks for."""
    return [[(dataset.queries[q].text, dataset.corpus[d].contents) for d, _ in docs] for q, docs in run.items()]


# ---------------------------------------------------------------------------- scorers


def export_models(model_dir: Path, work: Path) -> dict[str, Path]:
    from distilrank.inference.export import export_onnx

    out = {}
    for name, quantize in (("fp32", "none"), ("int8", "int8")):
        start = time.perf_counter()
        out[name] = export_onnx(model_dir, work / f"onnx-{name}", quantize=quantize)
        print(f"exported ONNX {name} in {time.perf_counter() - start:.1f}s", flush=True)
    return out


def load_scorers(model_dir: Path, onnx: dict[str, Path], args: argparse.Namespace, max_length: int):
    """Backend name -> a function scoring a list of pairs (list of floats, input order)."""
    import torch
    from sentence_transformers import CrossEncoder as STCrossEncoder

    from distilrank.inference.reranker import Reranker

    bs = args.batch_size
    torch_rr = Reranker.load(model_dir, backend="torch", device="cpu", batch_size=bs, max_length=max_length)
    fp32 = Reranker.load(onnx["fp32"], batch_size=bs, max_length=max_length)
    int8 = Reranker.load(onnx["int8"], batch_size=bs, max_length=max_length)
    st = STCrossEncoder(str(model_dir), device="cpu", max_length=max_length)
    scorers: dict[str, Callable[[list], list[float]]] = {
        "torch fp32": torch_rr.score, "onnx fp32": fp32.score, "onnx int8": int8.score,
        # raw logits like the others: ST would apply a sigmoid to some checkpoints (same ranking, other scale)
        "sentence-transformers": lambda p: st.predict(p, batch_size=bs, show_progress_bar=False,
                                                      activation_fn=torch.nn.Identity()).tolist(),
    }
    return scorers, torch_rr.model


# ---------------------------------------------------------------------------- measurements


def rotated(systems: dict[str, Callable[[], tuple[float, Any]]], repeats: int):
    """Run each (seconds, output) system ``repeats`` times; repetition r starts with system r (mod n).

    Returns the seconds of every run and each system's first output.
    """
    names = list(systems)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    outputs: dict[str, Any] = {}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            took, output = systems[name]()
            seconds[name].append(took)
            outputs.setdefault(name, output)
            print(f"  {name} run {r + 1}: {took:.1f}s", flush=True)
    return seconds, outputs


def throughput(scorers: dict[str, Callable], pairs: list, repeats: int) -> tuple[dict[str, Any], dict[str, list]]:
    """All pairs in one call per backend, repetitions interleaved (``rotated``); median pairs/s."""
    for score in scorers.values():
        score(pairs[:8])  # warm-up: first-call allocations, lazy imports, onnxruntime arena
    seconds, outputs = rotated({n: timed(lambda s=s: s(pairs)) for n, s in scorers.items()}, repeats)
    pps = {n: len(pairs) / statistics.median(v) for n, v in seconds.items()}
    return {"pairs": len(pairs), "seconds": seconds, "pairs_per_s": pps}, outputs


def latency(scorers: dict[str, Callable], per_query: list[list]) -> dict[str, dict[str, float]]:
    """Each query's candidates as one request; the backend order rotates from query to query."""
    import numpy as np

    names = list(scorers)
    wall: dict[str, list[float]] = {n: [] for n in names}
    for score in scorers.values():
        score(per_query[0])  # warm-up at request size: the first call at a new shape is slower
    for i, pairs in enumerate(per_query):
        for n in names[i % len(names):] + names[: i % len(names)]:
            start = time.perf_counter()
            scorers[n](pairs)
            wall[n].append(time.perf_counter() - start)
    return {n: {"p50_ms": float(np.percentile(w, 50) * 1e3), "p99_ms": float(np.percentile(w, 99) * 1e3),
                "requests": len(w), "mean_pairs": float(np.mean([len(p) for p in per_query]))}
            for n, w in wall.items()}


def quality(dataset, run: dict, pairs: list, outputs: dict[str, list], relevance_level: int) -> dict[str, Any]:
    """nDCG@10 of each backend's (already measured) scores, and max |diff| vs PyTorch fp32."""
    import numpy as np

    from distilrank.evaluation.ranking import evaluate_reranking

    def replay(scores: list[float]) -> Callable[[list], list[float]]:
        def scorer(asked: list) -> list[float]:
            assert list(asked) == pairs, "evaluate_reranking asked for other pairs than were benchmarked"
            return scores
        return scorer

    ref = np.asarray(outputs["torch fp32"])
    first = evaluate_reranking(dataset, run, None, TOP_K, relevance_level=relevance_level).first_stage
    out: dict[str, Any] = {"BM25 nDCG@10": first["nDCG@10"]}
    for name, scores in outputs.items():
        report = evaluate_reranking(dataset, run, replay(scores), TOP_K, relevance_level=relevance_level)
        out[name] = {"nDCG@10": report.reranked["nDCG@10"],
                     "max_abs_diff": float(np.abs(np.asarray(scores) - ref).max())}
    return out


def best_gflops(run: Callable[[], Any], size: int, runs: int) -> float:
    """Best of ``runs`` calls of a size x size matrix product (2 n^3 FLOPs), after one warm-up, in GFLOP/s."""
    run()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def matmul_gflops(size: int, runs: int = 5) -> dict[str, float]:
    """fp32 matrix-multiply throughput of ``torch.matmul`` (its thread count) and of onnxruntime's MatMul.

    onnxruntime's own kernels (MLAS) can outrun torch's BLAS on some CPUs, so the ONNX model is
    also compared with a MatMul run by onnxruntime. Large matrices (4096) average out a busy CPU
    better than short products.
    """
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    out = {"torch": best_gflops(lambda: torch.matmul(a, b), size, runs)}
    out["onnxruntime"] = best_gflops(ort_matmul(size), size, runs)
    return out


def ort_matmul(size: int) -> Callable[[], Any]:
    """A call of onnxruntime's fp32 MatMul on two random ``size`` x ``size`` matrices (2 n^3 FLOPs)."""
    import numpy as np
    from onnx import TensorProto, helper

    from distilrank.inference.onnx_backend import import_onnxruntime

    ort = import_onnxruntime()
    rng = np.random.default_rng(0)
    spec = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in "ABC"]
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["C"])], "matmul", spec[:2], spec[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by older onnxruntime builds too
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {n: rng.standard_normal((size, size), dtype=np.float32) for n in "AB"}
    return lambda: session.run(None, feeds)


def model_flops(config, tokenizer, pairs: list, max_length: int) -> dict[str, float]:
    """FLOPs of the encoder on the real tokens: per token per layer 2(4H^2 + 2HI) + 4LH (L = row length).

    Each pair is tokenized alone (truncated to ``max_length``, no padding), so padding in the
    measured batches counts as overhead, not as work.
    """
    h, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    enc = tokenizer([q for q, _ in pairs], [d for _, d in pairs], truncation=True, max_length=max_length)
    lengths = [len(ids) for ids in enc["input_ids"]]
    flops = sum(layers * n * (2 * (4 * h * h + 2 * h * inter) + 4 * n * h) for n in lengths)
    return {"flops": float(flops), "tokens": float(sum(lengths)), "mean_length": sum(lengths) / len(lengths)}


# ---------------------------------------------------------------------------- driver


def full_quality(dataset, run: dict, scorers: dict[str, Callable], top_k: int) -> dict[str, Any]:
    """nDCG@10 of every query's first-stage top-``top_k`` reranked by each non-reference backend.

    The demo's own protocol (``distilrank eval data=demo top_k=20``: all 250 test queries). The
    speed runs use a sample of queries at 100 candidates; a sample of 25 queries makes each query
    worth 0.04 of the mean nDCG@10, too coarse to test a 0.01 bound.
    """
    from distilrank.evaluation.ranking import evaluate_reranking

    out: dict[str, Any] = {"queries": len(run), "top_k": top_k}
    for name in ("torch fp32", "onnx fp32", "onnx int8"):
        report = evaluate_reranking(dataset, run, scorers[name], top_k, relevance_level=1)
        out.setdefault("BM25 nDCG@10", report.first_stage["nDCG@10"])
        out[name] = {"nDCG@10": report.reranked["nDCG@10"], "MRR@10": report.reranked["MRR@10"]}
        print(f"  full demo test set, top-{top_k}: {name} nDCG@10 {out[name]['nDCG@10']:.4f}", flush=True)
    return out


def kernel_profile(onnx_dir: Path, pairs: list, batch_size: int, max_length: int) -> dict[str, Any]:
    """onnxruntime's own profile of the fp32 export on ``pairs``: kernel time per operator type, and
    the GFLOP/s of the weight MatMuls alone (on the padded shapes the kernels saw).

    Shows where the time outside matrix products goes (GELU, LayerNorm, softmax, bias and
    residual adds: memory-bound work that no BLAS makes faster).
    """
    import collections
    import math

    from distilrank.inference.onnx_backend import OnnxCrossEncoder, import_onnxruntime

    ort = import_onnxruntime()
    with tempfile.TemporaryDirectory(prefix="ort-profile-") as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        options.log_severity_level = 3
        ce = OnnxCrossEncoder.from_pretrained(onnx_dir, max_length=max_length)
        ce.session = ort.InferenceSession(str(onnx_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
        ce.score(pairs, batch_size=batch_size)
        events = json.loads(Path(ce.session.end_profiling()).read_text(encoding="utf-8"))
    by_op: collections.Counter = collections.Counter()
    matmul_us, matmul_flops = 0, 0
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        op = e["args"]["op_name"]
        by_op[op] += e["dur"]
        inputs = e["args"].get("input_type_shape", [])
        if op == "MatMul" and len(inputs) == 1:  # a single activation input: the other is a weight
            k = list(inputs[0].values())[0][-1]
            matmul_us += e["dur"]
            matmul_flops += 2 * k * math.prod(list(e["args"]["output_type_shape"][0].values())[0])
    total = sum(by_op.values())
    return {"pairs": len(pairs), "kernel_ms": total / 1e3,
            "share": {op: us / total for op, us in by_op.most_common()},
            "weight_matmul_gflops": matmul_flops / matmul_us / 1e3 if matmul_us else None}


def bench_dataset(name: str, dataset, run: dict, model_dir: Path, onnx: dict[str, Path],
                  args: argparse.Namespace, relevance_level: int) -> dict[str, Any]:
    max_length = args.max_length or DEFAULT_MAX_LENGTH[name]
    whole_run = run
    run = cut_run(run, args.demo_queries if name == "demo" else args.queries)
    per_query = run_pairs(dataset, run)
    pairs = [p for qp in per_query for p in qp]
    print(f"\n{name}: {len(run)} queries, {len(pairs)} pairs, batch_size {args.batch_size}, "
          f"max_length {max_length}", flush=True)
    scorers, torch_model = load_scorers(model_dir, onnx, args, max_length)
    speed, outputs = throughput(scorers, pairs, args.repeats)
    work = model_flops(torch_model.model.config, torch_model.tokenizer, pairs, max_length)
    speed["gflops"] = {n: work["flops"] / statistics.median(speed["seconds"][n]) / 1e9
                       for n in ("torch fp32", "onnx fp32")}
    result = {"queries": len(run), "max_length": max_length, "relevance_level": relevance_level,
              "throughput": speed, "work": work, "latency": latency(scorers, per_query),
              "quality": quality(dataset, run, pairs, outputs, relevance_level),
              "onnx_fp32_profile": kernel_profile(onnx["fp32"], pairs[:400], args.batch_size, max_length)}
    if name == "demo" and not args.quick:
        result["full_quality"] = full_quality(dataset, whole_run, scorers, DEMO_TOP_K)
    return result


def markdown(name: str, r: dict[str, Any], matmul: dict[str, float]) -> str:
    t, lat, q = r["throughput"], r["latency"], r["quality"]
    st = t["pairs_per_s"]["sentence-transformers"]
    lines = [f"### {name}: {r['queries']} queries, {t['pairs']} pairs, max_length {r['max_length']} "
             f"(BM25 nDCG@10 {q['BM25 nDCG@10']:.4f})", "",
             "| backend | pairs/s | vs ST | p50 ms | p99 ms | nDCG@10 | max abs diff |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for b in BACKENDS:
        pps = t["pairs_per_s"][b]
        lines.append(f"| {b} | {pps:.1f} | {pps / st:.2f}x | {lat[b]['p50_ms']:.1f} | {lat[b]['p99_ms']:.1f} | "
                     f"{q[b]['nDCG@10']:.4f} | {q[b]['max_abs_diff']:.1e} |")
    gap = abs(q["onnx int8"]["nDCG@10"] - q["onnx fp32"]["nDCG@10"])
    lines += ["", f"targets: int8 {t['pairs_per_s']['onnx int8'] / st:.2f}x sentence-transformers (>= 3x), "
              f"|nDCG@10 int8 - fp32| = {gap:.4f} (<= 0.01); fp32 GFLOP/s share of matmul below (>= 80%)"]
    lines += [f"{b}: {g:.1f} GFLOP/s on the real tokens = {g / matmul['torch']:.0%} of torch.matmul, "
              f"{g / matmul['onnxruntime']:.0%} of onnxruntime MatMul" for b, g in t["gflops"].items()]
    prof = r["onnx_fp32_profile"]
    top = ", ".join(f"{op} {share:.1%}" for op, share in list(prof["share"].items())[:8])
    lines.append(f"onnx fp32 kernel time on {prof['pairs']} pairs: {top}; weight MatMuls alone "
                 f"{prof['weight_matmul_gflops']:.1f} GFLOP/s = {prof['weight_matmul_gflops'] / matmul['onnxruntime']:.0%} "
                 "of onnxruntime MatMul")
    if "full_quality" in r:
        f = r["full_quality"]
        lines.append(f"all {f['queries']} test queries, top-{f['top_k']} (BM25 {f['BM25 nDCG@10']:.4f}): "
                     + ", ".join(f"{b} {f[b]['nDCG@10']:.4f}" for b in ("torch fp32", "onnx fp32", "onnx int8"))
                     + f"; |int8 - fp32| = {abs(f['onnx int8']['nDCG@10'] - f['onnx fp32']['nDCG@10']):.4f}")
    return "\n".join(lines)


def bench_all(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, float]:
    """Fill ``results`` with the model, datasets and matmul figures; returns the best matmul GFLOP/s.

    The matmul is timed before the first dataset and after every one, the best kept: a busy moment
    in one measurement would otherwise flatter the model's share.
    """
    import torch

    trec = load_trec(args.data)
    runs = 2 if args.quick else 5
    samples = [matmul_gflops(args.matmul_size, runs)]
    print(f"matmul fp32 {args.matmul_size}x{args.matmul_size}, torch threads {torch.get_num_threads()}: "
          + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in samples[0].items()), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        work = Path(tmp)
        untrained = args.model is None
        model_dir = make_start_model(work / "start", args.seed, 256) if untrained else args.model
        results["model"] = {"path": "packaged MiniLM, fresh head (untrained)" if untrained else str(model_dir),
                            "untrained": untrained}
        onnx = export_models(model_dir, work)
        results["datasets"] = {"trec-dl-2019": bench_dataset("trec-dl-2019", *trec, model_dir, onnx, args, 2)}
        samples.append(matmul_gflops(args.matmul_size, runs))
        if not args.skip_demo:
            results["datasets"]["demo"] = bench_dataset("demo", *load_demo(work), model_dir, onnx, args, 1)
            samples.append(matmul_gflops(args.matmul_size, runs))
    matmul = {k: max(m[k] for m in samples) for k in samples[0]}
    results["matmul"] = {"size": args.matmul_size, "torch_threads": torch.get_num_threads(), "gflops": matmul,
                         "samples": samples}
    for r in results["datasets"].values():
        r["throughput"]["share_of_matmul"] = {b: {k: g / m for k, m in matmul.items()}
                                              for b, g in r["throughput"]["gflops"].items()}
    return matmul


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet_transformers()
    results = results_header(args, argv)
    matmul = bench_all(args, results)
    results["load_avg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print()
    if results["model"]["untrained"]:
        print("NOTE: no --model given: an untrained model (packaged MiniLM, fresh seeded head); "
              "nDCG@10 is that of an untrained reranker, speed is representative.\n")
    for name, r in results["datasets"].items():
        print(markdown(name, r, matmul) + "\n")
    print(f"matmul fp32 {args.matmul_size}x{args.matmul_size} (best of {len(results['matmul']['samples'])}): "
          + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in matmul.items())
          + f"; load average start {results['load_avg_start'][0]:.2f}, end {results['load_avg_end'][0]:.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
