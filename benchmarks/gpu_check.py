"""GPU path check (bf16/fp16 training, CUDA scoring parity with sentence-transformers).

Run on a CUDA machine from the repo root: ``PYTHONPATH=src:tests python benchmarks/gpu_check.py``.
Prints one JSON object; exits non-zero if a check fails.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def main() -> int:
    from conftest import toy_groups
    from tiny import make_tiny_bert

    from distilrank import CrossEncoder, Reranker, TrainConfig
    from distilrank.training.run import run_training

    assert torch.cuda.is_available(), "no CUDA device"
    tmp = Path(tempfile.mkdtemp())
    model_dir = make_tiny_bert(tmp / "tiny")
    data = tmp / "groups.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in toy_groups(n=64)))
    out: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    ok = True
    for precision in ("no", "bf16", "fp16"):
        cfg = TrainConfig(train_file=str(data), model=str(model_dir), output_dir=str(tmp / f"run-{precision}"),
                          loss="listwise", max_steps=60, batch_size=8, group_size=4, max_length=32,
                          learning_rate=3e-3, mixed_precision=precision, log_steps=10, save_steps=30)
        t = time.perf_counter()
        metrics = run_training(cfg)
        rows = [json.loads(x) for x in (tmp / f"run-{precision}" / "metrics.jsonl").read_text().splitlines()]
        losses = [r["loss"] for r in rows if "loss" in r]
        out[f"train_{precision}"] = {"first_loss": losses[0], "last_loss": losses[-1],
                                     "seconds": round(time.perf_counter() - t, 2), "steps": metrics["train"]["steps"]}
        ok &= losses[-1] < losses[0]
    # scoring parity on CUDA: distilrank vs sentence-transformers on the same saved folder
    from sentence_transformers import CrossEncoder as STCrossEncoder

    saved = tmp / "run-bf16" / "model"
    pairs = [(r["query"], d) for r in toy_groups(n=32) for d in [r["positive"], *r["negatives"]]]
    ours = Reranker.load(saved, device="cuda").score(pairs)
    st = STCrossEncoder(str(saved), device="cuda").predict(pairs, batch_size=32).tolist()
    cpu = Reranker.load(saved, device="cpu").score(pairs)
    out["max_diff_vs_st_cuda"] = max(abs(a - b) for a, b in zip(ours, st))
    out["max_diff_cuda_vs_cpu"] = max(abs(a - b) for a, b in zip(ours, cpu))
    ok &= out["max_diff_vs_st_cuda"] <= 1e-4 and out["max_diff_cuda_vs_cpu"] <= 1e-3
    bf16 = CrossEncoder.from_pretrained(str(saved), dtype=torch.bfloat16).to("cuda")
    out["max_diff_bf16_vs_fp32"] = max(abs(a - b) for a, b in zip(bf16.score(pairs), ours))
    out["ok"] = bool(ok)
    print(json.dumps(out, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
