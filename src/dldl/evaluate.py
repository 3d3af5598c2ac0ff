"""Evaluation: a model on a dataset split -> a JSON-ready report (+ optional PNG plots).

The report's top-level metrics use horizontal-flip test-time augmentation (the paper's protocol);
``report["no_flip"]`` holds the same metrics without it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from dldl.data.cache import load_cached
from dldl.data.samples import SampleList
from dldl.metrics import regression_report
from dldl.predict import Estimator, Prediction


def prediction_report(pred: Prediction, samples: SampleList, task: str = "age") -> dict[str, Any]:
    """All metrics of ``pred`` against the labels of ``samples`` (epsilon-error where every sample
    has a sigma; MAE groups of 10 years for age, 1 point for beauty)."""
    true = np.array([s.label for s in samples.samples])
    sig = [s.sigma for s in samples.samples]
    return regression_report(pred.estimate, true, sig if all(v for v in sig) else None, 10.0 if task == "age" else 1.0)


def evaluate(
    estimator: Estimator,
    samples: SampleList,
    cache_dir: str | Path | None = None,
    plots_dir: str | Path | None = None,
    workers: int = 2,
    progress: bool = False,
) -> dict[str, Any]:
    """Metrics of ``estimator`` on ``samples``, with and without flip TTA.

    Returns ``{"mae", "rmse", "pearson", "cs5", "cs", "mae_by_group", ["epsilon_error"], "count",
    "no_flip": {...}, "seconds"}``; writes ``cs_curve.png``, ``mae_by_group.png``,
    ``pred_vs_true.png`` and ``faces.png`` into ``plots_dir`` when given.
    """
    t0 = time.time()
    images = load_cached(samples, estimator.cache_size, cache_dir, workers, progress=progress)
    pred = estimator.predict_arrays(images, tta_flip=True)
    report = prediction_report(pred, samples, estimator.task)
    report["no_flip"] = prediction_report(estimator.predict_arrays(images, tta_flip=False), samples, estimator.task)
    report["seconds"] = round(time.time() - t0, 2)
    if plots_dir is not None:
        report["plots"] = [str(p) for p in write_plots(estimator, pred, samples, images, Path(plots_dir), report)]
    return report


def write_plots(estimator: Estimator, pred: Prediction, samples: SampleList, images: np.ndarray, out: Path,
                report: dict[str, Any]) -> list[Path]:
    """The evaluation figures for one split; returns the written paths."""
    from dldl import plots

    true = np.array([s.label for s in samples.samples])
    name = estimator.task
    paths = [
        plots.plot_cs_curves({samples.name: report["cs"]}, out / "cs_curve.png"),
        plots.plot_mae_by_group(report["mae_by_group"], out / "mae_by_group.png", title=f"MAE by {name} group"),
        plots.plot_pred_vs_true(pred.estimate, true, out / "pred_vs_true.png", label_name=name),
    ]
    if pred.distribution is not None:
        pick = np.linspace(0, len(samples) - 1, num=min(8, len(samples))).astype(int)
        paths.append(plots.plot_face_distributions(images[pick], pred.distribution[pick], estimator.labels.values().numpy(),
                                                   out / "faces.png", true=true[pick], pred=pred.estimate[pick]))
    return paths
