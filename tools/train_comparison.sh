#!/usr/bin/env bash
# Trains ours, the ablations and the baselines on the same data, steps, batch, seed and schedule
# (docs/RESULTS.md). CPU budget: STEPS (default 300) steps of batch 8 each, two runs at a time with one
# torch thread each. Usage: tools/train_comparison.sh 4|8 [NAME ...]   (no names: every run of that scale)
# Resumable: a run whose ema.safetensors exists is skipped; an interrupted one resumes from last.pt.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:?usage: tools/train_comparison.sh 4|8 [NAME ...]}; shift || true
STEPS=${STEPS:-300}
PY=${PY:-python}
OUT=${OUT:-.data/runs/compare-x$SCALE}
COMMON="data=.data/cache/utkface_aligned,.data/cache/taiwanese_expr batch_size=8 lr=4e-4 warmup=30 steps=$STEPS \
  seed=0 val_every=$STEPS val_max=128 ckpt_minutes=3 threads=1 landmarks=detect classifier=${CLASSIFIER:-fer-teacher-vgg}"
# name | preset | model_args (ablation) | extra overrides
# The -emo rows are the baselines with ours' emotion loss: what the prior adds beyond the loss. The loss reads
# the shipped teacher (fer-teacher-vgg) unless CLASSIFIER=... is set; every row uses the same one.
RUNS="ours|affectsr-x$SCALE-lite||lambda_emo=0.02
no-gcn|affectsr-x$SCALE-lite|graph=false|lambda_emo=0.02
concat|affectsr-x$SCALE-lite|fusion=concat|lambda_emo=0.02
no-emotion-loss|affectsr-x$SCALE-lite||lambda_emo=0
pooled-prior|affectsr-x$SCALE-lite|prior=pooled|lambda_emo=0.02
rrdb|rrdb-x$SCALE-lite||lambda_emo=0
srcnn|srcnn-x$SCALE||lambda_emo=0
fsrnet|fsrnet-x$SCALE||lambda_emo=0
dic|dic-x$SCALE||lambda_emo=0
ours-residual|affectsr-x$SCALE-lite|residual=true|lambda_emo=0.02
rrdb-emo|rrdb-x$SCALE-lite||lambda_emo=0.02
srcnn-emo|srcnn-x$SCALE||lambda_emo=0.02
fsrnet-emo|fsrnet-x$SCALE||lambda_emo=0.02
dic-emo|dic-x$SCALE||lambda_emo=0.02"
mkdir -p "$OUT"
run_one() {
  IFS='|' read -r name preset args extra <<< "$1"
  if [ -f "$OUT/$name/ema.safetensors" ]; then echo "skip $name (done)"; return; fi
  echo "train $name ($preset $args $extra)"
  $PY -m affectsr train model="$preset" model_args="$args" out="$OUT/$name" $extra $COMMON \
    > "$OUT/$name.log" 2>&1 || { echo "FAILED $name (see $OUT/$name.log)"; return 1; }
  echo "done $name: $(tail -1 "$OUT/$name.log")"
}
export -f run_one; export OUT PY COMMON
if [ $# -gt 0 ]; then
  sel=$(printf '%s\n' "$RUNS" | grep -E "^($(IFS='|'; echo "$*"))\|")
else
  sel=$RUNS
fi
printf '%s\n' "$sel" | xargs -P "${JOBS:-2}" -I{} bash -c 'run_one "$@"' _ {}
