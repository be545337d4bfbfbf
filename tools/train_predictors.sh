#!/usr/bin/env bash
# Trains the two LR landmark predictors (x4: 32 px inputs, x8: 16 px) and reports their NME on the test split.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=".data/cache/utkface_aligned .data/cache/taiwanese_expr"
mkdir -p .data/runs/predictors
for s in 4 8; do
  python -m affectsr train-predictor --data $DATA --scale $s --steps ${STEPS:-1000} --threads 1 \
    --out .data/runs/predictors/x$s.landmarks.safetensors
  python -m affectsr evaluate-predictor --data $DATA --scale $s \
    --predictor .data/runs/predictors/x$s.landmarks.safetensors --json .data/runs/predictors/nme-x$s.json
done
