"""Does a beauty model hold on another dataset? Pearson and Spearman of each model's estimates on
each test set, in-domain and across (the scales differ: SCUT-FBP5500 1-5, MEBeauty 1-10, so only
correlations are compared).

    python experiments/beauty_cross.py [--models mobilenet_v2-scut5500 mobilenet_v2-mebeauty] [--json out.json]

Test sets: SCUT-FBP5500's 60/40 test split (its portraits detected and aligned to each model's
template, as ``dldl eval`` and ``dldl predict`` do), MEBeauty's test split as the authors' crops,
and the same MEBeauty test faces as their in-the-wild original photos through the photo pipeline
(detected, the largest face aligned to the model's template). Flip TTA on. Sets whose folder is
absent are skipped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

import dldl
from dldl.data.cache import load_cached
from dldl.data.datasets import load_dataset
from dldl.errors import run_script

REPO = Path(__file__).resolve().parents[1]
SETS = {  # name -> (dataset, root, split, reader options)
    "SCUT-FBP5500 test (60/40)": ("scut-fbp5500", REPO / "data_external" / "scut5500", "test", {}),
    "MEBeauty test, crops": ("mebeauty", REPO.parent / "shared" / "data" / "mebeauty", "test", {}),
    "MEBeauty test, original photos": ("mebeauty", REPO.parent / "shared" / "data" / "mebeauty", "test", {"image": "original"}),
}


def correlations(model: str, dataset: str, root: Path, split: str, options: dict) -> dict:
    """Pearson and Spearman of ``model``'s estimates against the set's mean scores."""
    est = dldl.load(model)
    samples = load_dataset(dataset, root, split, **options)
    images = load_cached(samples, est.cache_size, None, 1, template=est.template)
    pred = est.predict_arrays(images).estimate
    truth = np.array([s.label for s in samples.samples], dtype=np.float64)
    return {"count": len(truth), "pearson": float(stats.pearsonr(pred, truth)[0]),
            "spearman": float(stats.spearmanr(pred, truth)[0])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["mobilenet_v2-scut5500", "mobilenet_v2-mebeauty"])
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    sets = {k: v for k, v in SETS.items() if v[1].exists()}
    result = {m: {name: correlations(m, *spec) for name, spec in sets.items()} for m in a.models}
    print("| model | " + " | ".join(f"{s}: Pearson / Spearman" for s in sets) + " |")
    print("|---|" + "---|" * len(sets))
    for m, row in result.items():
        print(f"| {m} | " + " | ".join(f"{r['pearson']:.3f} / {r['spearman']:.3f} ({r['count']})" for r in row.values()) + " |")
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    run_script(main)
