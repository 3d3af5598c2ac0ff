"""Milliseconds a face: each model on one stored crop per call, in ONNX Runtime, side by side.

What ``dldl predict`` spends on one face once it is aligned: the eval transform (centre crop,
resize, normalise; numpy), the exported network with its read-out, and the estimate. The crop is
random (speed does not depend on the pixels); one crop per call, as a photo's faces arrive. The
models are timed in turns, round after round, so a busy machine slows each alike; the median of the
rounds is reported, one view and with flip TTA. The budget of the default models is 10 ms a face on
one thread (docs/BENCHMARKS.md).

    python benchmarks/face_latency.py --models mobilenet_v2-beauty mobilenet_v2-age --json docs/bench/face_latency.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import benchlib
import numpy as np

from dldl.errors import run_script
from dldl.hub import load


def per_face_ms(est: Any, crop: np.ndarray, tta: bool, calls: int) -> float:
    """Mean milliseconds of ``calls`` one-crop ``predict_arrays`` calls."""
    t0 = time.perf_counter()
    for _ in range(calls):
        est.predict_arrays(crop, tta_flip=tta)
    return (time.perf_counter() - t0) / calls * 1000


def measure(models: list[str], threads: int = 1, rounds: int = 7, calls: int = 60) -> list[dict[str, Any]]:
    """One row per model: input size and the median over ``rounds`` of ms a face, one view and with TTA."""
    ests = {m: load(m, runtime="onnx", threads=threads) for m in models}
    rng = np.random.default_rng(0)
    crops = {m: rng.integers(0, 256, (1, e.cache_size, e.cache_size, 3), dtype=np.uint8) for m, e in ests.items()}
    times: dict[tuple[str, bool], list[float]] = {(m, t): [] for m in models for t in (False, True)}
    for m, e in ests.items():  # warm-up
        for tta in (False, True):
            per_face_ms(e, crops[m], tta, 10)
    for _ in range(rounds):
        for (m, tta), out in times.items():
            out.append(per_face_ms(ests[m], crops[m], tta, calls))
    return [{"model": m, "input_size": e.input_size, "threads": threads,
             "one_view_ms": round(statistics.median(times[m, False]), 2),
             "tta_ms": round(statistics.median(times[m, True]), 2), "rounds": rounds, "calls": calls}
            for m, e in ests.items()]


def markdown(result: dict[str, Any]) -> str:
    rows = [[r["model"], r["input_size"], r["threads"], r["one_view_ms"], r["tta_ms"]] for r in result["rows"]]
    return benchlib.md_table(["model", "input px", "threads", "ms a face, one view", "ms a face, flip TTA"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["mobilenet_v2-beauty", "mobilenet_v2-age"],
                    help="shipped names, checkpoints or exported files")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=60, help="calls a round")
    ap.add_argument("--json", help="write the results to this JSON file")
    a = ap.parse_args()
    result = {"machine": benchlib.machine(), "rows": measure(a.models, a.threads, a.rounds, a.calls)}
    benchlib.finish(result, a.json, markdown)


if __name__ == "__main__":
    run_script(main)
