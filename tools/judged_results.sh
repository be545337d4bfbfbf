#!/usr/bin/env bash
# docs/JUDGED.md: every shipped SR model (and bicubic) on the test split, expression read by the judge
# (fer-judge-resnet, which no training loss uses) with the teacher as a second column, identity (dlib)
# and expression geometry (mouth / eyes / brows NME). No training: the shipped weights as they are.
# CPU: about 20-40 min per scale on 2 cores (the full-size models and dlib dominate).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
DATA=${DATA:-../shared/data}
DEVICE=${DEVICE:-cpu}
for set in utkface_aligned taiwanese_expr; do
  [ -f .data/cache/$set/index.json ] || $PY -m affectsr prepare "$DATA/$set" --out .data/cache/$set --quiet
done
for s in ${SCALES:-4 8}; do
  models="bicubic,affectsr-x$s,affectsr-x$s-lite,realesrgan-x$s,rrdb-x$s-lite,srcnn-x$s,fsrnet-x$s,dic-x$s"
  $PY -m affectsr evaluate --model "$models" --data .data/cache/utkface_aligned .data/cache/taiwanese_expr \
    --scale "$s" --landmarks detect --device "$DEVICE" --out .data/eval/judged-x$s --overwrite -q
done
$PY tools/make_judged.py --eval $(for s in ${SCALES:-4 8}; do printf 'x%s=.data/eval/judged-x%s ' "$s" "$s"; done) --out docs/JUDGED.md
