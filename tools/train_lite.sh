#!/usr/bin/env bash
# Re-creates the shipped -lite weights on a CPU (numbers and timings: affectsr/weights/affectsr-x*-lite.md).
# 1. caches (once; ~7 min on 2 cores):  affectsr prepare ../shared/data/<set> --out .data/cache/<set>
# 2. the two SR models, side by side with one torch thread each (what was run for the shipped weights).
#    x8 was then extended (it had only just passed bicubic): stopped at step 1128 (after its checkpoint),
#    resumed with steps=2600 (2 threads; 10 steps, too slow on the shared CPU), then from step 1138 with
#    steps=2000 and 1 thread. Each resume re-stretches the cosine schedule (a warm restart to lr ~1.6e-4).
# 3. tools/train_predictors.sh (the LR landmark predictors), then tools/ship_lite.py evaluates on the test
#    split and writes affectsr/weights/*.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
for set in utkface_aligned taiwanese_expr; do
  [ -f .data/cache/$set/index.json ] || python -m affectsr prepare "$DATA/$set" --out .data/cache/$set --quiet
done
COMMON="data=.data/cache/utkface_aligned,.data/cache/taiwanese_expr batch_size=8 lr=4e-4 lambda_emo=0.02 \
  landmarks=detect seed=0 val_max=128 ckpt_minutes=3"
mkdir -p .data/logs
python -m affectsr train model=affectsr-x4-lite out=.data/runs/affectsr-x4-lite steps=900 val_every=150 \
  threads=1 max_minutes=30 $COMMON > .data/logs/train-x4.log 2>&1 &
python -m affectsr train model=affectsr-x8-lite out=.data/runs/affectsr-x8-lite steps=1300 stop_after=1128 \
  val_every=260 threads=1 $COMMON > .data/logs/train-x8.log 2>&1 &
wait
python -m affectsr train model=affectsr-x8-lite out=.data/runs/affectsr-x8-lite steps=2600 stop_after=1138 \
  val_every=260 threads=2 max_minutes=32 $COMMON >> .data/logs/train-x8.log 2>&1
python -m affectsr train model=affectsr-x8-lite out=.data/runs/affectsr-x8-lite steps=2000 val_every=260 \
  threads=1 max_minutes=30 $COMMON >> .data/logs/train-x8.log 2>&1
