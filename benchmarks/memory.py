"""Peak memory (peak RSS, ``ru_maxrss`` of each command run as a child process) of prediction and of
training steps per profile.

* ``import``: ``python -c "import torch, dldl.training"``, the floor every command starts from;
* ``dldl predict`` on the bundled photos (detector + shipped age model), torch and ONNX Runtime;
* training steps per profile, through ``train_throughput.py`` (model, Adam state, activations of
  one batch; no dataset): ``cpu`` = TinyAgeNet 64 px batch 128, ``paper`` = ThinAgeNet 224 px
  with a small batch on CPU (batch 128 is the GPU recipe). The decoded uint8 cache a real run adds
  (N x S x S x 3 bytes for the training split) is listed beside them, computed, not measured.

    python benchmarks/memory.py --json docs/bench/memory.json
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import benchlib

BENCH = Path(__file__).resolve().parent
CORAL_TRAIN = 13146  # faces in UTKFace splits/coral_train.txt (train + the 10% hold-out, both cached)
PROFILES = {"cpu": ("tiny_age_net", 64, 128), "paper": ("thin_age_net", 224, 16)}


# A small launcher: the peak RSS Linux reports for a child includes what its parent had at fork
# (it survives exec), so the command is started from this fresh interpreter, not from the caller.
_LAUNCHER = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL); "
             "_, status, usage = os.wait4(p.pid, 0); "
             "open(sys.argv[1], 'w').write(f'{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}')")


def peak_rss(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd``; its peak resident set size in MB (``ru_maxrss``), wall seconds and exit code."""
    with tempfile.TemporaryDirectory() as tmp:
        report, err = Path(tmp) / "rusage", Path(tmp) / "stderr"
        t0 = time.perf_counter()
        with open(err, "wb") as f:
            subprocess.run([sys.executable, "-c", _LAUNCHER, str(report), *cmd], stderr=f, env=env, cwd=benchlib.REPO)
        wall = time.perf_counter() - t0
        maxrss_kb, code = map(int, report.read_text().split())
        tail = err.read_text(errors="replace").strip().splitlines()[-1:] if code else []
    return {"peak_rss_mb": round(maxrss_kb / 1024, 1), "seconds": round(wall, 1), "returncode": code,
            "error": tail[0] if tail else None}


def commands(profiles: list[str], steps: int, threads: int, batch: int | None) -> list[tuple[str, list[str], str | None]]:
    """``(label, argv, note)`` for every measured command."""
    py = sys.executable
    out = [("import torch + dldl", [py, "-c", "import torch, dldl.training"], None),
           ("dldl predict (bundled photos, torch)", [py, "-m", "dldl.cli", "predict", "--json"], None),
           ("dldl predict (bundled photos, onnx)", [py, "-m", "dldl.cli", "predict", "--json", "--runtime", "onnx"], None)]
    for name in profiles:
        model, size, default_batch = PROFILES[name]
        b = batch or default_batch
        cache = size * 9 // 8
        note = f"+ {CORAL_TRAIN * cache * cache * 3 / 1e6:.0f} MB uint8 cache of coral_train at {cache} px (computed)"
        out.append((f"train steps, profile {name} ({model}, {size} px, batch {b})",
                    [py, str(BENCH / "train_throughput.py"), "--models", model, "--sizes", str(size), "--batch", str(b),
                     "--steps", str(steps), "--warmup", "1", "--threads", str(threads), "--sources", "cache", "--no-roofline",
                     "--pool", str(b)], note))
    return out


def run(profiles: Sequence[str] = tuple(PROFILES), steps: int = 3, threads: int = 2, batch: int | None = None) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DLDL_CACHE": tmp, "OMP_NUM_THREADS": str(threads)}
        for label, cmd, note in commands(profiles, steps, threads, batch):
            if "--runtime" in cmd:  # the first onnx run exports the model into the cache; measure the second
                peak_rss(cmd, env)
            r = peak_rss(cmd, env)
            rows.append({"what": label, **r, "note": note, "command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))})
            print(f"memory: {label}: {r['peak_rss_mb']} MB", flush=True)
    return {"machine": benchlib.machine(), "settings": {"steps": steps, "threads": threads}, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    rows = [[r["what"], r["peak_rss_mb"] if not r["returncode"] else f"failed: {r['error']}", r["seconds"], r["note"] or ""]
            for r in result["rows"]]
    return ("### Peak memory (peak RSS of the process)\n\n"
            + benchlib.md_table(["command", "peak RSS MB", "wall s", "a full training run adds"], rows) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=list(PROFILES))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=None, help="override the profiles' batch sizes")
    ap.add_argument("--json", help="write the results to this JSON file")
    args = ap.parse_args()
    result = run(args.profiles, args.steps, args.threads, args.batch)
    benchlib.finish(result, args.json, markdown)


if __name__ == "__main__":
    main()
