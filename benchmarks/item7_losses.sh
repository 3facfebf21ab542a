#!/bin/bash
# usage: benchmarks/item7_losses.sh ms|nf loss...   (settings fixed before any run; see RESULTS.md issue 20 item 7 protocol)
cd "$(dirname "$0")/.."; . .venv/bin/activate
d=$1; shift
F=runs/${d}13; mkdir -p runs/item7
if [ $d = ms ]; then BUDGET="epochs=1"; EV="data=../shared/data/trec-dl-2019 relevance_level=2"; else BUDGET="max_steps=300"; EV="data=../shared/data/nfcorpus split=dev"; fi
for loss in "$@"; do
  case $loss in
    margin_mse) X="loss=margin_mse scale=1";;
    listnet) X="loss=listnet targets=scores scale=1 temperature=0.05";;
    lambdaloss) X="loss=lambdaloss targets=ranks scale=20 lambda_scheme=ndcg2pp";;
    adr_mse) X="loss=adr_mse targets=ranks scale=20";;
    kl) X="loss=kl scale=1 temperature=0.05";;
  esac
  O=runs/item7/${d}_$loss
  s=$(date +%s)
  distilrank train train_file=$F/labels/labels.jsonl model=$F/distill/model encoder=bi $X group_size=10 batch_size=8 $BUDGET max_length=128 learning_rate=1e-4 seed=13 output_dir=$O > $O.train.log 2>&1 || { echo "$loss train failed"; continue; }
  t=$(( $(date +%s) - s ))
  distilrank eval $EV model=$O/model top_k=100 batch_size=64 output_dir=$O/eval > $O.eval.log 2>&1
  echo "$d $loss train_s=$t $(grep -E '^reranker' $O.eval.log)" >> runs/item7/results.txt
done
