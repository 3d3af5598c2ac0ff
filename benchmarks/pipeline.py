"""Photo pipeline speed: photos/s end to end (decode, detect, align, predict), with the time per stage.

Runs what ``dldl predict`` runs on each photo -- ``read_image`` (decode + EXIF orientation), then
``Predictor.predict`` (face detection, ``get_detector()``, 5-point alignment + resize to the model's crop, the model
with flip TTA) -- one photo after another in one process. The detector and the estimator are
wrapped in stopwatches, so ``align`` is the rest of ``Predictor.predict``. Model stage in torch
and in ONNX Runtime (the model exported as ``dldl export`` does).

    python benchmarks/pipeline.py --photos ../shared/data/mebeauty/original_images --json docs/bench/pipeline.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import benchlib
import numpy as np
import torch

import dldl
from dldl.data.images import IMAGE_SUFFIXES, read_image
from dldl.export import export
from dldl.runtime import load_exported
from dldl.faces import get_detector
from dldl.predictor import Predictor

STAGES = ("decode", "detect", "align", "predict")
PHOTOS = benchlib.SHARED_DATA / "mebeauty" / "original_images"
BUNDLED_PHOTOS = Path(dldl.__file__).parent / "assets" / "photos"


class Stopwatch:
    """Wraps ``inner``; every call of its method ``method`` adds its wall time to ``seconds``."""

    def __init__(self, inner: Any, method: str) -> None:
        self._inner, self._method, self.seconds = inner, method, 0.0

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name != self._method:
            return value

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        return timed


def photo_files(folder: Path, limit: int | None = None) -> list[Path]:
    files = sorted(f for f in Path(folder).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    return files[:limit] if limit else files


def one_pass(predictor: Predictor, files: list[Path]) -> dict[str, Any]:
    """Every photo once; per-photo seconds of each stage."""
    detector, estimator = predictor.detector, predictor.estimator
    per: dict[str, list[float]] = {k: [] for k in STAGES}
    faces = 0
    for f in files:
        d0, p0 = detector.seconds, estimator.seconds
        t0 = time.perf_counter()
        image = np.asarray(read_image(f))
        t1 = time.perf_counter()
        faces += len(predictor.predict(image))
        t2 = time.perf_counter()
        detect, predict = detector.seconds - d0, estimator.seconds - p0
        per["decode"].append(t1 - t0)
        per["detect"].append(detect)
        per["predict"].append(predict)
        per["align"].append(max(t2 - t1 - detect - predict, 0.0))
    total = sum(sum(v) for v in per.values())
    return {"photos": len(files), "faces": faces, "seconds": total, "photos_per_s": len(files) / total, "per_photo": per}


def run(photos: Path = PHOTOS, limit: int | None = None, runtimes: Sequence[str] = ("torch", "onnxruntime"),
        threads: Sequence[int] = (2, 1), repeats: int = 3, model: str = "tiny_age_net-utkface", tta: bool = True) -> dict[str, Any]:
    """photos/s and per-stage times for each runtime x thread count; medians over ``repeats`` passes."""
    files = photo_files(photos, limit)
    if not files:
        raise SystemExit(f"no photos found in {photos}")
    start = torch.get_num_threads()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export(dldl.load(model), Path(tmp) / "model.onnx", "onnx")
        for runtime in runtimes:
            for t in threads:
                torch.set_num_threads(t)
                est = dldl.load(model) if runtime == "torch" else load_exported(onnx_path, t)
                predictor = Predictor(Stopwatch(est, "predict_arrays"), Stopwatch(get_detector(), "detect"), tta_flip=tta)
                one_pass(predictor, files[:3])  # warm-up
                passes = [one_pass(predictor, files) for _ in range(repeats)]
                best = sorted(passes, key=lambda p: p["seconds"])[len(passes) // 2]  # the median pass
                stage_ms = {k: round(1e3 * statistics.median(v), 2) for k, v in best["per_photo"].items()}
                stage_share = {k: round(100 * sum(v) / best["seconds"], 1) for k, v in best["per_photo"].items()}
                rows.append({"runtime": runtime, "threads": t, "photos": best["photos"], "faces": best["faces"], "repeats": repeats,
                             "photos_per_s": round(statistics.median(p["photos_per_s"] for p in passes), 2),
                             "stage_median_ms": stage_ms, "stage_share_pct": stage_share,
                             "slowest_stage": max(stage_share, key=stage_share.get)})
                print(f"pipeline: {runtime} {t} thread(s): {rows[-1]['photos_per_s']} photos/s", flush=True)
    torch.set_num_threads(start)
    return {"machine": benchlib.machine(), "settings": {"photos": str(photos), "count": len(files), "model": model, "tta_flip": tta,
                                                        "detector": repr(get_detector())}, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    head = (f"### Photo pipeline: {s['count']} photos from `{Path(s['photos']).name}/`, model `{s['model']}`, "
            f"flip TTA {'on' if s['tta_flip'] else 'off'}, detector `{s['detector']}`\n\n"
            "photos/s: median over the passes; stage columns: median ms per photo (share of the total time). "
            "Target: >= 10 photos/s on 2 cores.\n")
    rows = [[r["runtime"], r["threads"], r["faces"], r["photos_per_s"]]
            + [f"{r['stage_median_ms'][k]} ({r['stage_share_pct'][k]}%)" for k in STAGES] + [r["slowest_stage"]]
            for r in result["rows"]]
    return head + "\n" + benchlib.md_table(["model runtime", "threads", "faces", "photos/s"] + [f"{k} ms" for k in STAGES]
                                           + ["slowest stage"], rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, default=PHOTOS if PHOTOS.exists() else BUNDLED_PHOTOS)
    ap.add_argument("--limit", type=int, default=None, help="only the first N photos")
    ap.add_argument("--runtimes", nargs="+", default=["torch", "onnxruntime"], choices=["torch", "onnxruntime"])
    ap.add_argument("--threads", nargs="+", type=int, default=[2, 1])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="tiny_age_net-utkface")
    ap.add_argument("--no-tta", action="store_true")
    ap.add_argument("--json", help="write the results to this JSON file")
    args = ap.parse_args()
    result = run(args.photos, args.limit, args.runtimes, args.threads, args.repeats, args.model, not args.no_tta)
    benchlib.finish(result, args.json, markdown)


if __name__ == "__main__":
    main()
