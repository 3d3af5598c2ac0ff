"""Give a shipped beauty model its percentiles: the quantiles (0, 1, ..., 100 %) of its own
estimates (with the model's own flip-TTA setting) on its training faces, written into its model card as
``reference_estimates``. ``dldl predict``, ``dldl.predict`` and ``dldl serve`` then report each
face's ``percentile`` among those faces, which reads more easily than "6.1 of 10".

    python experiments/reference_quantiles.py mobilenet_v2-mebeauty --dataset mebeauty --root ../shared/data/mebeauty --split train

The model's own estimates, not the raters' scores, are the reference: a model pulls its estimates
towards the mean, and a percentile among its own estimates undoes that compression.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

import dldl
from dldl.assets import MODELS_DIR
from dldl.files import atomic_path
from dldl.data.cache import load_cached
from dldl.data.datasets import load_dataset
from dldl.errors import run_script


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a shipped model name")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--split", default="train")
    a = ap.parse_args(argv)
    card_path = MODELS_DIR / f"{a.model}.json"
    card = json.loads(card_path.read_text())
    est = dldl.load(a.model)
    samples = load_dataset(a.dataset, a.root, a.split)
    images = load_cached(samples, est.cache_size, None, 1, template=est.template)
    estimates = est.predict_arrays(images).estimate
    q = np.quantile(estimates, np.linspace(0, 1, 101))
    card["reference_estimates"] = {
        "what": "quantiles 0..100 % of this model's estimates (flip TTA as the model runs it: its spec's tta_flip) on its training faces; a face's percentile is read from them",
        "dataset": a.dataset, "split": a.split, "count": int(len(estimates)),
        "command": "python experiments/reference_quantiles.py " + " ".join(argv or sys.argv[1:]),
        "quantiles": [round(float(v), 4) for v in q]}
    with atomic_path(card_path) as tmp:
        tmp.write_text(json.dumps(card, indent=1) + "\n")
    print(f"{a.model}: {len(estimates)} faces of {a.dataset} {a.split}; median estimate {q[50]:.3f}, 5-95 % {q[5]:.3f}-{q[95]:.3f}")
    return 0


if __name__ == "__main__":
    run_script(main)
