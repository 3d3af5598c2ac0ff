#!/usr/bin/env bash
# Issue 39 item 8: does starting from the age model's network (trained on ~100,000 faces) carry beauty
# across sources better than ImageNet? Single-source models, each trained on one beauty set and scored on
# the other (experiments/beauty_cross.py), as matched pairs that differ only in the initialisation:
#   MEBeauty only (official split, Gaussian targets, 96 px, 20 epochs; the recipe of mobilenet_v2-mebeauty)
#   SCUT-FBP5500 only (experiments/scut5500.yaml: 60/40 split, 96 px, 20 epochs)
# each from ImageNet (backbone_weights=imagenet) and from mobilenet_v2-age (init_from keeps the backbone;
# the 117-age read-out is dropped and the score read-out starts fresh). One after the other, 1 thread.
# Usage: bash experiments/beauty_init_cross.sh [OUT_ROOT]   then
#   python experiments/beauty_cross.py --models OUT_ROOT/*/best.pt --one-view --threads 1 --json OUT_ROOT/cross.json
set -euo pipefail
OUT=${1:-runs/beauty_init_cross}
mkdir -p "$OUT"
age=(--set backbone_weights=null --set init_from=mobilenet_v2-age)
imagenet=(--set backbone_weights=imagenet)
mebeauty=(--dataset mebeauty --root ../shared/data/mebeauty --set model=mobilenet_v2 --set input_size=96 --set lr=5e-4
          --set epochs=20 --set lr_step=14 --set task=beauty --set labels=1:10:0.1 --set train_split=train
          --set val_split=val --set test_split=test --set threads=1 --set workers=1 --set progress=false)
for init in age imagenet; do
  opts="${init}[@]"
  [ -f "$OUT/mebeauty_$init/report.json" ] || \
    dldl train "${mebeauty[@]}" "${!opts}" --out "$OUT/mebeauty_$init" --resume > "$OUT/mebeauty_$init.log" 2>&1
  [ -f "$OUT/scut_$init/report.json" ] || \
    dldl train --config experiments/scut5500.yaml "${!opts}" --set out_dir="$OUT/scut_$init" --resume > "$OUT/scut_$init.log" 2>&1
done
