#!/usr/bin/env bash
# docs/RESULTS.md from scratch: caches -> training of every row (tools/train_comparison.sh) -> one
# `affectsr evaluate` per scale with ours, the ablations and the baselines side by side -> the page.
# CPU: about 2-3 hours on 2 cores; on a GPU, minutes (set DEVICE=cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
DATA=${DATA:-../shared/data}
DEVICE=${DEVICE:-cpu}
for set in utkface_aligned taiwanese_expr; do
  [ -f .data/cache/$set/index.json ] || $PY -m affectsr prepare "$DATA/$set" --out .data/cache/$set --quiet
done
ROWS="ours no-gcn concat no-emotion-loss pooled-prior rrdb srcnn fsrnet dic ours-residual rrdb-emo srcnn-emo fsrnet-emo dic-emo"
for s in 4 8; do
  [ "${SKIP_TRAIN:-0}" = 1 ] || PY=$PY tools/train_comparison.sh $s
  models=bicubic
  for r in $ROWS; do
    w=.data/runs/compare-x$s/$r/ema.safetensors
    [ -f "$w" ] && models="$models,$r=$w"
  done
  models="$models,shipped=affectsr-x$s-lite"
  $PY -m affectsr evaluate --model "$models" --data .data/cache/utkface_aligned .data/cache/taiwanese_expr \
    --scale $s --landmarks detect --device "$DEVICE" --out .data/eval/compare-x$s --overwrite -q
done
$PY tools/make_results.py --eval x4=.data/eval/compare-x4 x8=.data/eval/compare-x8 \
  --runs x4=.data/runs/compare-x4 x8=.data/runs/compare-x8 --out docs --notes "${NOTES:-docs/results/reading.md}"
