"""ONNX fp32 reranking throughput as a share of the machine's matrix-multiply throughput, measured in pairs.

``bench_inference.py`` divides the model's median GFLOP/s over a 20-minute run by the best 4096 x 4096
MatMul burst seen in that run. On this project's machine (a shared 2-core VM) the MatMul itself moves
by 15-30% from one minute to the next, so that ratio mixes the model's efficiency with the machine's
moment. Here every timed pass of the model is bracketed by onnxruntime's MatMul run *sustained* for
about as long (``--matmul-seconds``), right before and right after it, and each round gives its own
ratio: model GFLOP/s / mean(MatMul GFLOP/s before, after). Reported per dataset:

- ``paired``: the median of the per-round ratios (the model against the machine at that moment);
- ``strict``: the median model GFLOP/s against the best sustained MatMul GFLOP/s of the dataset's
  rounds (every slow moment counts against the model);
- ``vs burst``: the median model GFLOP/s against the best single 4096 x 4096 product of the whole run
  (best of 5, timed before each dataset and at the end: the ``bench_inference.py`` protocol).

The model work is counted on the real (unpadded) tokens, as ``bench_inference.model_flops``; the
timed pass is ``Reranker.load(<fp32 export>).score`` on all pairs at the default CPU batch size,
tokenization included.

    python benchmarks/bench_matmul_share.py --model runs/demo/train/model --out benchmarks/results/matmul_share.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_inference import (  # noqa: E402
    DEFAULT_MAX_LENGTH,
    best_gflops,
    cut_run,
    load_demo,
    load_trec,
    model_flops,
    ort_matmul,
    run_pairs,
)
from bench_vs_sentence_transformers import DEFAULT_DATA, quiet_transformers, results_header  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="a trained cross-encoder folder (exported here)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding trec-dl-2019/")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write the results to")
    p.add_argument("--rounds", type=int, default=5, help="timed model passes per dataset, each bracketed by MatMul")
    p.add_argument("--matmul-size", type=int, default=4096, help="side of the square fp32 matrices")
    p.add_argument("--matmul-seconds", type=float, default=8.0, help="how long each sustained MatMul runs")
    p.add_argument("--queries", type=int, default=0, help="TREC DL queries (0: all 43)")
    p.add_argument("--demo-queries", type=int, default=25, help="demo test queries (top-100 each)")
    p.add_argument("--batch-size", type=int, default=0, help="scoring batch (0: the CPU default)")
    args = p.parse_args(argv)
    if not (args.model / "config.json").is_file():
        p.error(f"--model {args.model}: no config.json there; pass a saved cross-encoder folder")
    if args.rounds < 1 or args.matmul_seconds <= 0:
        p.error("--rounds must be >= 1 and --matmul-seconds > 0")
    return args


def sustained_gflops(run: Callable[[], Any], size: int, seconds: float) -> float:
    """GFLOP/s of back-to-back ``size`` x ``size`` products for at least ``seconds`` (total work / total time)."""
    calls, start = 0, time.perf_counter()
    while True:
        run()
        calls += 1
        took = time.perf_counter() - start
        if took >= seconds:
            return calls * 2 * size**3 / took / 1e9


def paired_rounds(score: Callable[[list], Any], pairs: list, flops: float, matmul: Callable[[], Any],
                  args: argparse.Namespace) -> list[dict[str, float]]:
    """``args.rounds`` x (sustained MatMul, one timed pass over ``pairs``, sustained MatMul)."""
    rounds = []
    after = sustained_gflops(matmul, args.matmul_size, args.matmul_seconds)
    for r in range(args.rounds):
        before = after
        start = time.perf_counter()
        score(pairs)
        seconds = time.perf_counter() - start
        after = sustained_gflops(matmul, args.matmul_size, args.matmul_seconds)
        model = flops / seconds / 1e9
        rounds.append({"matmul_before": before, "model": model, "matmul_after": after, "seconds": seconds,
                       "ratio": model / ((before + after) / 2)})
        print(f"  round {r + 1}: matmul {before:.1f} | model {model:.1f} ({seconds:.1f}s) | matmul {after:.1f} "
              f"GFLOP/s -> {rounds[-1]['ratio']:.1%}", flush=True)
    return rounds


def summary(rounds: list[dict[str, float]]) -> dict[str, float]:
    best = max(max(r["matmul_before"], r["matmul_after"]) for r in rounds)
    model = statistics.median(r["model"] for r in rounds)
    return {"paired": statistics.median(r["ratio"] for r in rounds), "model_median": model,
            "matmul_best": best, "strict": model / best,
            "matmul_min": min(min(r["matmul_before"], r["matmul_after"]) for r in rounds)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet_transformers()
    from transformers import AutoConfig

    from distilrank.inference.export import export_onnx
    from distilrank.inference.reranker import Reranker

    results = results_header(args, argv)
    matmul = ort_matmul(args.matmul_size)
    with tempfile.TemporaryDirectory(prefix="bench-matmul-share-") as tmp:
        work = Path(tmp)
        onnx = export_onnx(args.model, work / "onnx-fp32", quantize="none")
        datasets = {"trec-dl-2019": (*load_trec(args.data), args.queries), "demo": (*load_demo(work), args.demo_queries)}
        results["datasets"], bursts = {}, []
        for name, (dataset, run, queries) in datasets.items():
            bursts.append(best_gflops(matmul, args.matmul_size, 5))
            max_length = DEFAULT_MAX_LENGTH[name]
            reranker = Reranker.load(onnx, max_length=max_length, batch_size=args.batch_size)
            pairs = [p for qp in run_pairs(dataset, cut_run(run, queries)) for p in qp]
            work_done = model_flops(AutoConfig.from_pretrained(onnx), reranker.model.tokenizer, pairs, max_length)
            print(f"\n{name}: {len(pairs)} pairs, mean {work_done['mean_length']:.1f} tokens, max_length "
                  f"{max_length}, {work_done['flops'] / 1e12:.2f} TFLOP per pass", flush=True)
            reranker.score(pairs[:16])  # warm-up
            rounds = paired_rounds(reranker.score, pairs, work_done["flops"], matmul, args)
            results["datasets"][name] = {"pairs": len(pairs), "max_length": max_length, "work": work_done,
                                         "rounds": rounds, **summary(rounds)}
    bursts.append(best_gflops(matmul, args.matmul_size, 5))
    results["load_avg_end"] = os.getloadavg()
    results["matmul_burst"] = {"samples": bursts, "best": max(bursts)}
    for r in results["datasets"].values():
        r["vs_burst"] = r["model_median"] / max(bursts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print("\n| dataset | model GFLOP/s (median) | paired share (median of rounds) | strict share (vs best MatMul) "
          "| vs best burst | MatMul GFLOP/s min-max |\n|---|---:|---:|---:|---:|---:|")
    for name, r in results["datasets"].items():
        print(f"| {name} | {r['model_median']:.1f} | {r['paired']:.0%} | {r['strict']:.0%} "
              f"| {r['vs_burst']:.0%} | {r['matmul_min']:.1f}-{r['matmul_best']:.1f} |")
    print(f"best single 4096 x 4096 product (burst, best of 5, {len(bursts)} samples): "
          f"{results['matmul_burst']['best']:.1f} GFLOP/s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
