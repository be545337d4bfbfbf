#!/usr/bin/env bash
# The quality A/B of the cheap prior (issue 17): the -lite prior as shipped ("old") against the cheap prior
# (affectsr.models.presets.FAST, "fast"), at the RESULTS budget of tools/train_comparison.sh (300 steps of
# batch 8, lr 4e-4, the same data and schedule, one torch thread per run); two seeds of the old prior say
# what the seed noise is. Then PSNR/SSIM-Y, ECM and FER agreement on the test split, and a table.
# Usage: tools/train_speed_ab.sh 4|8 [NAME ...]   NAMEs: old-s0 old-s1 fast-s0 fast-s1 (default: all)
# Resumable: finished runs and evaluations are skipped, an interrupted run resumes from its last.pt.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:?usage: tools/train_speed_ab.sh 4|8 [NAME ...]}; shift || true
STEPS=${STEPS:-300}
PY=${PY:-python}
DATA=${DATA:-.data/cache/utkface_aligned,.data/cache/taiwanese_expr}
OUT=${OUT:-.data/runs/speed-ab-x$SCALE}
PRESET=affectsr-x$SCALE-lite
# FAST_ARGS=... tries another cheap setting (e.g. "fusion_stages=1;prior_kernel=1"; use its own OUT)
FAST_ARGS=${FAST_ARGS:-$($PY -c "from affectsr.models.presets import FAST; print(';'.join(f'{k}={v}' for k, v in FAST['$PRESET'].items()))")}
# the old prior, spelled out: affectsr-x4-lite's preset has the cheap one since its distilled file shipped
OLD_ARGS=$($PY -c "from affectsr.models.presets import OLD_PRIOR; print(';'.join(f'{k}={v}' for k, v in OLD_PRIOR.items()))")
COMMON="data=$DATA batch_size=8 lr=4e-4 warmup=30 steps=$STEPS val_every=$STEPS val_max=128 ckpt_minutes=3 \
  threads=1 landmarks=detect lambda_emo=0.02"
NAMES=${*:-old-s0 old-s1 fast-s0 fast-s1}
mkdir -p "$OUT"
run_one() {
  name=$1; seed=${name##*-s}; args=$OLD_ARGS
  [[ $name == fast-* ]] && args=$FAST_ARGS
  if [ ! -f "$OUT/$name/ema.safetensors" ]; then
    echo "train $name (seed $seed, model_args '$args')"
    $PY -m affectsr train model="$PRESET" model_args="$args" seed="$seed" out="$OUT/$name" $COMMON \
      > "$OUT/$name.log" 2>&1 || { echo "FAILED $name (see $OUT/$name.log)"; return 1; }
  fi
  if [ ! -f "$OUT/$name.eval.json" ]; then
    OMP_NUM_THREADS=1 $PY -m affectsr evaluate-cache "$OUT/$name/ema.safetensors" --split test \
      --data ${DATA//,/ } --json "$OUT/$name.eval.json" > "$OUT/$name.eval.log" 2>&1
  fi
  echo "done $name"
}
export -f run_one; export OUT PY COMMON PRESET FAST_ARGS OLD_ARGS DATA
printf '%s\n' $NAMES | xargs -P "${JOBS:-4}" -I{} bash -c 'run_one "$@"' _ {}
$PY - "$OUT" $NAMES <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print(f"| run | PSNR-Y | SSIM-Y | ECM | agreement | KL |\n|---|---:|---:|---:|---:|---:|")
for name in sys.argv[2:]:
    f = out / f"{name}.eval.json"
    if f.is_file():
        m = json.loads(f.read_text())["model"]
        print(f"| {name} | {m['psnr']:.3f} | {m['ssim']:.4f} | {m['ecm']:.3f} | {100 * m['agreement']:.1f}% | {m['kl']:.4f} |")
PYEOF
