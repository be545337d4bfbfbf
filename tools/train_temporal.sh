#!/usr/bin/env bash
# Temporal term experiment (docs/VIDEO.md): fine-tune the shipped affectsr-x4-lite for STEPS steps with and
# without the temporal consistency loss (same init, data, seed, steps), then compare flicker and PSNR.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
STEPS=${STEPS:-100}
COMMON="model=affectsr-x4-lite init=affectsr/weights/affectsr-x4-lite.safetensors \
  data=.data/cache/utkface_aligned,.data/cache/taiwanese_expr batch_size=8 lr=1e-4 warmup=10 steps=$STEPS seed=0 \
  lambda_emo=0.02 landmarks=detect val_every=$STEPS val_max=128 threads=1"
for lt in 0 1.0; do
  name=tc-$lt
  [ -f .data/runs/temporal/$name/ema.safetensors ] && continue
  $PY -m affectsr train $COMMON lambda_temporal=$lt out=.data/runs/temporal/$name > .data/runs/temporal-$name.log 2>&1
done
