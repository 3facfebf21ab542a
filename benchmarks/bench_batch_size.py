"""Scoring speed by batch size on CPU: PyTorch fp32, ONNX fp32, ONNX int8 and sentence-transformers.

Why ``batch_size`` 0 means 8 pairs per forward pass on a CPU (``default_score_batch_size``): the same
pairs are scored at each batch size by each backend, sizes and backends interleaved, best of
``--repeats`` kept (the least disturbed run). sentence-transformers' ``predict`` is measured at the
same sizes for reference.

    python benchmarks/bench_batch_size.py --model <cross-encoder folder> --out benchmarks/results/batch_size_cpu.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_inference import cut_run, export_models, load_demo, load_trec, run_pairs  # noqa: E402
from bench_vs_sentence_transformers import (  # noqa: E402
    DEFAULT_DATA,
    quiet_transformers,
    results_header,
    save_results,
)

SIZES = (8, 16, 32, 64)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="a trained cross-encoder folder")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding trec-dl-2019/")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--queries", type=int, default=8, help="queries per dataset (x 100 candidates)")
    p.add_argument("--repeats", type=int, default=2)
    return p.parse_args(argv)


def measure(model_dir: Path, onnx: dict[str, Path], pairs: list, max_length: int, repeats: int) -> dict[str, Any]:
    import torch
    from sentence_transformers import CrossEncoder as STCrossEncoder

    from distilrank.inference.reranker import Reranker

    rerankers = {"torch fp32": Reranker.load(model_dir, backend="torch", device="cpu", max_length=max_length),
                 "onnx fp32": Reranker.load(onnx["fp32"], max_length=max_length),
                 "onnx int8": Reranker.load(onnx["int8"], max_length=max_length)}
    st = STCrossEncoder(str(model_dir), device="cpu", max_length=max_length)

    def scorer(name: str, size: int):
        if name == "sentence-transformers":
            return lambda: st.predict(pairs, batch_size=size, show_progress_bar=False,
                                      activation_fn=torch.nn.Identity())
        rr = rerankers[name]
        return lambda: (setattr(rr, "batch_size", size), rr.score(pairs))

    names = [*rerankers, "sentence-transformers"]
    for name in names:
        scorer(name, 16)()  # warm-up
    best: dict[str, dict[int, float]] = {n: {} for n in names}
    for r in range(repeats):
        for size in (SIZES if r % 2 == 0 else SIZES[::-1]):
            for name in (names if r % 2 == 0 else names[::-1]):
                start = time.perf_counter()
                scorer(name, size)()
                pps = len(pairs) / (time.perf_counter() - start)
                best[name][size] = max(best[name].get(size, 0.0), pps)
                print(f"  {name} batch {size}: {pps:.1f} pairs/s", flush=True)
    return {"pairs": len(pairs), "max_length": max_length, "pairs_per_s": best}


def markdown(name: str, r: dict[str, Any]) -> str:
    lines = [f"### {name}: {r['pairs']} pairs, max_length {r['max_length']} (pairs/s, best of the repeats)", "",
             "| backend | " + " | ".join(f"batch {s}" for s in SIZES) + " |",
             "|---|" + "---:|" * len(SIZES)]
    for backend, by_size in r["pairs_per_s"].items():
        lines.append(f"| {backend} | " + " | ".join(f"{by_size[s]:.1f}" for s in SIZES) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet_transformers()
    results = {**results_header(args, argv), "datasets": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        work = Path(tmp)
        onnx = export_models(args.model, work)
        trec, trec_run = load_trec(args.data)
        demo, demo_run = load_demo(work)
        for name, (dataset, run, max_length) in {"trec-dl-2019": (trec, trec_run, 256),
                                                 "demo": (demo, demo_run, 96)}.items():
            pairs = [p for qp in run_pairs(dataset, cut_run(run, args.queries)) for p in qp]
            print(f"\n{name}: {len(pairs)} pairs", flush=True)
            results["datasets"][name] = measure(args.model, onnx, pairs, max_length, args.repeats)
    save_results(results, args.out, started)
    for name, r in results["datasets"].items():
        print("\n" + markdown(name, r))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
