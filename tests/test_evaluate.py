import json

from PIL import Image

from dldl.data.sources import read_manifest_csv
from dldl.evaluate import evaluate
from dldl.inference import Estimator


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
