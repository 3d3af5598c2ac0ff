"""How far the age estimate moves when only the crop moves, and a fixed low-pass at test (issue 39 item 4).

    python experiments/crop_sensitivity.py jitter [--json docs/bench/crop_jitter.json]
    python experiments/crop_sensitivity.py lowpass [--json docs/bench/lowpass_test_time.json]
    python experiments/crop_sensitivity.py views [--set four|two] [--json docs/bench/crop_views.json]

``jitter``: on 300 photos of All-Age-Faces val (originals) and Adience (seed 0, as benchmarks/generalization.py
draws them), the mean absolute change of ``mobilenet_v2-age``'s estimate (flip TTA) when the same photo is
detected at its working side instead of its coarse side (photos where the two differ), when each landmark is
moved by N(0, 1 px), and when one view is read instead of the flip average.

``lowpass``: the same model with each 108 px crop blurred (Gaussian sigma 0.6 or 1.0 px) before it, on
All-Age-Faces val, FG-NET and Adience: the scores of benchmarks/generalization.py, and the change of the
estimate after a sigma 1.5 blur or a 1/3 downscale of the photo (its ``--degrade``).

``views``: test-time views at other crop scales. The model reads the centre 0.9 of the 108 px crop (``EVAL_CROP``)
and its mirror image; ``Views`` averages the distributions of the centre ``f`` of the crop, each with its mirror,
for several ``f`` (1.0: the whole crop, zoomed out; 0.8: zoomed in). On All-Age-Faces val, FG-NET, Adience and
IMDB-WIKI: the scores, the held-out mean of benchmarks/generalization.py (its decision error per set) and the
change of the estimate under ``--degrade``'s blur and downscale.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import generalization as G  # noqa: E402

import dldl  # noqa: E402
from dldl.data.images import read_image  # noqa: E402
from dldl.data.preprocess import eval_transform  # noqa: E402
from dldl.faces import Face, aligned_crop, get_detector  # noqa: E402


class LowPass:
    """An estimator whose crops are blurred by ``sigma`` px before the model; everything else is ``est``'s."""

    def __init__(self, est, sigma: float) -> None:
        self.est, self.sigma = est, sigma

    def __getattr__(self, name):
        return getattr(self.est, name)

    def predict_arrays(self, crops: np.ndarray, tta_flip: bool | None = None):
        blurred = [np.asarray(Image.fromarray(c).filter(ImageFilter.GaussianBlur(self.sigma))) for c in crops]
        return self.est.predict_arrays(np.stack(blurred), tta_flip)


class Views:
    """An estimator that averages the distributions of its ``views``: ``(f, mirrored)`` pairs, the centre ``f``
    of each crop, mirrored or not; a bare ``f`` stands for both. ``(EVAL_CROP,)`` is ``est`` itself; everything
    else is ``est``'s."""

    def __init__(self, est, views: tuple) -> None:
        self.est = est
        self.views = [v for f in views for v in ([f] if isinstance(f, tuple) else [(f, False), (f, True)])]

    def __getattr__(self, name):
        return getattr(self.est, name)

    def view(self, crops: np.ndarray, f: float) -> np.ndarray:
        """``(N, 3, s, s)`` network input of the centre ``f`` of each ``(N, S, S, 3)`` crop (the eval transform at ``crop=f``)."""
        return eval_transform(crops, self.est.input_size, crop=f)

    def predict_arrays(self, crops: np.ndarray, tta_flip: bool | None = None):
        from dldl.runtime import Prediction

        dists = []
        for f, mirrored in self.views:
            x = self.view(crops, f)
            dists.append(self.est._network(np.ascontiguousarray(x[..., ::-1]) if mirrored else x)[1])
        dist = np.mean(dists, 0)
        return Prediction(dist @ self.est.labels.values(), dist, self.est.labels)


