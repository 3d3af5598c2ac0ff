"""The record every dataset reader produces: one labelled face image."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    """One face image and its label.

    Attributes:
        path: the image file (absolute, or relative to the current directory).
        label: the ground-truth value (age in years, mean beauty score, ...).
        sigma: the per-image label std (ChaLearn's annotator std); ``None`` = use the configured one.
        histogram: rater counts per score bin (MEBeauty, SCUT-FBP); ``None`` if unknown.
        interval: ``(low, high)`` when the truth is only known to lie in that closed range
            (FairFace's age groups); ``label`` is then its centre. ``None``: an exact label.
        meta: free-form metadata (gender, ethnicity, ...), used for per-group metrics.
    """

    path: Path
    label: float
    sigma: float | None = None
    histogram: tuple[float, ...] | None = None
    meta: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    interval: tuple[float, float] | None = None

    @property
    def bounds(self) -> tuple[float, float]:
        """``(low, high)`` of the truth: the interval, or ``(label, label)`` for an exact label."""
        return self.interval if self.interval is not None else (self.label, self.label)


@dataclass(frozen=True)
class SampleList:
    """The samples of one split of one dataset.

    Attributes:
        name: e.g. ``"utkface/coral_train"``.
        samples: the records, in file order.
        histogram_bins: the score of each histogram bin (e.g. ``(1.0, ..., 10.0)``) when samples
            carry histograms, else ``None``.
        source: the label/split file(s) read, for error messages and cache keys.
        align: ``True`` for photos (or crops in a geometry of their own): each image is then
            detected and aligned to the model's template when it is decoded for training or
            evaluation. ``False``: the images are face crops used as they are.
    """

    name: str
    samples: list[Sample]
    histogram_bins: tuple[float, ...] | None = None
    source: tuple[str, ...] = ()
    align: bool = False

    def __len__(self) -> int:
        return len(self.samples)


def within(samples: SampleList, low: float, high: float) -> SampleList:
    """The samples of ``samples`` whose truth lies inside ``[low, high]`` (for an interval label,
    its centre): an age range a mixed run draws more often by listing a set a second time with it.

    >>> s = SampleList("x", [Sample(Path("a.jpg"), 9.0), Sample(Path("b.jpg"), 30.0),
    ...                      Sample(Path("c.jpg"), 14.5, interval=(10.0, 19.0))])
    >>> [x.label for x in within(s, 10, 20).samples]
    [14.5]
    >>> within(s, 20, 10)
    Traceback (most recent call last):
    ValueError: label range must have low <= high, got [20, 10]
    """
    if not low <= high:
        raise ValueError(f"label range must have low <= high, got [{low}, {high}]")
    keep = [s for s in samples.samples if low <= (s.bounds[0] + s.bounds[1]) / 2 <= high]
    return dataclasses.replace(samples, samples=keep)


def rescaled(samples: SampleList, scale: float, offset: float) -> SampleList:
    """``samples`` with every label mapped to ``scale * label + offset`` (a common scale for mixed
    training, e.g. SCUT-FBP5500's 1-5 onto MEBeauty's 1-10): labels, intervals and histogram bins
    are mapped, per-face sigmas multiplied by ``|scale|``. Image paths are unchanged.

    >>> s = SampleList("x", [Sample(Path("a.jpg"), 3.0, sigma=0.5, histogram=(1.0, 2.0))], histogram_bins=(1.0, 5.0))
    >>> r = rescaled(s, 2.25, -1.25)
    >>> r.samples[0].label, r.samples[0].sigma, r.histogram_bins
    (5.5, 1.125, (1.0, 10.0))
    >>> rescaled(s, 0.0, 1.0)
    Traceback (most recent call last):
    ValueError: scale must be a non-zero finite number, got 0.0
    """
    if not math.isfinite(scale) or scale == 0 or not math.isfinite(offset):
        raise ValueError(f"scale must be a non-zero finite number, got {scale}" if not (math.isfinite(scale) and scale)
                         else f"offset must be finite, got {offset}")
    f = lambda v: scale * v + offset  # noqa: E731
    out = [dataclasses.replace(s, label=f(s.label), sigma=None if s.sigma is None else abs(scale) * s.sigma,
                               interval=None if s.interval is None else tuple(sorted((f(s.interval[0]), f(s.interval[1])))))
           for s in samples.samples]
    bins = None if samples.histogram_bins is None else tuple(f(b) for b in samples.histogram_bins)
    return dataclasses.replace(samples, samples=out, histogram_bins=bins)
