#!/usr/bin/env bash
# The distilled -lite presets (issue 12 item 4) with the cheap prior of affectsr.models.presets.FAST (issue 17):
# 1. teacher outputs: the full preset (affectsr-x4 / affectsr-x8) on the train faces of its frozen-trunk feature
#    cache (`affectsr cache-trunk ... --sample 1200 --seed 0 --stop-before 2`, the cache it was trained on), so
#    only what follows the cached trunk runs;
# 2. the student starts from the previous -lite release where tensors fit (backbone, GCN); the FAST prior's heads
#    and projections and the fusions start fresh (fusions zero: the start is the previous backbone's output);
# 3. loss: L1 to HR + LAMBDA_KD x L1 to the teacher on the rows that have one (KD_BATCH of them added to every
#    batch of 8) + 0.02 x the emotion consistency loss; one torch thread, resumable (run it again to continue).
# Usage: tools/train_lite_distill.sh 4|8 [KEY=VALUE ...]  (extra train overrides, e.g. lambda_kd=0 out=... for the
# GT-only control, stop_after=N)
# The shipped affectsr-x4-lite (2026-11-29, shared 2-core CPU, 1 thread at nice 5 beside 4-6 other jobs): STEPS=1600
# max_minutes=95 to step 656 (stopped by hand: at 4-5 s/step the run would not reach 1600 in the time there was),
# then resumed with STEPS=1250 max_minutes=46 to the end (resume is exact, but the new horizon re-stretches the
# cosine: the learning rate went from 1.35e-4 to 9.8e-5 at step 656). Replay: `... 4 stop_after=656` with
# STEPS=1600, then STEPS=1250.
# The shipped affectsr-x8-lite (2026-11-29, 1 thread at nice 0 beside 3-6 other jobs): one segment, STEPS=1400, 57 min,
# TEACHER = affectsr-x8 at step 442 of its frozen-trunk run (a copy of the run's model.safetensors), TRUNK = that
# run's train trunk cache.
# The shipped files of 2026-11-30 (fusion_stages=1, issue 17) fine-tune those of 2026-11-29 (fusion_stages=2), every
# tensor of which fits (the second fusion is dropped): INIT=<copy of the 2026-11-29 file> INIT_SKIP= STEPS=700
# LR=1e-4 tools/train_lite_distill.sh 4|8, TRUNK unused (the teacher.npz of the 2026-11-29 run linked into OUT),
# both runs at once at 1 thread each beside a third job (x4: 30 min, x8: 24 min). affectsr-x8-lite then went to a
# one-layer GCN (presets.FAST): tools/one_layer_gcn_init.py <that run's ema.safetensors> INIT.safetensors, then
# INIT=INIT.safetensors INIT_SKIP= LR=1e-4 STEPS=700 tools/train_lite_distill.sh 8 (20 min).
# INIT: the previous -lite weights (default: a copy of the shipped file, made once in $OUT, so that shipping the
# result does not change the start of a resumed or repeated run; after shipping, take the previous release from git).
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:?usage: tools/train_lite_distill.sh 4|8 [KEY=VALUE ...]}; shift
PY=${PY:-python}
DATA=${DATA:-.data/cache/utkface_aligned,.data/cache/taiwanese_expr}
TRUNK=${TRUNK:?TRUNK=<frozen-trunk cache of the teacher, affectsr cache-trunk --stop-before 2>}
OUT=${OUT:-.data/runs/distill-x$SCALE}
STEPS=${STEPS:-2400}
PRESET=affectsr-x$SCALE-lite
# the teacher: the shipped full preset, or a run's model.safetensors (copy it first: a running training rewrites it)
TEACHER=${TEACHER:-affectsr-x$SCALE}
mkdir -p "$OUT"
INIT=${INIT:-$OUT/init-$PRESET.safetensors}
[ -f "$INIT" ] || cp "affectsr/weights/$PRESET.safetensors" "$INIT"
if [ ! -f "$OUT/teacher.npz" ]; then
  OMP_NUM_THREADS=1 $PY -m affectsr cache-teacher --teacher "$TEACHER" --data ${DATA//,/ } \
    --trunk-cache "$TRUNK" --out "$OUT/teacher.npz" --threads 1 -q
fi
FAST_ARGS=$($PY -c "from affectsr.models.presets import FAST; print(';'.join(f'{k}={v}' for k, v in FAST['$PRESET'].items()))")
OMP_NUM_THREADS=1 $PY -m affectsr train model="$PRESET" model_args="$FAST_ARGS" data="$DATA" out="$OUT/run" \
  init="$INIT" init_partial=true init_skip=${INIT_SKIP-fusions.,prior.heads,prior.to_splat} \
  teacher="$OUT/teacher.npz" lambda_kd=${LAMBDA_KD:-1.0} kd_batch=${KD_BATCH:-4} \
  steps="$STEPS" batch_size=8 lr=${LR:-2e-4} warmup=50 lambda_emo=0.02 landmarks=detect seed=0 \
  val_every=250 val_max=128 ckpt_minutes=3 threads=1 "$@"
