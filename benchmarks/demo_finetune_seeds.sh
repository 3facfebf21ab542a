#!/usr/bin/env bash
# Fine-tune one start on the demo groups of a bench_distillation.py --work-dir at one learning rate, seeds 13-17,
# with the benchmark's demo recipe (mnrl, 200 steps of 4 groups x 8 docs, max_length 96) through the CLI, and score
# each model on the demo test set (BM25 top-20) as the benchmark does. Extends a benchmark run's learning-rate sweep
# without re-running its distillation.
#   START=copied bash benchmarks/demo_finetune_seeds.sh WORK_DIR 2e-4            # the copied layers
#   START=wiki-demo-distill/model bash benchmarks/demo_finetune_seeds.sh WORK_DIR 2e-4 "13 14"
# Prints one line per seed: seed and the reranker's nDCG@10; each run's folder is WORK_DIR/START-lrLR-seedS.
set -euo pipefail
W=$1; LR=$2; START=${START:-copied}; SEEDS=${3:-13 14 15 16 17}
for seed in $SEEDS; do
  out=$W/${START//\//-}-lr$LR-seed$seed
  distilrank train train_file="$W/demo-groups.jsonl" model="$W/$START" loss=mnrl max_steps=200 batch_size=4 \
      group_size=8 max_length=96 learning_rate="$LR" seed="$seed" log_steps=10 output_dir="$out" > "$out.log" 2>&1
  distilrank eval data="$W/demo-data" model="$out/model" split=test top_k=20 max_length=96 batch_size=32 \
      output_dir="$out-eval" > "$out-eval.log" 2>&1
  python -c "import json, sys; print(sys.argv[1], round(json.load(open(sys.argv[2]))['reranker']['nDCG@10'], 4))" \
      "$seed" "$out-eval/metrics.json"
done
