#!/usr/bin/env bash
# Targets from raters, equal budget (issue: attractiveness): MobileNetV2 (ImageNet init, 96 px) on
# MEBeauty's official split, the recipe of experiments/mobilenet_v2.sh, three target kinds:
#   gaussian_fixed  a Gaussian around the mean score with one sigma for all faces, 1.86 (the mean rater
#                   std of the 1,655 training faces; the paper's kind of target)
#   gaussian        a Gaussian with each face's own rater std (what mnv2-96-mebeauty / the shipped
#                   mobilenet_v2-mebeauty used)
#   histogram       each face's real rater histogram on the label grid
# Usage: bash experiments/mebeauty_targets.sh [DATA_ROOT] [OUT_ROOT] [TARGET ...]
# Then: python experiments/summarize.py OUT_ROOT/*/
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${2:-runs/mebeauty_targets}
shift 2 || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(gaussian_fixed gaussian histogram)
common=(--dataset mebeauty --root "$DATA/mebeauty" --set model=mobilenet_v2 --set backbone_weights=imagenet
        --set input_size=96 --set lr=5e-4 --set epochs=20 --set lr_step=14 --set task=beauty --set labels=1:10:0.1
        --set train_split=train --set val_split=val --set test_split=test --set sigma=1.86 --seed 0
        --set threads=1 --set workers=1 --set progress=false)
mkdir -p "$OUT"
for target in "${TARGETS[@]}"; do
  [ -f "$OUT/$target/report.json" ] && continue
  resume=(); [ -f "$OUT/$target/last.pt" ] && resume=(--resume)
  dldl train "${common[@]}" --set target="$target" --out "$OUT/$target" "${resume[@]}" > "$OUT/$target.log" 2>&1
done
