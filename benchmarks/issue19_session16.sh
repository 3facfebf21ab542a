#!/bin/bash
# Issue 19, session 16 (RESULTS.md): the web student after a 3x longer distillation (distill_steps=1800 instead of
# 600). Needs the seed's shipped-recipe run folder runs/msSEED (`distilrank pipeline msmarco ... output_dir=runs/msSEED
# seed=SEED`), whose teacher and labels it reuses.
#   bash benchmarks/issue19_session16.sh SEED W [STEPS]
set -euo pipefail
seed=$1 W=$2 steps=${3:-1800}
R=runs/ms$seed D=$W/d$steps-$seed
mkdir -p "$D"
evaluate() { distilrank eval --config $R/student_eval/config.yaml model="$1" output_dir="$2" "${@:3}"; }
[ -f "$D/distill/metrics.json" ] || distilrank distill-mlm --config $R/distill/config.yaml max_steps=$steps \
    output_dir="$D/distill"
evaluate "$D/distill/model" "$D/distill_eval" encoder=bi   # the distilled start, zero-shot (before KL)
distilrank train --config $R/student/config.yaml model="$D/distill/model" output_dir="$D/student"
evaluate "$D/student/model" "$D/student_eval"
