"""Print a Markdown table of finished runs: one row per ``RUN/report.json``.

    python experiments/summarize.py runs/ablation/*/
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from dldl.errors import run_script


def main(folders: list[str]) -> None:
    print("| run | loss | target | epochs (best) | val MAE | test MAE, flip TTA | test MAE, no TTA | test CS(5) | RMSE | Pearson | train img/s (median) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for folder in folders:
        path = Path(folder) / "report.json"
        if not path.exists():
            print(f"| {Path(folder).name} | (not finished) | | | | | | | | | |")
            continue
        r = json.loads(path.read_text())
        cfg, t, n, hist = r["config"], r["test"], r["test_no_flip"], r["history"]
        best = min(hist, key=lambda h: h["val_mae"])
        speed = sorted(h["images_per_s"] for h in hist)[len(hist) // 2]
        kwargs = cfg.get("model_kwargs") or {}
        extra = ", plain GAP" if kwargs.get("hybrid_pool", cfg.get("hybrid_pool")) is False else ""
        loss = cfg["loss"] + (f", lambda {cfg['lam']:g}" if cfg["loss"] == "dldl_v2" else "") + extra
        target = cfg.get("target", "gaussian") + (f", sigma {cfg['sigma']:g}" if cfg.get("target", "gaussian") == "gaussian_fixed" else "")
        print(f"| {Path(folder).name} | {loss} | {target} | {len(hist)} ({best['epoch']}) | {r['best_val_mae']:.3f} | {t['mae']:.3f} | "
              f"{n['mae']:.3f} | {t['cs5']:.3f} | {t['rmse']:.3f} | {t['pearson']:.3f} | {speed} |")


if __name__ == "__main__":
    run_script(lambda: main(sys.argv[1:]))