def jitter(est, det) -> dict:
    out = {}
    rng = np.random.default_rng(0)
    for name, samples in G.drawn_sets(G.DATA, G.DEGRADE_SETS, 300):
        moved = {"redetect_480_vs_320": [], "landmarks_1px": [], "flip_view": []}
        for s in samples:
            image = np.asarray(read_image(s.path))
            long_side = max(image.shape[:2])
            coarse = det._search(image, det.coarse_side(long_side), det.min_score)
            fine = det._search(image, det.working_side(long_side), det.min_score)
            if not coarse or not fine:
                continue
            face = coarse[0]
            nudged = Face(face.box, face.landmarks + rng.normal(0, 1.0, face.landmarks.shape), face.score)
            crops = [aligned_crop(image, f, est.template, est.cache_size) for f in (face, fine[0], nudged)]
            e = est.predict_arrays(np.stack(crops)).estimate
            one_view = est.predict_arrays(crops[0][None], tta_flip=False).estimate[0]
            if det.coarse_side(long_side) < det.working_side(long_side):
                moved["redetect_480_vs_320"].append(abs(e[1] - e[0]))
            moved["landmarks_1px"].append(abs(e[2] - e[0]))
            moved["flip_view"].append(abs(one_view - e[0]))
        out[name] = {k: (len(v), float(np.mean(v)) if v else None) for k, v in moved.items()}
        print(name, out[name], flush=True)
    return out


def lowpass(est, det) -> dict:
    models = {"base": est, **{f"lp{s}": LowPass(est, s) for s in (0.6, 1.0)}}
    out = {}
    for name, samples in G.drawn_sets(G.DATA, ("aaf val", "fgnet all", "adience all"), 300):
        base = G.run_models(models, samples, det)
        keep = ("mae", "mae_interval", "mae_person", "mae_interval_person", "bias")
        row = {k: {"score": {m: v for m, v in G.score(r, samples).items() if m in keep}} for k, r in base.items()}
        for how in ("blur1.5", "down3"):
            for k, r in G.run_models(models, samples, det, how).items():
                row[k][how] = G.shift(base[k], r)
        out[name] = row
        print(name, json.dumps(row), flush=True)
    return out


VIEWS = {
    "four": {"0.9 + 1.0": (0.9, 1.0), "0.8 + 0.9 + 1.0": (0.8, 0.9, 1.0), "1.0": (1.0,), "0.8": (0.8,)},
    "two": {"0.9, 1.0 mirrored": ((0.9, False), (1.0, True)), "0.85, 0.95 mirrored": ((0.85, False), (0.95, True))},
}
"""``views --set``: the views compared with the shipped flip average. ``four``: scales each read with its mirror
(4-6 network runs a face); ``two``: two runs a face, as many as today, a second scale in place of the mirror's."""
VIEW_SETS = ("aaf val", "fgnet all", "adience all", "imdbwiki3 all")
"""The sets of ``views``: All-Age-Faces val (trained on) and the three sources no dldl model trains on."""


def views(est, det, which: str = "four", seen: list[str] | None = None, names: tuple[str, ...] = VIEW_SETS,
          per_set: int = 300, degrade: tuple[str, ...] = G.DEGRADE_SETS) -> dict:
    models = {"flip (shipped)": est, **{k: Views(est, v) for k, v in VIEWS[which].items()}}
    out: dict = {k: {"sets": {}} for k in models}
    for name, samples in G.drawn_sets(G.DATA, names, per_set):
        base = G.run_models(models, samples, det)
        for k, r in base.items():
            out[k]["sets"][name] = {m: v for m, v in G.score(r, samples).items() if m != "bands"}
        if name in degrade:
            for how in ("blur1.5", "down3"):
                for k, r in G.run_models(models, samples, det, how).items():
                    out[k]["sets"][name][how] = G.shift(base[k], r)
        print(name, {k: G.decision_error(v["sets"][name]) for k, v in out.items()}, flush=True)
    for k, v in out.items():
        v["held_out_mean"] = G.held_out_mean(v["sets"], seen)
        print(k, "held-out mean", v["held_out_mean"], flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=("jitter", "lowpass", "views"))
    ap.add_argument("--set", default="four", choices=sorted(VIEWS), help="views: which views (VIEWS)")
    ap.add_argument("--model", default="mobilenet_v2-age", help="views: a shipped name or a checkpoint")
    ap.add_argument("--sets", nargs="+", default=list(VIEW_SETS), help="views: the photo sets (generalization.py's names)")
    ap.add_argument("--per-set", type=int, default=300, help="views: photos a set (0: all)")
    ap.add_argument("--degrade-sets", nargs="*", default=list(G.DEGRADE_SETS), help="views: sets also run blurred and downscaled")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    est, det = dldl.load(args.model), get_detector()
    if args.part == "views":
        out = views(est, det, args.set, G.model_sources(args.model)["seen"], tuple(args.sets), args.per_set, tuple(args.degrade_sets))
    else:
        out = {"jitter": jitter, "lowpass": lowpass}[args.part](est, det)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
