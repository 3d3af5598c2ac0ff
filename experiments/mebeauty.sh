#!/usr/bin/env bash
# Attractiveness on MEBeauty (official 2022 split), label set 1..10 step 0.1, TinyAgeNet at 96 px.
# Targets: (a) Gaussian around the mean score with the raters' std; (b) the real rater histograms.
# Usage: bash experiments/mebeauty.sh [DATA_ROOT] [OUT_ROOT] [THREADS]
set -euo pipefail
ROOT=${1:-../shared/data/mebeauty}
OUT=${2:-runs/mebeauty}
THREADS=${3:-1}
common=(--dataset mebeauty --root "$ROOT" --model tiny_age_net --input-size 96 --epochs 30 --set lr_step=20
        --seed 0 --set task=beauty --set labels=1:10:0.1 --set train_split=train --set val_split=val
        --set test_split=test --set threads="$THREADS" --set workers=1 --set progress=false)
mkdir -p "$OUT"
for target in gaussian histogram; do
  [ -f "$OUT/$target/report.json" ] && continue
  dldl train "${common[@]}" --set target=$target --out "$OUT/$target" --resume > "$OUT/$target.log" 2>&1
done
