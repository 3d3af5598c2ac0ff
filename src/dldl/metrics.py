"""Evaluation metrics for age and attractiveness estimation.

All functions take 1-D arrays/tensors of predictions and ground truth of equal shape ``(N,)`` and
return Python floats (or dicts of floats), so they serve both the training loop and reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from torch import Tensor

ArrayLike = Tensor | np.ndarray | Sequence[float]


def _pair(pred: ArrayLike, true: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred.detach().cpu() if isinstance(pred, Tensor) else pred, dtype=np.float64)
    t = np.asarray(true.detach().cpu() if isinstance(true, Tensor) else true, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 1:
        raise ValueError(f"pred and true must both have shape (N,), got {p.shape} and {t.shape}")
    if p.size == 0:
        raise ValueError("metrics need at least one sample")
    return p, t


def mae(pred: ArrayLike, true: ArrayLike) -> float:
    """Mean absolute error.

    >>> mae([1.0, 2.0], [2.0, 4.0])
    1.5
    """
    p, t = _pair(pred, true)
    return float(np.abs(p - t).mean())


def rmse(pred: ArrayLike, true: ArrayLike) -> float:
    """Root mean squared error.

    >>> rmse([0.0, 0.0], [3.0, 4.0]) == math.sqrt(12.5)
    True
    """
    p, t = _pair(pred, true)
    return float(np.sqrt(((p - t) ** 2).mean()))


def pearson(pred: ArrayLike, true: ArrayLike) -> float:
    """Pearson correlation coefficient (``nan`` if either side is constant).

    >>> round(pearson([1.0, 2.0, 3.0], [2.0, 4.0, 7.0]), 4)
    0.9934
    """
    p, t = _pair(pred, true)
    pc, tc = p - p.mean(), t - t.mean()
    denom = math.sqrt(float((pc**2).sum()) * float((tc**2).sum()))
    return float((pc * tc).sum() / denom) if denom > 0 else float("nan")


def epsilon_error(pred: ArrayLike, mean: ArrayLike, sigma: ArrayLike) -> float:
    """ChaLearn's epsilon-error ``mean(1 - exp(-(x - mu)^2 / (2 sigma^2)))`` with per-image sigma.

    >>> epsilon_error([10.0], [10.0], [3.0])
    0.0
    >>> round(epsilon_error([13.0], [10.0], [3.0]), 4)
    0.3935
    """
    p, m = _pair(pred, mean)
    _, s = _pair(pred, sigma)
    if (s <= 0).any():
        raise ValueError("epsilon-error needs sigma > 0 for every image")
    return float((1.0 - np.exp(-((p - m) ** 2) / (2.0 * s**2))).mean())


def cumulative_score(pred: ArrayLike, true: ArrayLike, theta: float) -> float:
    """CS(theta): the fraction of images with ``|pred - true| <= theta``.

    >>> cumulative_score([1.0, 5.0, 9.0], [1.0, 1.0, 1.0], 4)
    0.6666666666666666
    """
    p, t = _pair(pred, true)
    return float((np.abs(p - t) <= theta + 1e-9).mean())


def cs_curve(pred: ArrayLike, true: ArrayLike, max_theta: int = 10) -> dict[int, float]:
    """CS(theta) for ``theta = 0..max_theta``.

    >>> cs_curve([1.0, 3.0], [1.0, 1.0], 2)
    {0: 0.5, 1: 0.5, 2: 1.0}
    """
    return {theta: cumulative_score(pred, true, theta) for theta in range(max_theta + 1)}


def mae_by_group(pred: ArrayLike, true: ArrayLike, width: float = 10.0, start: float = 0.0) -> dict[str, dict[str, float]]:
    """MAE per label group ``[start + i*width, start + (i+1)*width)`` (e.g. age decades).

    Returns ``{"20-29": {"mae": ..., "count": ...}, ...}`` for the non-empty groups.

    >>> mae_by_group([21.0, 25.0, 33.0], [20.0, 20.0, 30.0])
    {'20-29': {'mae': 3.0, 'count': 2}, '30-39': {'mae': 3.0, 'count': 1}}
    """
    p, t = _pair(pred, true)
    groups = np.floor((t - start) / width).astype(int)
    out: dict[str, dict[str, float]] = {}
    for g in sorted(set(groups.tolist())):
        lo = start + g * width
        mask = groups == g
        name = f"{lo:g}-{lo + width - 1:g}" if float(width).is_integer() else f"{lo:g}-{lo + width:g}"
        out[name] = {"mae": float(np.abs(p[mask] - t[mask]).mean()), "count": int(mask.sum())}
    return out


def regression_report(pred: ArrayLike, true: ArrayLike, sigma: ArrayLike | None = None, group_width: float = 10.0) -> dict:
    """All metrics for one set of predictions: mae, rmse, pearson, cs (0..10), cs5,
    mae_by_group, and epsilon_error when per-image ``sigma`` is given.

    >>> sorted(regression_report([1.0, 2.0], [1.0, 3.0]))
    ['count', 'cs', 'cs5', 'mae', 'mae_by_group', 'pearson', 'rmse']
    """
    report = {
        "count": len(_pair(pred, true)[0]),
        "mae": mae(pred, true),
        "rmse": rmse(pred, true),
        "pearson": pearson(pred, true),
        "cs5": cumulative_score(pred, true, 5),
        "cs": cs_curve(pred, true, 10),
        "mae_by_group": mae_by_group(pred, true, group_width),
    }
    if sigma is not None:
        report["epsilon_error"] = epsilon_error(pred, true, sigma)
    return report
