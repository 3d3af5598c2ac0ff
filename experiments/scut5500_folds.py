"""SCUT-FBP5500's 5-fold protocol: train on each official fold (cv1..cv5, 80/20), report the mean
and std of Pearson, MAE and RMSE over the five test folds.

    python experiments/scut5500_folds.py [--out runs/scut_folds] [--epochs 15] [--set KEY=VALUE ...]

Each fold is ``dldl train --config experiments/scut5500.yaml`` with that fold's split files, so the
recipe is the 60/40 one; 15 epochs over the fold's 3,960 training faces (10% held out) are as many
steps as the 60/40 run's 20 epochs over 2,950. A finished fold (``report.json``) is not re-run, an
unfinished one resumes from its ``last.pt``. Prints a Markdown table and writes ``OUT/folds.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from dldl.errors import run_script

CONFIG = Path(__file__).with_name("scut5500.yaml")
METRICS = ("pearson", "mae", "rmse")


def run_fold(k: int, out: Path, epochs: int, extra: list[str]) -> dict:
    """Train fold ``k`` (1..5) into ``out/cvK`` unless it finished; returns its ``report.json``."""
    run = out / f"cv{k}"
    report = run / "report.json"
    if not report.exists():
        cmd = ["dldl", "train", "--config", str(CONFIG), "--out", str(run), "--epochs", str(epochs),
               "--set", f"train_split=cv{k}_train", "--set", f"test_split=cv{k}_test",
               "--set", f"lr_step={round(epochs * 0.7)}"]
        for kv in extra:
            cmd += ["--set", kv]
        if (run / "last.pt").exists():
            cmd.append("--resume")
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return json.loads(report.read_text())


def summarize(reports: dict[int, dict]) -> dict:
    """Mean and sample std of each test metric (flip TTA) over the folds."""
    rows = {k: {m: r["test"][m] for m in METRICS} for k, r in reports.items()}
    summary = {m: {"mean": statistics.mean(v[m] for v in rows.values()),
                   "std": statistics.stdev(v[m] for v in rows.values()) if len(rows) > 1 else 0.0}
               for m in METRICS}
    return {"folds": rows, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/scut_folds"))
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--set", dest="extra", action="append", default=[], help="extra TrainConfig field KEY=VALUE")
    a = ap.parse_args(argv)
    try:
        reports = {k: run_fold(k, a.out, a.epochs, a.extra) for k in a.folds}
    except subprocess.CalledProcessError as e:
        print(f"error: fold training failed (exit {e.returncode}): {' '.join(e.cmd)}", file=sys.stderr)
        return 1
    result = summarize(reports)
    print("| fold | Pearson | MAE | RMSE |\n|---|---|---|---|")
    for k, v in result["folds"].items():
        print(f"| cv{k} | {v['pearson']:.4f} | {v['mae']:.4f} | {v['rmse']:.4f} |")
    s = result["summary"]
    print("| mean ± std | " + " | ".join(f"{s[m]['mean']:.4f} ± {s[m]['std']:.4f}" for m in METRICS) + " |")
    (a.out / "folds.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    run_script(main)
