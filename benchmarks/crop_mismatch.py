"""Crop mismatch: the model on the dataset's own crops vs on crops made by our photo pipeline.

Default: each dataset crop is treated as a photo: reflect-padded (so the detector sees
surroundings, as in a real photo), faces detected, the largest aligned to the model's template,
then estimated. With ``--originals`` (MEBeauty) the pipeline runs on the dataset's real in-the-wild
photos instead, and is compared with the authors' crops of the same faces. Reports MAE (and Pearson
correlation, RMSE for beauty) of both inputs on the same faces.

    python benchmarks/crop_mismatch.py --model tiny_age_net-utkface --dataset utkface \
        --root ../shared/data/utkface --split coral_test --limit 1000
    python benchmarks/crop_mismatch.py --model tiny_age_net-mebeauty --dataset mebeauty \
        --root ../shared/data/mebeauty --split test --originals
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import dldl
from dldl.data.images import read_image, square_resize
from dldl.data.samples import Sample
from dldl.data.datasets import load_dataset
from dldl.faces import get_detector
from dldl.metrics import mae, pearson, rmse
from dldl.predictor import Predictor


def _face_key(path) -> str:  # noqa: ANN001
    """``.../female/asian/13.png`` -> ``female/asian/13``: names a face across crop and original."""
    return "/".join([*path.parts[-3:-1], path.stem])


def photo_pairs(args: argparse.Namespace) -> list[tuple[Sample, object]]:
    """``(crop sample, photo path)`` for each face: the padded crop itself, or its original photo."""
    crops = load_dataset(args.dataset, args.root, args.split).samples
    if not args.originals:
        return [(s, s.path) for s in crops]
    originals = {_face_key(s.path): s.path for s in load_dataset(args.dataset, args.root, args.split, image="original").samples}
    return [(s, originals[_face_key(s.path)]) for s in crops if _face_key(s.path) in originals]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny_age_net-utkface")
    ap.add_argument("--dataset", default="utkface")
    ap.add_argument("--root", required=True)
    ap.add_argument("--split", default="coral_test")
    ap.add_argument("--limit", type=int, default=None, help="first N images of the split")
    ap.add_argument("--pad", type=int, default=48, help="reflect padding around each crop, px")
    ap.add_argument("--originals", action="store_true", help="run the pipeline on the dataset's original photos (MEBeauty)")
    args = ap.parse_args()
    est = dldl.load(args.model)
    pairs = photo_pairs(args)[: args.limit]
    predictor = Predictor(est, get_detector())
    own, piped, truth, missed = [], [], [], 0
    t0 = time.time()
    for s, photo in pairs:
        direct = est.predict_arrays(square_resize(read_image(s.path), est.cache_size)[None]).estimate[0]
        img = np.asarray(read_image(photo))
        if not args.originals:
            img = np.pad(img, ((args.pad, args.pad), (args.pad, args.pad), (0, 0)), mode="reflect")
        faces = predictor.predict(img)
        if not faces:
            missed += 1
            continue
        own.append(direct)
        piped.append(faces[0].value)
        truth.append(s.label)
    metrics = {"mae": mae, "rmse": rmse, "pearson": pearson} if est.task == "beauty" else {"mae": mae}
    out = {"model": args.model, "dataset": args.dataset, "split": args.split, "photos": "originals" if args.originals else "padded crops",
           "images": len(pairs), "no_face_found": missed, "compared": len(truth)}
    for name, fn in metrics.items():
        a, b = float(fn(own, truth)), float(fn(piped, truth))
        out.update({f"{name}_dataset_crops": round(a, 4), f"{name}_photo_pipeline": round(b, 4), f"{name}_difference": round(b - a, 4)})
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
