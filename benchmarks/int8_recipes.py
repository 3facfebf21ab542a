"""Which dynamic int8 recipe keeps nDCG@10 closest to fp32? (onnxruntime ``quantize_dynamic`` options)

Exports MODEL to ONNX fp32 once, quantises it four ways, and reranks the demo test set (BM25 top-20)
and TREC DL 2019 (BM25 top-100, relevance level 2) with each, at the model's own max_length:

    python benchmarks/int8_recipes.py /path/to/demo/train/model /path/to/shared/data/trec-dl-2019 OUT_DIR
"""
import json
import shutil
import sys
import time
from pathlib import Path

from onnxruntime.quantization import QuantType, quantize_dynamic

from distilrank.evaluation.ranking import evaluate_reranking
from distilrank.evaluation.run import first_stage_run, resolve_dataset
from distilrank.inference.export import export_onnx
from distilrank.inference.onnx_backend import OnnxCrossEncoder

model, trec, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
fp32 = work / "fp32"
if not fp32.exists():
    export_onnx(model, fp32)
sets = {}
for spec, split, k, rl in [("demo", "test", 20, 1), (trec, "test", 100, 2)]:
    ds, given = resolve_dataset(spec, split)
    run = first_stage_run(ds, given, k)
    sets[spec] = (ds, run, k, rl)
variants = {"default": {}, "per_channel": {"per_channel": True}, "matmul_only": {"op_types_to_quantize": ["MatMul"]},
            "matmul_per_channel": {"op_types_to_quantize": ["MatMul"], "per_channel": True}}
res = {}
for name, kw in [("fp32", None)] + list(variants.items()):
    d = fp32 if kw is None else work / name
    if kw is not None and not d.exists():
        shutil.copytree(fp32, d)
        quantize_dynamic(str(fp32 / "model.onnx"), str(d / "model.onnx"), weight_type=QuantType.QInt8, **kw)
    ce = OnnxCrossEncoder.from_pretrained(d)
    row = {}
    for spec, (ds, run, k, rl) in sets.items():
        t = time.perf_counter()
        rep = evaluate_reranking(ds, run, ce.score, k, relevance_level=rl)
        row[spec] = (round(rep.reranked["nDCG@10"], 4), round(time.perf_counter() - t, 1))
    res[name] = row
    print(name, row, flush=True)
(work / "int8_recipes.json").write_text(json.dumps(res, indent=1))
