#!/usr/bin/env bash
# The paper's ablations on UTKFace (coral split), TinyAgeNet at 64 px, the same budget for every row:
# 6 epochs, Adam 1e-3 decayed x0.1 after epoch 4, batch 128, seed 0, one thread per run.
# Usage: bash experiments/utkface_ablations.sh [DATA_ROOT] [OUT_ROOT] [RUN ...]
# (RUN names pick a subset, e.g. to split the rows over two processes; finished rows are skipped.)
set -euo pipefail
ROOT=${1:-../shared/data/utkface}
OUT=${2:-runs/ablation}
shift $(( $# < 2 ? $# : 2 ))
common=(--root "$ROOT" --model tiny_age_net --input-size 64 --epochs 6 --set lr_step=4 --seed 0
        --set threads=1 --set workers=1 --set progress=false)
declare -A rows=(
  [dldl_v2]="--loss dldl_v2"
  [dldl]="--loss dldl"
  [softmax]="--loss softmax"
  [l1]="--loss l1"
  [ranking]="--loss ranking"
  [dldl_v2_gap]="--loss dldl_v2 --set hybrid_pool=false"
  [dldl_v2_lam0.1]="--loss dldl_v2 --set lam=0.1"
  [dldl_v2_lam10]="--loss dldl_v2 --set lam=10"
)
order=(dldl_v2 dldl softmax l1 ranking dldl_v2_gap dldl_v2_lam0.1 dldl_v2_lam10)
[ $# -gt 0 ] && order=("$@")
mkdir -p "$OUT"
for name in "${order[@]}"; do
  [ -f "$OUT/$name/report.json" ] && continue
  # shellcheck disable=SC2086
  dldl train "${common[@]}" --out "$OUT/$name" ${rows[$name]} --resume > "$OUT/$name.log" 2>&1
done
