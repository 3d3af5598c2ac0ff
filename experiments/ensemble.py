"""How far would averaging several beauty models go? Pearson of each model, and of the mean of
their estimates, on the MEBeauty val and test crops and the SCUT-FBP5500 60/40 test portraits.

A ceiling for what one network could learn from the others (distillation, weight soups); N
networks cost N times one. Each model runs from one view (no flip TTA), on the crops of its own
template, as ``dldl eval`` reads the sets. ``--out FILE`` also writes the models as one ensemble
checkpoint (:func:`dldl.release.combine`: the mean of their distributions, whose estimate is the
mean of theirs), to calibrate and evaluate; an existing FILE is never replaced. To ship an
ensemble, ``dldl release RUN RUN ... --name NAME --card CARD.json`` calibrates the members,
combines, calibrates and installs it in one go.

``--subsets`` also reports the mean of every smaller group of two or more, to see which pair carries the gain.

    python experiments/ensemble.py runs/beauty_joint128/calibrated.pt mobilenet_v2-beauty --json FILE [--out FILE.pt] [--subsets]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from dldl.data.cache import load_cached
from dldl.data.datasets import load_dataset
from dldl.errors import run_script
from dldl.hub import resolve
from dldl.metrics import pearson
from dldl.release import check_new, combine, save_new
from dldl.runtime import Estimator

SETS = [("mebeauty", "../shared/data/mebeauty", "val"), ("mebeauty", "../shared/data/mebeauty", "test"),
        ("scut-fbp5500", "data_external/scut5500", "test")]


def subset_pearsons(estimates: dict[str, np.ndarray], truth: np.ndarray, smallest: int = 2) -> dict[str, float]:
    """Pearson of the mean estimate of each group of ``smallest`` or more members, all but the whole
    set, keyed by the members' names joined with `` + ``. ``estimates`` maps names to ``(N,)`` arrays;
    ``truth`` is ``(N,)``.

    >>> t = np.array([1., 2., 3., 4.])
    >>> subset_pearsons({"a": t, "b": t + 1, "c": t ** 2}, t)
    {'a + b': 1.0, 'a + c': 0.9891, 'b + c': 0.9891}
    >>> sorted(subset_pearsons({"a": t, "b": t, "c": t}, t))
    ['a + b', 'a + c', 'b + c']
    >>> subset_pearsons({"a": t, "b": t[:3]}, t)
    Traceback (most recent call last):
    ValueError: estimates of b have shape (3,), truth has shape (4,)
    """
    for name, e in estimates.items():
        if e.shape != truth.shape:
            raise ValueError(f"estimates of {name} have shape {e.shape}, truth has shape {truth.shape}")
    names = list(estimates)
    return {" + ".join(group): round(pearson(np.mean([estimates[m] for m in group], 0), truth), 4)
            for k in range(smallest, len(names)) for group in itertools.combinations(names, k)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="checkpoints or shipped names of beauty models on one scale")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--out", type=Path, help="also write the models as one ensemble checkpoint here")
    ap.add_argument("--subsets", action="store_true", help="also the mean of every smaller group of two or more models")
    a = ap.parse_args()
    if a.out is not None:
        check_new(a.out)
        print(f"wrote {save_new(a.out, combine(a.models)[0])}")
    estimators = {m: Estimator.from_checkpoint(resolve(m).path) for m in a.models}
    out: dict[str, dict[str, float]] = {}
    for name, root, split in SETS:
        samples = load_dataset(name, root, split)
        truth = np.array([s.label for s in samples.samples])
        estimates = []
        for m, est in estimators.items():
            images = load_cached(samples, est.cache_size, None, 1, template=est.template)
            estimates.append(est.predict_arrays(images, tta_flip=False).estimate)
        row = {m: round(pearson(e, truth), 4) for m, e in zip(a.models, estimates)}
        if a.subsets:
            row.update(subset_pearsons(dict(zip(a.models, estimates)), truth))
        row["mean of the estimates"] = round(pearson(np.mean(estimates, 0), truth), 4)
        out[f"{name} {split} ({len(truth)})"] = row
        print(f"{name} {split}: " + ", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    run_script(main)
