"""Training data: the sources of a run, how often each is drawn, and the target of every sample.

:func:`load_sources` reads each source's splits (its missing settings from the dataset registry;
:func:`holdout` draws a validation split by file-name hash where none is given);
:func:`load_training_data` checks the labels, decodes every split (through ``load``, the cache)
and builds each sample's target of its source's kind (:func:`build_targets`: Gaussian, rater
histogram, interval; :func:`teacher_distribution` for distillation). :func:`epoch_order` draws an
epoch's samples, each source in proportion to its weight.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dldl import hub
from dldl.data.datasets import get_dataset, load_dataset
from dldl.data.samples import SampleList, rescaled, within
from dldl.data.sources import check_labels_in
from dldl.errors import DataError, DldlError
from dldl.labels import LabelSet, expectation, gaussian_distribution, histogram_distribution, interval_distribution
from dldl.training.config import TEACHER_TARGET, TrainConfig, need


def seed_for(*parts: Any) -> int:
    """A 63-bit seed from ``parts`` (``(seed, epoch)`` orders an epoch, ``(seed, epoch, step, rank)``
    augments a step): the same parts give the same seed in every process and every resumed run."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "little") & (2**63 - 1)


def holdout(samples: SampleList, fraction: float) -> tuple[SampleList, SampleList]:
    """Deterministic split of ``samples`` by a hash of each file name (order-independent)."""
    is_val = [int(hashlib.sha1(s.path.name.encode()).hexdigest(), 16) % 1000 < fraction * 1000 for s in samples.samples]
    pick = lambda want: [s for s, v in zip(samples.samples, is_val) if v == want]  # noqa: E731
    return (dataclasses.replace(samples, name=samples.name + "-train", samples=pick(False)),
            dataclasses.replace(samples, name=samples.name + "-val", samples=pick(True)))


def build_targets(samples: SampleList, target: str, sigma: float, labels: LabelSet) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N,)`` labels and ``(N, K)`` target distributions for a split, of kind ``target``
    (samples with an interval always get :func:`interval_distribution`)."""
    y = torch.tensor([s.label for s in samples.samples], dtype=torch.float32)
    if target == "histogram":
        if samples.histogram_bins is None or any(s.histogram is None for s in samples.samples):
            raise DldlError(f"{samples.name}: target 'histogram' needs rater histograms, which this dataset lacks")
        counts = torch.tensor([s.histogram for s in samples.samples], dtype=torch.float64)
        return y, histogram_distribution(counts, torch.tensor(samples.histogram_bins), labels)
    sig = torch.tensor([sigma if s.sigma is None or target == "gaussian_fixed" else s.sigma for s in samples.samples])
    out = gaussian_distribution(y, sig, labels)
    has = torch.tensor([s.interval is not None for s in samples.samples])
    if bool(has.any()):
        low, high = _bounds(samples)
        out = torch.where(has[:, None], interval_distribution(low, high, sig, labels), out)
    return y, out


def _bounds(samples: SampleList) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N,)`` low and high ends of each sample's truth (both the label for exact labels)."""
    b = torch.tensor([s.bounds for s in samples.samples], dtype=torch.float32).reshape(-1, 2)
    return b[:, 0], b[:, 1]


@dataclass
class Source:
    """One training source: its splits, sampling weight and target kind (mixed training)."""

    name: str
    train: SampleList
    val: SampleList
    test: SampleList | None
    weight: float
    target: str
    sigma: float | None = None  # this source's fixed Gaussian std; None: the run's sigma

    @property
    def taught(self) -> bool:
        """Whether the run's teachers label this source (target ``TEACHER_TARGET``; no validation or test split)."""
        return self.target == TEACHER_TARGET


def load_sources(cfg: TrainConfig) -> list[Source]:
    """The training sources of ``cfg``: its ``sources`` list (mixed training), or the one dataset
    of ``cfg.dataset``; each source's missing settings come from its registry entry."""
    entries = cfg.sources or [{"dataset": cfg.dataset, "root": cfg.root, "train_split": cfg.train_split,
                               "val_split": cfg.val_split, "test_split": cfg.test_split, "target": cfg.target,
                               "limit": cfg.limit}]
    out = []
    for entry in entries:
        info = get_dataset(entry["dataset"])
        e = {**info.defaults(), **entry} if cfg.sources else dict(entry)
        train_set = load_dataset(info.name, e["root"], e["train_split"])
        if e.get("limit"):
            train_set = dataclasses.replace(train_set, samples=train_set.samples[: int(e["limit"])])
        if e.get("target") == TEACHER_TARGET:
            if e.get("label_range"):
                train_set = within(train_set, *map(float, e["label_range"]))
            out.append(Source(info.name, train_set, dataclasses.replace(train_set, samples=[]), None,
                              float(e.get("weight", 1.0)), TEACHER_TARGET))
            continue
        if e.get("val_split"):
            val_set = load_dataset(info.name, e["root"], e["val_split"])
        else:
            train_set, val_set = holdout(train_set, cfg.val_fraction)
        test_set = load_dataset(info.name, e["root"], e["test_split"]) if e.get("test_split") else None
        if e.get("label_range"):
            lo, hi = map(float, e["label_range"])
            train_set, val_set = within(train_set, lo, hi), within(val_set, lo, hi)
            test_set = test_set and within(test_set, lo, hi)
            if not train_set.samples:
                raise DataError(e["root"], f"{info.name}: no training sample inside label_range [{lo:g}, {hi:g}]")
        if e.get("scale"):
            a, b = map(float, e["scale"])
            train_set, val_set = rescaled(train_set, a, b), rescaled(val_set, a, b)
            test_set = test_set and rescaled(test_set, a, b)
        out.append(Source(info.name if cfg.sources else "", train_set, val_set, test_set,
                          float(e.get("weight", 1.0)), e.get("target") or info.target,
                          None if e.get("sigma") is None else float(e["sigma"])))
    names = [s.name for s in out]
    for i, s in enumerate(out):  # the same dataset twice (other splits) gets a numbered name
        if names.count(s.name) > 1:
            s.name = f"{s.name}{i}"
    return out


