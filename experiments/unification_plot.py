"""The paper's unification on trained models: the label distribution a ranking (OR-CNN) model
implies, next to a DLDL model's, for a few test faces.

    python experiments/unification_plot.py runs/ablation/ranking/best.pt runs/ablation/dldl/best.pt \
        --root ../shared/data/utkface --split coral_test --out docs/img/unification.png
"""

from __future__ import annotations

import argparse

import numpy as np

from dldl.data.images import load_face
from dldl.data.datasets import load_dataset
from dldl.plots import plot_distributions
from dldl.runtime import Estimator
from dldl.errors import run_script


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ranking")
    ap.add_argument("dldl")
    ap.add_argument("--root", required=True)
    ap.add_argument("--split", default="coral_test")
    ap.add_argument("--index", type=int, default=0, help="which test face")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    ranking, dldl = Estimator.from_checkpoint(args.ranking), Estimator.from_checkpoint(args.dldl)
    sample = load_dataset("utkface", args.root, args.split).samples[args.index]
    face = load_face(sample.path, ranking.cache_size)[None]
    curves = {f"ranking (implied), E={ranking.predict_arrays(face).estimate[0]:.1f}": ranking.predict_arrays(face).distribution[0],
              f"DLDL, E={dldl.predict_arrays(face).estimate[0]:.1f}": dldl.predict_arrays(face).distribution[0]}
    plot_distributions(curves, ranking.labels.values(), args.out, true=sample.label,
                       title=f"{sample.path.name}: true age {sample.label:g}")
    print(args.out, {k: float(np.round(v.max(), 3)) for k, v in curves.items()})


if __name__ == "__main__":
    run_script(main)
