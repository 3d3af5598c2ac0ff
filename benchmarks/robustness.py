"""Does image quality move the age estimate? The mean shift of each model's estimate under each
corruption, on UTKFace test chips.

Each chip (200x200, as released) is corrupted at its own resolution, then goes the model's usual
way (resize to the model's crop, centre crop, flip TTA). The shift is ``mean(estimate on the
corrupted chip - estimate on the clean chip)`` in years; the aim is ``|shift| <= 1`` for each.
Corruptions: Gaussian blur (sigma 2 px), JPEG at quality 20, down-and-up scaling to 1/3, Gaussian
noise (std 8 grey levels), unsharp masking (amount 1.5), darker (gamma 1.6), brighter (gamma 0.6)
and greyscale (as a scanned black-and-white photo).

    python benchmarks/robustness.py --models age_wild=runs/age_wild/best.pt mobilenet_v2-utkface \\
        --limit 500 --json docs/bench/robustness.json
"""

from __future__ import annotations

import argparse
import io
import random
import sys
from collections.abc import Callable
from pathlib import Path

import benchlib
import numpy as np
from PIL import Image, ImageFilter

import dldl
from dldl.data.datasets import load_dataset
from dldl.data.images import read_image, square_resize


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _gamma(img: Image.Image, g: float) -> Image.Image:
    a = np.asarray(img, dtype=np.float64) / 255.0
    return Image.fromarray(np.clip(np.rint(255.0 * a ** g), 0, 255).astype(np.uint8))


def _noise(img: Image.Image, std: float) -> Image.Image:
    a = np.asarray(img, dtype=np.float64) + np.random.default_rng(0).normal(0, std, (img.height, img.width, 3))
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))


def _rescale(img: Image.Image, f: float) -> Image.Image:
    small = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.Resampling.BILINEAR)
    return small.resize(img.size, Image.Resampling.BILINEAR)


CORRUPTIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "blur_sigma2": lambda im: im.filter(ImageFilter.GaussianBlur(2)),
    "jpeg_q20": lambda im: _jpeg(im, 20),
    "downup_1/3": lambda im: _rescale(im, 1 / 3),
    "noise_std8": lambda im: _noise(im, 8.0),
    "sharpen_1.5": lambda im: im.filter(ImageFilter.UnsharpMask(radius=2, percent=150, threshold=0)),
    "darker_gamma1.6": lambda im: _gamma(im, 1.6),
    "brighter_gamma0.6": lambda im: _gamma(im, 0.6),
    "greyscale": lambda im: im.convert("L").convert("RGB"),  # FG-NET: 175 of 1,002 photos are greyscale scans
}


def shifts(est, images: list[Image.Image]) -> dict[str, float]:
    """Mean estimate shift (years) of ``est`` under each corruption of ``images``."""
    def predict(ims: list[Image.Image]) -> np.ndarray:
        return est.predict_arrays(np.stack([square_resize(im, est.cache_size) for im in ims])).estimate

    clean = predict(images)
    return {name: float(np.mean(predict([fn(im) for im in images]) - clean)) for name, fn in CORRUPTIONS.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["mobilenet_v2-utkface"], help="NAME=PATH or a shipped name")
    ap.add_argument("--root", type=Path, default=benchlib.SHARED_DATA / "utkface")
    ap.add_argument("--split", default="full_test")
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    samples = load_dataset("utkface", args.root, args.split).samples
    samples = random.Random(0).sample(samples, min(args.limit, len(samples)))
    images = [read_image(s.path) for s in samples]
    out = {}
    for m in args.models:
        name, _, path = m.partition("=")
        out[name] = shifts(dldl.load(path or name), images)
        print(name, {k: round(v, 2) for k, v in out[name].items()}, file=sys.stderr)
    names = list(CORRUPTIONS)
    print(benchlib.md_table(["model", *names, "max |shift|"],
                            [[k, *(f"{v[c]:+.2f}" for c in names), f"{max(abs(x) for x in v.values()):.2f}"] for k, v in out.items()]))
    if args.json:
        benchlib.write_json(args.json, {"machine": benchlib.machine(), "split": args.split, "images": len(images),
                                        "command": "python benchmarks/robustness.py " + " ".join(argv or sys.argv[1:]),
                                        "models": out})


if __name__ == "__main__":
    main()
