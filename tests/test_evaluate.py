import json
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from dldl.data.samples import Sample
from dldl.data.sources import read_manifest_csv
from dldl.evaluate import evaluate, temperature_fit_rows
from dldl.runtime import Estimator


def test_report_and_plots(tiny_run, tmp_path):
    est = Estimator.from_checkpoint(tiny_run / "run" / "best.pt")
    samples = read_manifest_csv(tiny_run / "data" / "manifest.csv")
    report = evaluate(est, samples, tmp_path / "cache", tmp_path / "plots", workers=1)
    assert report["count"] == len(samples)
    for key in ("mae", "rmse", "pearson", "cs5", "cs", "mae_by_group"):
        assert key in report and key in report["no_flip"]
    assert report["mae"] >= 0 and 0 <= report["cs5"] <= 1
    json.dumps(report)  # JSON-ready
    names = sorted(p.split("/")[-1] for p in report["plots"])
    assert names == ["cs_curve.png", "faces.png", "mae_by_group.png", "pred_vs_true.png"]
    for p in report["plots"]:
        Image.open(p).verify()


def test_coverage_counts_within_half_a_label_step():
    """A truth just outside the 90% interval is covered only within half a label step: 0.5 year
    for ages, 0.025 point on a 0.05-step beauty scale (it was 0.5 for every scale)."""
    from dldl.data.samples import SampleList
    from dldl.evaluate import prediction_report
    from dldl.runtime import Prediction
    from dldl.labels import LabelSet

    labels = LabelSet(1.0, 5.0, 0.05)
    p = np.zeros((1, labels.num_labels))
    p[0, [42, 50]] = 0.5  # mass at 3.1 and 3.5
    samples = SampleList("x", [Sample(Path("a.jpg"), 3.0)])
    report = prediction_report(Prediction(np.array([3.3]), p, labels), samples, "beauty")
    assert report["coverage_90"] == 0.0
    near = SampleList("x", [Sample(Path("a.jpg"), 3.08)])
    assert prediction_report(Prediction(np.array([3.3]), p, labels), near, "beauty")["coverage_90"] == 1.0


@given(st.lists(st.integers(0, 5), max_size=20), st.sets(st.integers(0, 5)))
def test_temperature_fit_rows_counts_each_image_once_and_prefers_exact_labels(images, grouped):
    samples = [Sample(Path(f"{i}.jpg"), 30.0, interval=(25.0, 35.0) if i in grouped else None) for i in images]
    fit = temperature_fit_rows(samples)
    chosen = [i for i, f in zip(images, fit) if f]
    assert fit.shape == (len(samples),)
    assert len(set(chosen)) == len(chosen)  # no image twice
    exact = set(images) - grouped
    assert set(chosen) == (exact or set(images))