def epoch_order(sizes: list[int], weights: list[float], epoch_size: int | None, gen: torch.Generator) -> torch.Tensor:
    """Indices into the concatenated sources for one epoch: ``epoch_size`` draws, source ``i``
    taking a share ``weights[i] / sum(weights)``, each source cycled through in a fresh random order."""
    total = epoch_size or sum(sizes)
    w = torch.tensor(weights, dtype=torch.float64)
    share = w / w.sum() * total
    counts = share.floor().long()
    counts[torch.argsort(share - counts, descending=True)[: total - int(counts.sum())]] += 1  # largest remainders
    counts = counts.tolist()
    parts, offset = [], 0
    for n, c in zip(sizes, counts):
        reps = -(-c // n) if n else 0
        perm = torch.cat([torch.randperm(n, generator=gen) for _ in range(reps)])[:c] if reps else torch.empty(0, dtype=torch.long)
        parts.append(perm + offset)
        offset += n
    order = torch.cat(parts)
    return order[torch.randperm(len(order), generator=gen)]


@dataclass
class TrainingData:
    """The decoded training images of every source, concatenated, with their targets: labels
    ``y`` ``(N,)``, target distributions ``(N, K)``, truth bounds ``low``/``high`` ``(N,)``; the
    decoded validation images of each source."""

    sources: list[Source]
    images: np.ndarray
    y: torch.Tensor
    target: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    val_images: list[np.ndarray | None]  # None for a taught source (no validation split)

    def epoch_order(self, cfg: TrainConfig, epoch: int) -> torch.Tensor:
        """The sample order of ``epoch`` (a plain permutation for one source, weighted draws for several)."""
        gen = torch.Generator().manual_seed(seed_for(cfg.seed, epoch))
        if len(self.sources) == 1:
            return torch.randperm(len(self.images), generator=gen)
        return epoch_order([len(s.train) for s in self.sources], [s.weight for s in self.sources], cfg.epoch_size, gen)


def load_training_data(cfg: TrainConfig, sources: list[Source], labels: LabelSet, load: Any, master: bool) -> TrainingData:
    """Check every split's labels against the label set, decode (or read from the cache) every
    split, the test splits too (so a bad test image stops the run before training), and build the
    targets of each source with its own target kind (a taught source's from the teachers alone)."""
    for src in sources:
        for split in (src.train, src.val, src.test):
            if split is not None and not src.taught:
                check_labels_in(split, labels)
    parts = [load(src.train) for src in sources]
    images = np.concatenate(parts) if len(sources) > 1 else parts[0]
    val_images = [None if src.taught else load(src.val) for src in sources]
    if master:
        for src in sources:
            if src.test is not None:
                load(src.test)
    # the teachers run once (each loaded once) over the crops of every source that needs them
    wanted = [k for k, src in enumerate(sources) if src.taught or cfg.distill > 0]
    theirs: dict[int, torch.Tensor] = {}
    if wanted:
        crops = (images if len(wanted) == len(sources) else parts[wanted[0]] if len(wanted) == 1
                 else np.concatenate([parts[k] for k in wanted]))  # no copy of the crops where one will do
        dists = teacher_distribution(cfg.teachers, crops, labels, cfg.template)
        theirs = dict(zip(wanted, torch.split(dists, [len(parts[k]) for k in wanted])))
    ys, targets, lows, highs = [], [], [], []
    for k, src in enumerate(sources):
        if src.taught:
            target = theirs[k]
            y = expectation(target, labels).float()
            low, high = y, y
        else:
            y, target = build_targets(src.train, src.target, cfg.sigma if src.sigma is None else src.sigma, labels)
            if cfg.distill > 0:
                target = (1.0 - cfg.distill) * target + cfg.distill * theirs[k].to(target.dtype)
            low, high = _bounds(src.train)
        ys.append(y), targets.append(target), lows.append(low), highs.append(high)
    return TrainingData(sources, images, torch.cat(ys), torch.cat(targets), torch.cat(lows), torch.cat(highs), val_images)


def teacher_distribution(teachers: list[str], images: np.ndarray, labels: LabelSet, template: str) -> torch.Tensor:
    """``(N, K)`` mean predicted distribution of the ``teachers`` (checkpoints or shipped names,
    loaded by :func:`dldl.hub.load`) on ``(N, S, S, 3)`` uint8 training crops, each teacher
    with its own test-time settings (flip TTA, temperature): the soft targets of knowledge
    distillation (Hinton et al. 2015), averaged over an ensemble.

    Raises:
        ConfigError: a teacher predicts over another label set than the run's, gives no
            distribution (a regression or ranking model), or expects crops of another template.
    """
    text = lambda ls: f"{ls.start:g}:{ls.stop:g}:{ls.step:g}"  # noqa: E731 -- as `labels` is written
    total = None
    for name in teachers:
        est = hub.load(name, runtime="torch")
        need(est.labels == labels and est.objective.distribution is not None, "teachers", name,
             f"models with a distribution over the run's labels ({text(labels)}); "
             f"this one has {est.spec.objective} over {text(est.labels)}")
        need(est.template == template, "teachers", name, f"models of the run's crop template {template!r}, not {est.template!r}")
        dist = torch.from_numpy(est.predict_arrays(images).distribution)
        total = dist if total is None else total + dist
    return total / len(teachers)
