#!/usr/bin/env bash
# Issue 11, item 5: the KL weighting of the DLDL-v2 loss, compared at equal budget and judged
# cross-dataset. Two fine-tunes of the shipped mobilenet_v2-utkface with the age_wild recipe,
# differing only in kl_reduction:
#   reference - the reference code's sum / (N * K): the KL term is about 1/K of the true mean KL,
#               so the expectation L1 term dominates the loss;
#   batchmean - sum / N, the true mean KL per sample.
# Each is calibrated (temperature on the pooled validation splits), then both go through the photo
# pipeline on every cross-dataset set. 2 epochs of 12,000 draws each (1 thread; ~15 min a run).
# Usage: bash experiments/kl_weighting.sh [PER_SET]
set -euo pipefail
cd "$(dirname "$0")/.."
per_set=${1:-200}
for red in reference batchmean; do
    out=runs/kl_$red
    if [ ! -f "$out/best.pt" ]; then
        dldl train --config experiments/age_wild.yaml --set init_from=src/dldl/assets/models/mobilenet_v2-utkface.pt \
            --set kl_reduction=$red --set epochs=2 --set epoch_size=12000 --set lr_step=2 --set workers=1 \
            --set out_dir=$out --overwrite
    fi
    [ -f "$out/calibrated.pt" ] || python experiments/calibrate.py "$out/best.pt" "$out/calibrated.pt"
done
python benchmarks/generalization.py --models kl_reference=runs/kl_reference/calibrated.pt \
    kl_batchmean=runs/kl_batchmean/calibrated.pt --per-set "$per_set" --json docs/bench/kl_weighting.json
