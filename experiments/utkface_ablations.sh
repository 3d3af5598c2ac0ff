#!/usr/bin/env bash
# The paper's ablations on UTKFace (coral split), TinyAgeNet at 64 px, the same budget for every row:
# 6 epochs, Adam 1e-3 decayed x0.1 after epoch 4, batch 128, seed 0, one thread per run.
# Usage: bash experiments/utkface_ablations.sh [DATA_ROOT] [OUT_ROOT]
set -euo pipefail
ROOT=${1:-../shared/data/utkface}
OUT=${2:-runs/ablation}
common=(--root "$ROOT" --model tiny_age_net --input-size 64 --epochs 6 --set lr_step=4 --seed 0
        --set threads=1 --set workers=1 --set progress=false)
run() { local name=$1; shift; [ -f "$OUT/$name/report.json" ] && return 0
        dldl train "${common[@]}" --out "$OUT/$name" "$@" --resume > "$OUT/$name.log" 2>&1; }
mkdir -p "$OUT"
run dldl_v2 --loss dldl_v2
run dldl --loss dldl
run softmax --loss softmax
run l1 --loss l1
run ranking --loss ranking
run dldl_v2_gap --loss dldl_v2 --set hybrid_pool=false
run dldl_v2_lam0.1 --loss dldl_v2 --set lam=0.1
run dldl_v2_lam10 --loss dldl_v2 --set lam=10
