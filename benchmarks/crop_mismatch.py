"""Crop mismatch: the model on the dataset's own crops vs on crops made by our photo pipeline.

Each image is treated as a photo: reflect-padded (so the detector sees surroundings, as in a real
photo), faces detected, the largest aligned to the model's template, then estimated. Compares MAE
(or Pearson correlation for beauty) with feeding the dataset's crop directly, on the same images.

    python benchmarks/crop_mismatch.py --model tiny_age_net-utkface --dataset utkface \
        --root ../shared/data/utkface --split coral_test --limit 1000
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import dldl
from dldl.data.images import read_image, square_resize
from dldl.data.sources import load_dataset
from dldl.faces import get_detector
from dldl.metrics import mae, pearson
from dldl.predict import Predictor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny_age_net-utkface")
    ap.add_argument("--dataset", default="utkface")
    ap.add_argument("--root", required=True)
    ap.add_argument("--split", default="coral_test")
    ap.add_argument("--limit", type=int, default=None, help="first N images of the split")
    ap.add_argument("--pad", type=int, default=48, help="reflect padding around each crop, px")
    args = ap.parse_args()
    est = dldl.load(args.model)
    samples = load_dataset(args.dataset, args.root, args.split).samples[: args.limit]
    predictor = Predictor(est, get_detector())
    own, piped, truth, missed = [], [], [], 0
    t0 = time.time()
    for s in samples:
        img = np.asarray(read_image(s.path))
        direct = est.predict_arrays(square_resize(read_image(s.path), est.cache_size)[None]).estimate[0]
        faces = predictor.predict(np.pad(img, ((args.pad, args.pad), (args.pad, args.pad), (0, 0)), mode="reflect"))
        if not faces:
            missed += 1
            continue
        own.append(direct)
        piped.append(faces[0].value)
        truth.append(s.label)
    metric = "pearson" if est.task == "beauty" else "mae"
    fn = pearson if metric == "pearson" else mae
    out = {"model": args.model, "dataset": args.dataset, "split": args.split, "images": len(samples),
           "no_face_found": missed, "compared": len(truth), f"{metric}_dataset_crops": round(fn(own, truth), 4),
           f"{metric}_photo_pipeline": round(fn(piped, truth), 4), "seconds": round(time.time() - t0, 1)}
    out["difference"] = round(out[f"{metric}_photo_pipeline"] - out[f"{metric}_dataset_crops"], 4)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
