#!/usr/bin/env bash
# docs/RESULTS.md from scratch: caches -> training of every row (tools/train_comparison.sh) -> one
# `affectsr evaluate` per scale with ours, the ablations and the baselines side by side -> the page.
# CPU: about 4 hours on a shared 2-core VM (2026-11-30: ~9 min per -lite row at x4, one evaluation of 16 rows
# ~70 min); on a GPU, minutes (set DEVICE=cuda).
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
  --runs x4=.data/runs/compare-x4 x8=.data/runs/compare-x8 --out docs --notes "${NOTES:-docs/results/reading.md}" \
  --readme README.md

# The full presets from Real-ESRGAN x4plus (issue 12; docs/TRAINING.md): trunk features once, frozen-trunk
# training (resumable), ship, evaluate beside bicubic, Real-ESRGAN and the shipped presets, then the section.
# CPU: hours on a shared 2-core machine. FULL=0 skips it.
if [ "${FULL:-1}" = 1 ]; then
  CACHES=".data/cache/utkface_aligned .data/cache/taiwanese_expr"
  TEACHER=${TEACHER:?set TEACHER to the FER teacher .safetensors the emotion loss uses}
  for s in 4 8; do
    b=16; [ $s = 4 ] && b=8
    for split in train:1200 test:200; do
      $PY -m affectsr cache-trunk --data $CACHES --out .data/runs/trunk-x$s-${split%%:*} --scale $s --split ${split%%:*} \
        --sample ${split##*:} --seed 0 --stop-before 2 --shard-size 200 --threads 1 -q
    done
    $PY -m affectsr train-frozen-trunk out=.data/runs/affectsr-x$s trunk_cache=.data/runs/trunk-x$s-train \
      eval_cache=.data/runs/trunk-x$s-test eval_limit=100 data=${CACHES// /,} model=affectsr-x$s crop=64 batch=$b \
      lr=2e-4 lambda_emo=0.02 emo_every=4 emo_batch=8 classifier=$TEACHER minutes=${MINUTES:-65} seed=0 threads=1
    $PY tools/ship_full.py affectsr-x$s --run .data/runs/affectsr-x$s
    $PY -m affectsr evaluate --model bicubic,realesrgan-x$s,affectsr-x$s-lite,rrdb-x$s-lite,srcnn-x$s,fsrnet-x$s,dic-x$s,affectsr-x$s \
      --data $CACHES --scale $s --landmarks detect --device "$DEVICE" --out .data/eval/full-x$s --overwrite -q
    $PY tools/ship_full.py affectsr-x$s --run .data/runs/affectsr-x$s --eval .data/eval/full-x$s --no-weights
  done
  $PY tools/make_full_results.py --eval x4=.data/eval/full-x4 x8=.data/eval/full-x8 \
    --runs x4=.data/runs/affectsr-x4 x8=.data/runs/affectsr-x8 ${CALIB:+--calib "$CALIB"} \
    --notes docs/results/full-presets-reading.md
fi
