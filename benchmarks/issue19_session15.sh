#!/bin/bash
# Issue 19, session 15 (RESULTS.md): the web teacher on false-negative-filtered BM25 negatives (T1, T2) and the
# web student with inverse-cloze pseudo-queries (S1). Needs the seed's shipped-recipe run folder runs/msSEED
# (`distilrank pipeline msmarco ... output_dir=runs/msSEED seed=SEED`).
#   bash benchmarks/issue19_session15.sh teacher SEED W     # T1 and T2 for one seed, under folder W
#   bash benchmarks/issue19_session15.sh student SEED W     # S1 for one seed
set -euo pipefail
what=$1 seed=$2 W=$3
G=../shared/data/msmarco-dev-bm25-20/groups.jsonl
mkdir -p "$W"
evaluate() { distilrank eval --config runs/ms$seed/teacher_eval/config.yaml model="$1" output_dir="$2"; }
if [ "$what" = teacher ]; then
  # NV-Retriever's TopK-PercPos: the start model rescores each group's 19 negatives, those above 0.95 x the
  # positive's score go; T1 keeps the 3 hardest left, T2 keeps all left (the train stage draws 3 at random)
  for c in t1:3 t2:19; do
    name=${c%%:*} n=${c##*:}
    [ -f "$W/groups_$name.jsonl" ] || distilrank mine data=$G retriever=given rescore_model=packaged:all-MiniLM-L6-v2 \
        relative_margin=0.05 num_negatives=$n sampling=top output="$W/groups_$name.jsonl"
    distilrank train --config runs/ms$seed/teacher/config.yaml train_file="$W/groups_$name.jsonl" \
        output_dir="$W/$name-$seed/teacher"
    evaluate "$W/$name-$seed/teacher/model" "$W/$name-$seed/eval"
  done
else
  python benchmarks/pseudo_queries.py $G "$W/pseudo-$seed.jsonl" "$seed"
  distilrank label teacher=runs/ms$seed/teacher/model data="$W/pseudo-$seed.jsonl" \
      output="$W/pseudo_labels-$seed.jsonl" batch_size=64 chunk_size=200000
  cat runs/ms$seed/labels/labels.jsonl "$W/pseudo_labels-$seed.jsonl" > "$W/all_labels-$seed.jsonl"
  distilrank train --config runs/ms$seed/student/config.yaml train_file="$W/all_labels-$seed.jsonl" \
      output_dir="$W/s1-$seed/student"
  evaluate "$W/s1-$seed/student/model" "$W/s1-$seed/eval"
fi
