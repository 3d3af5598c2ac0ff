"""Label sets and label distributions (the targets of DLDL / DLDL-v2).

A *label set* is the discrete, evenly spaced set of values ``l_1 < ... < l_K`` the network
predicts a distribution over: ages 0..100 step 1, beauty 1..5 step 0.1, or any range/step.
A *label distribution* is a ``(N, K)`` tensor whose rows sum to 1.

``LabelSet`` and the read-outs of a predicted distribution (:func:`quantile`) are numpy; the
training targets are torch, imported on first use (:mod:`dldl.lazy`), so the photo pipeline
runs without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dldl.lazy import lazy_import

if TYPE_CHECKING:
    from torch import Tensor

torch = lazy_import("torch")

AGE_RANGE = (0.0, 100.0, 1.0)


@dataclass(frozen=True)
class LabelSet:
    """Evenly spaced labels ``start, start + step, ..., stop`` (``stop`` included).

    >>> LabelSet(0, 100, 1).num_labels
    101
    >>> LabelSet(1, 5, 0.1).values()[:3]
    array([1. , 1.1, 1.2])
    """

    start: float
    stop: float
    step: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start) and math.isfinite(self.stop) and math.isfinite(self.step)):
            raise ValueError(f"label set needs finite start/stop/step, got {self}")
        if self.step <= 0:
            raise ValueError(f"label set step must be > 0, got {self.step}")
        if self.stop < self.start:
            raise ValueError(f"label set stop {self.stop} is below start {self.start}")
        n = (self.stop - self.start) / self.step
        if abs(n - round(n)) > 1e-6:
            raise ValueError(f"({self.stop} - {self.start}) is not a multiple of step {self.step}")

    @property
    def num_labels(self) -> int:
        return int(round((self.stop - self.start) / self.step)) + 1

    def values(self) -> np.ndarray:
        """The ``(K,)`` float64 label values (``torch.as_tensor(labels.values(), ...)`` for a tensor)."""
        return self.start + np.arange(self.num_labels, dtype=np.float64) * self.step

    def contains(self, y: float) -> bool:
        """Whether ``y`` lies inside ``[start, stop]`` (with a small tolerance)."""
        tol = 1e-6 * max(1.0, self.step)
        return self.start - tol <= y <= self.stop + tol

    def nearest_index(self, y: Tensor) -> Tensor:
        """Index of the label nearest to each value of ``y`` (clamped to the set), shape of ``y``.

        >>> LabelSet(0, 10, 2).nearest_index(torch.tensor([0.9, 1.1, 42.0]))
        tensor([0, 1, 5])
        """
        idx = torch.round((y.to(torch.float64) - self.start) / self.step)
        return idx.clamp(0, self.num_labels - 1).long()

    def to_dict(self) -> dict[str, float]:
        return {"start": self.start, "stop": self.stop, "step": self.step}

    @classmethod
    def parse(cls, text: str) -> "LabelSet":
        """Parse ``"start:stop:step"`` (or ``"start:stop"``, step 1).

        >>> LabelSet.parse("1:5:0.1").num_labels
        41
        """
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"label set must look like start:stop[:step], got {text!r}")
        try:
            nums = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"label set must look like start:stop[:step], got {text!r}") from None
        return cls(*nums)


def _check_1d(name: str, x: Tensor) -> None:
    if x.dim() != 1:
        raise ValueError(f"{name} must have shape (N,), got {tuple(x.shape)}")


def gaussian_distribution(y: Tensor, sigma: Tensor | float, labels: LabelSet) -> Tensor:
    """Discretised Gaussian label distributions centred on ``y``.

    ``p_k = exp(-(l_k - y)^2 / (2 sigma^2)) / Z`` over the label set. ``sigma`` is a float or a
    per-sample ``(N,)`` tensor. ``sigma == 0`` gives a one-hot on the nearest label (the limit).
    A label outside the set gets the normalised tail of its Gaussian (mass on the nearest end).

    Args:
        y: ``(N,)`` labels.
        sigma: float or ``(N,)`` standard deviations, ``>= 0``.
    Returns:
        ``(N, K)`` float32 distribution, rows sum to 1.

    >>> p = gaussian_distribution(torch.tensor([2.0]), 1.0, LabelSet(0, 4, 1))
    >>> [round(v, 3) for v in p[0].tolist()]
    [0.054, 0.244, 0.403, 0.244, 0.054]
    >>> gaussian_distribution(torch.tensor([2.4]), 0.0, LabelSet(0, 4, 1))
    tensor([[0., 0., 1., 0., 0.]])
    """
    _check_1d("y", y)
    sig = torch.as_tensor(sigma, dtype=torch.float64, device=y.device)
    if sig.dim() == 0:
        sig = sig.expand(y.shape[0])
    if sig.shape != y.shape:
        raise ValueError(f"sigma must have shape {tuple(y.shape)} like y, got {tuple(sig.shape)}")
    if bool((sig < 0).any()) or not bool(torch.isfinite(sig).all()):
        raise ValueError("sigma must be finite and >= 0")
    values = torch.as_tensor(labels.values(), device=y.device)  # (K,)
    diff = values[None, :] - y.to(torch.float64)[:, None]  # (N, K)
    safe = sig.clamp_min(1e-12)[:, None]
    logits = -0.5 * (diff / safe) ** 2
    p = torch.softmax(logits, dim=1)  # normalised, stable even far from the set
    zero = sig == 0
    if bool(zero.any()):
        onehot = torch.zeros_like(p)
        onehot[torch.arange(len(y), device=y.device), labels.nearest_index(y)] = 1.0
        p = torch.where(zero[:, None], onehot, p)
    return p.to(torch.float32)


def interval_distribution(low: Tensor, high: Tensor, sigma: Tensor | float, labels: LabelSet) -> Tensor:
    """Label distributions for truths known only to lie in ``[low, high]`` (age groups).

    The mass is spread evenly over the interval and its edges are softened by a Gaussian of
    ``sigma``: ``p_k ~ Phi((high - l_k) / sigma + h) - Phi((low - l_k) / sigma - h)`` with
    ``h = step / (2 sigma)``, i.e. a uniform density on ``[low - step/2, high + step/2]``
    convolved with ``N(0, sigma^2)``. With ``low == high`` it is (to the discretisation) the
    Gaussian of :func:`gaussian_distribution`; ``sigma == 0`` gives a flat distribution on the
    labels inside the interval.

    Args:
        low, high: ``(N,)`` interval ends, ``low <= high``.
        sigma: float or ``(N,)`` edge softness, ``>= 0``.
    Returns:
        ``(N, K)`` float32 distribution, rows sum to 1.

    >>> p = interval_distribution(torch.tensor([1.0]), torch.tensor([3.0]), 0.0, LabelSet(0, 4, 1))
    >>> [round(v, 3) for v in p[0].tolist()]
    [0.0, 0.333, 0.333, 0.333, 0.0]
    >>> interval_distribution(torch.tensor([1.0]), torch.tensor([3.0, 4.0]), 1.0, LabelSet(0, 4, 1))
    Traceback (most recent call last):
    ...
    ValueError: low and high must have the same shape (N,), got (1,) and (2,)
    """
    _check_1d("low", low)
    if high.shape != low.shape:
        raise ValueError(f"low and high must have the same shape (N,), got {tuple(low.shape)} and {tuple(high.shape)}")
    if bool((high < low).any()):
        raise ValueError("every interval needs low <= high")
    lo, hi = low.to(torch.float64)[:, None], high.to(torch.float64)[:, None]
    sig = torch.as_tensor(sigma, dtype=torch.float64, device=low.device)
    sig = (sig.expand(low.shape[0]) if sig.dim() == 0 else sig)[:, None]
    if sig.shape[0] != low.shape[0] or bool((sig < 0).any()):
        raise ValueError(f"sigma must be >= 0, a float or of shape {tuple(low.shape)}")
    v = torch.as_tensor(labels.values(), device=low.device)[None, :]
    half = labels.step / 2
    inside = ((v >= lo - 1e-9) & (v <= hi + 1e-9)).to(torch.float64)
    soft = sig > 0
    s = sig.clamp_min(1e-12)
    normal = torch.distributions.Normal(torch.zeros((), dtype=torch.float64), torch.ones((), dtype=torch.float64))
    smooth = normal.cdf((hi + half - v) / s) - normal.cdf((lo - half - v) / s)
    p = torch.where(soft, smooth, inside)
    empty = p.sum(1, keepdim=True) <= 0  # an interval between labels, or far outside the set
    if bool(empty.any()):
        near = gaussian_distribution(((low + high) / 2), 0.0, labels).to(torch.float64)
        p = torch.where(empty, near, p)
    return (p / p.sum(1, keepdim=True)).to(torch.float32)


def histogram_distribution(counts: Tensor, bin_values: Tensor, labels: LabelSet) -> Tensor:
    """Empirical label distributions from rater histograms, re-binned onto a label set.

    Each histogram bin's mass goes to the label set by linear interpolation between the two
    nearest labels (mass outside the set goes to the nearest end), so the mean is kept when the
    bins lie inside the set.

    Args:
        counts: ``(N, B)`` non-negative rater counts (or frequencies) per score bin.
        bin_values: ``(B,)`` the score of each bin (e.g. 1..10).
    Returns:
        ``(N, K)`` float32 distribution, rows sum to 1.

    >>> h = torch.tensor([[0., 2., 2.]])
    >>> histogram_distribution(h, torch.tensor([1., 2., 3.]), LabelSet(1, 3, 0.5))
    tensor([[0.0000, 0.0000, 0.5000, 0.0000, 0.5000]])
    """
    if counts.dim() != 2:
        raise ValueError(f"counts must have shape (N, B), got {tuple(counts.shape)}")
    _check_1d("bin_values", bin_values)
    if counts.shape[1] != bin_values.shape[0]:
        raise ValueError(
            f"counts has {counts.shape[1]} bins (shape {tuple(counts.shape)}) but bin_values has "
            f"shape {tuple(bin_values.shape)}"
        )
    c = counts.to(torch.float64)
    if bool((c < 0).any()) or not bool(torch.isfinite(c).all()):
        raise ValueError("histogram counts must be finite and >= 0")
    total = c.sum(dim=1, keepdim=True)
    if bool((total <= 0).any()):
        raise ValueError("every histogram needs at least one rating")
    pos = ((bin_values.to(torch.float64) - labels.start) / labels.step).clamp(0, labels.num_labels - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=labels.num_labels - 1)
    w_hi = pos - lo.to(torch.float64)
    weights = torch.zeros(bin_values.shape[0], labels.num_labels, dtype=torch.float64)  # (B, K)
    rows = torch.arange(bin_values.shape[0])
    weights[rows, lo] += 1 - w_hi
    weights[rows, hi] += w_hi
    return ((c / total) @ weights).to(torch.float32)


def expectation(p: Tensor, labels: LabelSet) -> Tensor:
    """The expected label ``E[p] = sum_k p_k l_k`` of ``(N, K)`` distributions, shape ``(N,)``.

    >>> expectation(torch.tensor([[0.5, 0.0, 0.5]]), LabelSet(0, 2, 1))
    tensor([1.])
    """
    if p.dim() != 2 or p.shape[1] != labels.num_labels:
        raise ValueError(f"p must have shape (N, {labels.num_labels}), got {tuple(p.shape)}")
    return p @ torch.as_tensor(labels.values(), dtype=p.dtype, device=p.device)


def posterior_median(p: np.ndarray, labels: LabelSet) -> np.ndarray:
    """The median label of ``(N, K)`` distributions, shape ``(N,)``: the first label whose
    cumulative probability reaches 0.5.

    >>> posterior_median(np.array([[0.2, 0.2, 0.1, 0.5]]), LabelSet(0, 3, 1))
    array([2.])
    """
    return quantile(p, labels, 0.5)


def quantile(p: np.ndarray, labels: LabelSet, q: float) -> np.ndarray:
    """The ``q``-quantile label of ``(N, K)`` distributions (an array, or a CPU tensor), shape
    ``(N,)``: the first label whose cumulative probability reaches ``q``.

    >>> quantile(np.array([[0.1, 0.8, 0.1]]), LabelSet(0, 2, 1), 0.95)
    array([2.])
    >>> quantile(np.ones((1, 4)) / 4, LabelSet(0, 2, 1), 0.5)
    Traceback (most recent call last):
    ...
    ValueError: p must have shape (N, 3), got (1, 4)
    """
    p = np.asarray(p)
    if p.ndim != 2 or p.shape[1] != labels.num_labels:
        raise ValueError(f"p must have shape (N, {labels.num_labels}), got {tuple(p.shape)}")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    cdf = p.astype(np.float64).cumsum(axis=1)
    idx = np.minimum((cdf < q - 1e-9).sum(axis=1), labels.num_labels - 1)
    return labels.values()[idx]
