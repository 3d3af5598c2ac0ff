"""Training: one config dataclass and one flat loop, read top to bottom.

``train(TrainConfig(...))`` runs named steps -- :func:`setup_process` (device, DDP, threads,
seed), :func:`load_sources` (each source's splits, with defaults from the dataset registry),
:func:`load_training_data` (label checks, the decoded uint8 cache, targets of each source's
kind), :func:`model_spec` and :func:`build_model`, :func:`restore` (resume) -- then the loop itself:
Adam with a step schedule, per-source validation every epoch, the best-by-validation model, and
atomic resumable checkpoints (:func:`checkpoint_payload`, :func:`resume_payload`); finally the
test split of each source is reported.

``TrainConfig`` is checked in full when it is built, before any file is read;
``TrainConfig.from_sources(profile, yaml, overrides)`` is how the CLI merges its sources.
Mixed training: ``sources=[{dataset, root, weight, ...}, ...]`` draws ``epoch_size`` samples an
epoch, each source in proportion to its weight, each sample with its own target kind (Gaussian,
rater histogram, interval).

Reproducibility: the data order of epoch ``e`` comes from ``(seed, e)`` and the augmentation of
step ``s`` from ``(seed, e, s, rank)``, so a run resumed from any checkpoint follows the same path
as an uninterrupted one. Multi-GPU / multi-process: launch with ``torchrun`` (DDP; gloo on CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import math
import os
import re
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from dldl.checkpoint import load_checkpoint, model_weights, save_checkpoint
from dldl.files import atomic_path, process_alive, remove_stale_temps
from dldl.config import coerce, load_yaml
from dldl.data.augment import AugmentConfig, train_transform
from dldl.data.preprocess import cache_size_for
from dldl.data.cache import load_cached
from dldl.data.datasets import DATASETS, TARGETS, get_dataset, load_dataset
from dldl.data.samples import SampleList, rescaled, within
from dldl.data.sources import check_labels_in
from dldl.devices import resolve_device
from dldl.errors import CheckpointError, ConfigError, DataError, DldlError
from dldl.evaluate import prediction_report
from dldl.runtime import Estimator
from dldl.labels import LabelSet, expectation, gaussian_distribution, histogram_distribution, interval_distribution
from dldl.losses import OBJECTIVES, get_objective, pearson_loss
from dldl.models.backbone_weights import backbone_weights_path, load_backbone_weights
from dldl.models.registry import min_input_size, model_factory
from dldl.models.spec import ModelSpec
from dldl.progress import progress_bar

SOURCE_KEYS = ("dataset", "root", "train_split", "val_split", "test_split", "weight", "target", "limit", "sigma", "scale",
               "label_range")
"""Keys of one ``sources`` entry. ``sigma``: this source's fixed Gaussian std (default: the run's ``sigma``), on the
common scale; ``scale``: ``[a, b]``, the source's labels mapped to ``a * label + b`` (a common scale for sets scored
on different ones; :func:`dldl.data.samples.rescaled`); ``label_range``: ``[low, high]``, only the samples whose
truth lies inside, on the source's own scale, in every split (a range drawn more often: list the set again with it;
:func:`dldl.data.samples.within`)."""
"""The keys of one entry of ``TrainConfig.sources``; all but dataset and root default to its registry entry."""

TEACHER_TARGET = "teachers"
"""The target kind of a source labelled by the run's ``teachers`` alone (knowledge distillation on faces without
labels of the task, e.g. FairFace's photos for a beauty model): its own labels are ignored, each face's target is
the teachers' mean predicted distribution on its crop, and its expectation stands for the label. Such a source has
no validation or test split; model selection uses the sources with labels."""


@dataclass
class TrainConfig:
    """Everything a run depends on. Defaults are the paper's recipe at a CPU-friendly input size,
    on UTKFace's coral split; :meth:`from_sources` fills the data fields from the dataset's
    registry entry instead (``dldl train --dataset mebeauty --root DIR`` needs nothing else).

    Every value is checked here, before any file is read: a bad one raises
    :class:`~dldl.errors.ConfigError` naming the field, the value and what is allowed.
    """

    # data
    dataset: str = "utkface"  # see dldl.data.datasets.DATASETS
    root: str | None = None  # dataset folder
    train_split: str | None = "coral_train"  # None: the dataset has one list (a CSV root)
    val_split: str | None = None  # None: hold out val_fraction of train (by filename hash)
    val_fraction: float = 0.1
    test_split: str | None = "coral_test"
    limit: int | None = None  # use only the first N training samples (smoke tests)
    task: str = "age"
    labels: str = "0:100:1"  # label set start:stop:step
    sigma: float = 2.0  # Gaussian target std when the dataset gives none
    target: str = "gaussian"  # gaussian (per-face sigma where given) | gaussian_fixed (sigma for all) | histogram | interval (dldl.data.datasets.TARGETS); interval samples always get interval targets; a source of `sources` may also take "teachers" (TEACHER_TARGET)
    template: str = "utkface"  # alignment template the model's crops follow; photo datasets are aligned to it
    sources: list[dict[str, Any]] = field(default_factory=list)  # mixed training: [{dataset, root, train_split, val_split, test_split, weight, target, limit}]
    epoch_size: int | None = None  # mixed training: samples drawn per epoch (default: all training samples)
    # model
    model: str = "tiny_age_net"
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # the architecture's own options, e.g. {hybrid_pool: false} (VGG family)
    input_size: int = 64
    cache_size: int | None = None  # stored crop side; default cache_size_for(input_size) = input_size * 9 // 8
    # loss
    loss: str = "dldl_v2"
    lam: float = 1.0
    kl_reduction: str = "reference"
    pearson: float = 0.0  # weight of the batch correlation term 1 - r(estimate, y) added to the loss (dldl.losses.pearson_loss)
    kl_only_epochs: int = 0  # two-stage schedule: KL alone for these epochs, then the loss above
    teachers: list[str] = field(default_factory=list)  # distillation: trained models (checkpoints or shipped names) over `labels`
    distill: float = 0.0  # share of each target from the teachers' mean predicted distribution: (1 - distill) * own + distill * theirs
    # optimisation
    epochs: int = 60
    batch_size: int = 128
    lr: float = 1e-3
    lr_step: int = 30
    lr_gamma: float = 0.1
    weight_decay: float = 0.0
    ema_decay: float = 0.0  # > 0 keeps an exponential moving average of the weights for evaluation
    augment: AugmentConfig | None = None  # None: the paper's augmentation at input_size
    tta_flip: bool = True
    init_from: str | None = None  # start from these weights (fine-tuning; a run's EMA copy if it has one), head kept if shapes match
    backbone_weights: str | None = None  # pre-trained backbone: "imagenet" (mobilenet_v2, efficientnet_lite0), "face_recognition" (dlib_resnet29), or a weight file
    # runtime
    out_dir: str = "runs/default"
    resume: bool = False
    overwrite: bool = False  # start again in an out_dir that holds a run (its checkpoints and logs are removed)
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    channels_last: bool = True
    save_every: int = 0  # also checkpoint every N steps (0: once per epoch)
    cache_dir: str | None = None
    workers: int = 2  # processes decoding images into the cache
    cache_on_device: bool = False  # keep the decoded uint8 training images on `device` (GPU runs: no per-step copy)
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes saved with the run

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, coerce(f.name, hints[f.name], getattr(self, f.name)))
        if self.cache_size is None:
            self.cache_size = cache_size_for(self.input_size)
        _check_config(self)

    @classmethod
    def from_checkpoint(cls, payload: dict[str, Any]) -> "TrainConfig":
        """The config a checkpoint was trained with (its ``"config"``); fields this dldl no longer
        has are dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in payload["config"].items() if k in known})

    @classmethod
    def from_sources(cls, profile: str | None = None, yaml_file: str | Path | None = None,
                     overrides: dict[str, Any] | None = None) -> "TrainConfig":
        """The config of a run, merged in this order (later wins): the dataclass defaults, the
        dataset's registry entry (task, labels, target, template, splits), the ``profile``
        (:data:`PROFILES`), the ``yaml_file``, then ``overrides`` (``--set`` and the CLI options;
        text values are parsed by each field's type). Raises ConfigError / DldlError in one line.
        """
        fields: dict[str, Any] = {}
        if profile is not None:
            if profile not in PROFILES:
                raise ConfigError("profile", profile, f"one of {', '.join(PROFILES)}")
            fields.update(PROFILES[profile])
        if yaml_file is not None:
            path = Path(yaml_file)
            try:
                text = path.read_text()
            except FileNotFoundError:
                raise DldlError(f"{path}: config file not found") from None
            except (OSError, UnicodeDecodeError) as e:
                raise DldlError(f"{path}: cannot read the config file ({e})") from None
            loaded = load_yaml(text, str(path))
            if not isinstance(loaded, dict):
                raise DldlError(f"{path}: expected a mapping of TrainConfig fields")
            fields.update(loaded)
        fields.update(overrides or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise DldlError(f"unknown config field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        dataset = fields.get("dataset", cls.dataset)
        if not fields.get("sources"):
            try:
                info = get_dataset(coerce("dataset", str, dataset))
            except DataError:
                raise ConfigError("dataset", dataset, f"one of {', '.join(DATASETS)}") from None
            fields = {**info.defaults(), **fields}
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _finite_pair(value: Any) -> bool:
    """``True`` for a list or tuple of two finite numbers (a source's ``scale`` or ``label_range``)."""
    return (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in value))


def _check_config(cfg: TrainConfig) -> None:
    """Every rule on the values of a config (their types are already right)."""
    from dldl.faces.align import TEMPLATES
    from dldl.models import list_models

    def need(ok: bool, name: str, allowed: str) -> None:
        if not ok:
            raise ConfigError(name, getattr(cfg, name), allowed)

    try:
        get_dataset(cfg.dataset)
    except DataError:
        need(False, "dataset", f"one of {', '.join(DATASETS)}")
    need(cfg.task in ("age", "beauty"), "task", "'age' or 'beauty'")
    trainable = [m for m in list_models() if m != "ensemble"]  # ensembles are combined from trained models
    need(cfg.model in trainable, "model", f"one of {', '.join(trainable)} (an ensemble is made from trained models "
         "by experiments/ensemble.py --out)")
    need(cfg.loss in OBJECTIVES, "loss", f"one of {', '.join(OBJECTIVES)}")
    need(cfg.kl_reduction in ("reference", "batchmean"), "kl_reduction", "'reference' or 'batchmean'")
    need(cfg.target in TARGETS, "target", f"one of {', '.join(TARGETS)}")
    need(cfg.template in TEMPLATES, "template", f"one of {', '.join(TEMPLATES)}")
    try:
        LabelSet.parse(cfg.labels)
    except ValueError:
        need(False, "labels", "start:stop[:step] with start < stop and step > 0, e.g. 0:100:1")
    for name in ("batch_size", "epochs", "lr_step"):
        need(getattr(cfg, name) >= 1, name, "a whole number >= 1")
    for name in ("limit", "epoch_size", "threads"):
        need(getattr(cfg, name) is None or getattr(cfg, name) >= 1, name, "a whole number >= 1, or null")
    for name in ("kl_only_epochs", "save_every", "workers"):
        need(getattr(cfg, name) >= 0, name, "a whole number >= 0")
    need(0.0 < cfg.val_fraction < 1.0, "val_fraction", "a fraction between 0 and 1 (exclusive)")
    need(cfg.lr >= 0 and math.isfinite(cfg.lr), "lr", "a number >= 0")
    need(0.0 < cfg.lr_gamma <= 1.0, "lr_gamma", "in (0, 1]")
    need(cfg.weight_decay >= 0, "weight_decay", "a number >= 0")
    need(0.0 <= cfg.ema_decay < 1.0, "ema_decay", "in [0, 1)")
    need(cfg.lam >= 0 and math.isfinite(cfg.lam), "lam", "a number >= 0")
    need(cfg.pearson >= 0 and math.isfinite(cfg.pearson), "pearson", "a number >= 0")
    need(cfg.sigma >= 0 and math.isfinite(cfg.sigma), "sigma", "a number >= 0")
    need(0.0 <= cfg.distill <= 1.0, "distill", "in [0, 1]")
    need(cfg.distill == 0 or bool(cfg.teachers), "distill", "0 when no teachers are given")
    taught = [k for k, src in enumerate(cfg.sources) if isinstance(src, dict) and src.get("target") == TEACHER_TARGET]
    need(cfg.distill > 0 or not cfg.teachers or bool(taught), "teachers",
         f"empty when distill is 0 and no source takes target {TEACHER_TARGET!r}")
    for k in taught:
        if not cfg.teachers:
            raise ConfigError(f"sources[{k}].target", TEACHER_TARGET, "set only when teachers are given (they label that source)")
    if taught and len(taught) == len(cfg.sources):
        raise ConfigError("sources", f"{len(taught)} with target {TEACHER_TARGET!r}",
                          "at least one source with labels of its own (a teacher-labelled source has no validation split)")
    need(cfg.input_size >= 32 and cfg.input_size % 32 == 0, "input_size", "a multiple of 32 (32, 64, 96, ...)")
    need(cfg.cache_size >= cfg.input_size, "cache_size", f"at least input_size ({cfg.input_size})")
    need(bool(DEVICE.fullmatch(cfg.device)), "device", "auto, cpu, mps, cuda or cuda:N")
    if cfg.augment is not None:
        need(cfg.augment.output_size == cfg.input_size, "augment", f"an AugmentConfig with output_size {cfg.input_size} (input_size)")
    if cfg.resume and cfg.overwrite:
        raise ConfigError("overwrite", True, "unset when resume is set (continue the run, or start it again)")
    if cfg.backbone_weights and cfg.init_from:
        raise ConfigError("init_from", cfg.init_from, "unset when backbone_weights is set (one initialisation)")
    factory = model_factory(cfg.model)
    smallest = min_input_size(cfg.model)
    need(cfg.input_size >= smallest, "input_size", f"at least {smallest} for {cfg.model}")
    allowed = set(inspect.signature(factory).parameters) - {"num_outputs"}
    unknown = sorted(set(cfg.model_kwargs) - allowed)
    need(not unknown, "model_kwargs", f"options of {cfg.model} ({', '.join(sorted(allowed)) or 'none'})")
    hints = typing.get_type_hints(factory)
    cfg.model_kwargs = {k: coerce(k, hints.get(k, Any), v) for k, v in cfg.model_kwargs.items()}
    for k, src in enumerate(cfg.sources):
        where = f"sources[{k}]"
        if not isinstance(src, dict) or "dataset" not in src or not src.get("root"):
            raise ConfigError(where, src, f"a mapping with dataset and root (and optionally {', '.join(SOURCE_KEYS[2:])})")
        extra = sorted(set(src) - set(SOURCE_KEYS))
        if extra:
            raise ConfigError(where, extra, f"keys among {', '.join(SOURCE_KEYS)}")
        try:
            get_dataset(src["dataset"])
        except DataError:
            raise ConfigError(f"{where}.dataset", src["dataset"], f"one of {', '.join(DATASETS)}") from None
        if "weight" in src:
            w = coerce(f"{where}.weight", float, src["weight"])
            if not w > 0:
                raise ConfigError(f"{where}.weight", src["weight"], "a number > 0")
        if src.get("target") is not None and src["target"] not in (*TARGETS, TEACHER_TARGET):
            raise ConfigError(f"{where}.target", src["target"], f"one of {', '.join((*TARGETS, TEACHER_TARGET))}")
        if "sigma" in src:
            sg = coerce(f"{where}.sigma", float, src["sigma"])
            if not (sg >= 0 and math.isfinite(sg)):
                raise ConfigError(f"{where}.sigma", src["sigma"], "a number >= 0")
        if "scale" in src:
            ab = src["scale"]
            if not (_finite_pair(ab) and ab[0] != 0):
                raise ConfigError(f"{where}.scale", ab, "[a, b], finite numbers with a != 0 (labels become a * label + b)")
        if "label_range" in src:
            lh = src["label_range"]
            if not (_finite_pair(lh) and lh[0] <= lh[1]):
                raise ConfigError(f"{where}.label_range", lh, "[low, high], finite numbers with low <= high")


# profiles: the paper's recipe on a GPU, and a small-input recipe for 2 CPU cores
PROFILES: dict[str, dict[str, Any]] = {
    "paper": dict(input_size=224, batch_size=128, epochs=60, lr_step=30),
    "cpu": dict(input_size=64, batch_size=128, epochs=30, lr_step=20, model="tiny_age_net"),
}


def _seed_for(*parts: int) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "little") & (2**63 - 1)


def _holdout(samples: SampleList, fraction: float) -> tuple[SampleList, SampleList]:
    """Deterministic split of ``samples`` by a hash of each file name (order-independent)."""
    is_val = [int(hashlib.sha1(s.path.name.encode()).hexdigest(), 16) % 1000 < fraction * 1000 for s in samples.samples]
    pick = lambda want: [s for s, v in zip(samples.samples, is_val) if v == want]  # noqa: E731
    return (dataclasses.replace(samples, name=samples.name + "-train", samples=pick(False)),
            dataclasses.replace(samples, name=samples.name + "-val", samples=pick(True)))


def _targets(samples: SampleList, target: str, sigma: float, labels: LabelSet) -> tuple[torch.Tensor, torch.Tensor]:
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
            train_set, val_set = _holdout(train_set, cfg.val_fraction)
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


def _epoch_order(sizes: list[int], weights: list[float], epoch_size: int | None, gen: torch.Generator) -> torch.Tensor:
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


RESUME_KEYS = ("dataset", "root", "train_split", "val_split", "val_fraction", "limit", "labels", "target", "sigma",
               "model", "model_kwargs", "input_size", "cache_size", "loss", "batch_size", "seed", "sources", "epoch_size",
               "template")
"""Settings a resumed run must share with the run that wrote ``last.pt`` (data, its order, the network)."""


def _check_resumable(ck: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    """Refuse to resume from a checkpoint written with other data, model or batch settings."""
    old = ck.get("config") or {}
    diff = [f"{k} {old[k]!r}, now {getattr(cfg, k)!r}" for k in RESUME_KEYS if k in old and old[k] != getattr(cfg, k)]
    if diff:
        raise CheckpointError(path, f"written by a run with other settings ({'; '.join(diff)}); "
                                    "resume with the same settings, or train into another --out folder")


def model_spec(cfg: TrainConfig, sources: list[Source]) -> ModelSpec:
    """The :class:`ModelSpec` of the model a run trains (stored with every checkpoint)."""
    labels = [b for src in sources if not src.taught for s in src.train.samples for b in s.bounds]
    return ModelSpec(cfg.model, LabelSet.parse(cfg.labels), cfg.loss, cfg.input_size, cfg.task, cfg.template, cfg.model_kwargs,
                     cfg.cache_size, label_range=(min(labels), max(labels)) if labels else None)


def _mean_report(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The mean of each source's ``mae`` and ``cs5`` (model selection weighs every source alike)."""
    return {k: float(np.mean([r[k] for r in reports.values()])) for k in ("mae", "cs5")}


@dataclass
class Process:
    """Where this process runs: its device, and its rank among ``world`` DDP processes."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def ddp(self) -> bool:
        return self.world > 1

    @property
    def master(self) -> bool:
        return self.rank == 0


def setup_process(cfg: TrainConfig) -> Process:
    """Device, DDP process group (under ``torchrun``), threads and the global seed."""
    device = resolve_device(cfg.device)
    proc = Process(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        proc = Process(device, dist.get_rank(), dist.get_world_size())
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    return proc


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
        gen = torch.Generator().manual_seed(_seed_for(cfg.seed, epoch))
        if len(self.sources) == 1:
            return torch.randperm(len(self.images), generator=gen)
        return _epoch_order([len(s.train) for s in self.sources], [s.weight for s in self.sources], cfg.epoch_size, gen)


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
            y, target = _targets(src.train, src.target, cfg.sigma if src.sigma is None else src.sigma, labels)
            if cfg.distill > 0:
                target = (1.0 - cfg.distill) * target + cfg.distill * theirs[k].to(target.dtype)
            low, high = _bounds(src.train)
        ys.append(y), targets.append(target), lows.append(low), highs.append(high)
    return TrainingData(sources, images, torch.cat(ys), torch.cat(targets), torch.cat(lows), torch.cat(highs), val_images)


def teacher_distribution(teachers: list[str], images: np.ndarray, labels: LabelSet, template: str) -> torch.Tensor:
    """``(N, K)`` mean predicted distribution of the ``teachers`` (checkpoints or shipped names) on
    ``(N, S, S, 3)`` uint8 training crops, each teacher with its own test-time settings (flip TTA,
    temperature): the soft targets of knowledge distillation (Hinton et al. 2015), averaged over an
    ensemble.

    Raises:
        ConfigError: a teacher predicts over another label set than the run's, gives no
            distribution (a regression or ranking model), or expects crops of another template.
    """
    total = None
    for name in teachers:
        est = Estimator.from_checkpoint(init_weights_path(name))
        if est.labels != labels or est.objective.distribution is None:
            text = lambda ls: f"{ls.start:g}:{ls.stop:g}:{ls.step:g}"  # noqa: E731 -- as `labels` is written
            raise ConfigError("teachers", name, f"models with a distribution over the run's labels ({text(labels)}); "
                                                f"this one has {est.spec.objective} over {text(est.labels)}")
        if est.template != template:
            raise ConfigError("teachers", name, f"models of the run's crop template {template!r}, not {est.template!r}")
        dist = torch.from_numpy(est.predict_arrays(images).distribution)
        total = dist if total is None else total + dist
    return total / len(teachers)


def init_weights_path(name_or_path: str) -> Path:
    """``init_from`` as a file: a checkpoint path, or the file of a shipped model name
    (``mobilenet_v2-utkface``)."""
    from dldl.hub import MODELS_DIR, list_pretrained

    path = Path(name_or_path)
    if not path.exists() and name_or_path in list_pretrained():
        return MODELS_DIR / f"{name_or_path}.pt"
    return path


def build_model(cfg: TrainConfig, spec: ModelSpec, proc: Process, backbone: Path | None, resuming: bool) -> nn.Module:
    """The network of ``spec`` on ``proc.device``: initialised from ``init_from`` (tensors whose
    shapes match, from its EMA copy when it has one, the weights it is evaluated with) or pre-trained ``backbone`` weights (unless resuming), SyncBN under multi-GPU DDP,
    channels_last when asked."""
    model = spec.create_model()
    if cfg.init_from:
        src = model_weights(load_checkpoint(init_weights_path(cfg.init_from)))
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in src.items() if k in own and own[k].shape == v.shape}, strict=False)
    elif backbone and not resuming:
        load_backbone_weights(model, backbone)
    model.to(proc.device)
    if proc.ddp and proc.device.type == "cuda":  # SyncBatchNorm needs CUDA (NCCL); with gloo on CPU each process keeps its own BN
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


@dataclass
class RunState:
    """Where a run is: the next ``epoch`` and ``step``, the best validation MAE so far, the log
    rows, and the running loss sum over the ``seen`` samples of a partly done epoch."""

    epoch: int = 0
    step: int = 0
    best: float = math.inf
    history: list[dict[str, Any]] = field(default_factory=list)
    loss_sum: float = 0.0
    seen: int = 0


def checkpoint_payload(spec: ModelSpec, cfg: TrainConfig, model: nn.Module, ema: Any, epoch: int, step: int,
                       metrics: dict | None = None) -> dict[str, Any]:
    """What ``best.pt`` holds (weights-only types): the spec, the config, where, the weights."""
    return {"spec": spec.to_dict(), "config": cfg.to_dict(), "epoch": epoch, "step": step, "state_dict": model.state_dict(),
            "ema_state_dict": ema.module.state_dict() if ema else None, "metrics": metrics or {}}


def resume_payload(spec: ModelSpec, cfg: TrainConfig, model: nn.Module, ema: Any, optimizer: Any, scheduler: Any,
                   state: RunState) -> dict[str, Any]:
    """What ``last.pt`` holds: :func:`checkpoint_payload` plus everything a resumed run needs."""
    return {**checkpoint_payload(spec, cfg, model, ema, state.epoch, state.step), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "best": state.best, "history": state.history, "loss_sum": state.loss_sum,
            "seen": state.seen, "ema_n_averaged": int(ema.n_averaged) if ema else 0}


def restore(path: Path, cfg: TrainConfig, model: nn.Module, ema: Any, optimizer: Any, scheduler: Any) -> RunState:
    """Load ``last.pt`` into the model, EMA, optimiser and schedule (refused when written with
    other data, model or batch settings); the state to go on from."""
    ck = load_checkpoint(path)
    _check_resumable(ck, cfg, path)
    model.load_state_dict(ck["state_dict"])
    optimizer.load_state_dict(ck["optimizer"])
    scheduler.load_state_dict(ck["scheduler"])
    if ema is not None and ck.get("ema_state_dict"):
        ema.module.load_state_dict(ck["ema_state_dict"])
        ema.n_averaged.fill_(int(ck["ema_n_averaged"]))
    return RunState(ck["epoch"], ck["step"], ck["best"], ck["history"], ck["loss_sum"], ck["seen"])


RUN_FILES = ("last.pt", "best.pt", "log.jsonl", "report.json")
"""What a run leaves in its out_dir; an out_dir holding any of them holds a run."""


@contextlib.contextmanager
def run_lock(out: Path, cfg: TrainConfig) -> Any:
    """Hold ``out/.lock`` (with this process id) for the run. Refuses an out_dir that another live
    process is training into, and one that holds a finished or stopped run unless ``resume``
    (continue it) or ``overwrite`` (remove its files and start again) is set."""
    out.mkdir(parents=True, exist_ok=True)
    lock = out / ".lock"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            pid = int(lock.read_text().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        alive = process_alive(pid)
        if alive:
            raise DldlError(f"{out}: another run (process {pid}) is training into this folder; wait for it or use another --out") from None
        lock.unlink(missing_ok=True)  # left by a killed run
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    try:
        remove_stale_temps(out)  # partial checkpoints of a killed run
        held = [name for name in RUN_FILES if (out / name).exists()]
        if held and not cfg.resume:
            if not cfg.overwrite:
                raise DldlError(f"{out}: holds a run ({', '.join(held)}); --resume continues it, --overwrite starts it again, "
                                "or train into another --out")
            for name in held:
                (out / name).unlink()
        yield
    finally:
        lock.unlink(missing_ok=True)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run one training job; returns the final report (also written to ``out_dir/report.json``).

    The out_dir is locked for the run (:func:`run_lock`): a folder holding a run is refused
    without ``resume`` or ``overwrite``, and two runs never write into one folder at once.
    """
    proc = setup_process(cfg)
    out = Path(cfg.out_dir)
    if not proc.master:
        return _train(cfg, proc, out)
    with run_lock(out, cfg):
        return _train(cfg, proc, out)


def _train(cfg: TrainConfig, proc: Process, out: Path) -> dict[str, Any]:
    device, master = proc.device, proc.master
    out.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out / "last.pt", out / "best.pt"
    labels = LabelSet.parse(cfg.labels)
    backbone = backbone_weights_path(cfg.model, cfg.backbone_weights) if cfg.backbone_weights else None  # fail before decoding

    # ---- data: label files -> checked samples -> decoded uint8 arrays + targets, per source
    sources = load_sources(cfg)
    load = lambda s: load_cached(s, cfg.cache_size, cfg.cache_dir, cfg.workers, progress=cfg.progress and master,  # noqa: E731
                                 template=cfg.template)
    data = load_training_data(cfg, sources, labels, load, master)
    if master:
        counts = ", ".join(f"{src.name or src.train.name.removesuffix('-train')}: {len(src.train)} train / {len(src.val)} val"
                           for src in sources)
        print(f"training {cfg.model} on {counts}; writing to {out}", flush=True)
    # (N, S, S, 3) uint8 copy on the device, batches gathered there (numpy gathers faster on CPU)
    device_images = torch.from_numpy(data.images).to(device) if cfg.cache_on_device else None
    n = len(data.images)
    if n < proc.world:
        raise DldlError(f"{sources[0].train.name}: {n} training samples cannot be shared by {proc.world} processes")
    steps_per_epoch = math.ceil((n if len(sources) == 1 else (cfg.epoch_size or n)) / cfg.batch_size)

    # ---- model, optimiser, schedule, resume
    spec = model_spec(cfg, sources)
    resuming = cfg.resume and last_path.exists()
    model = build_model(cfg, spec, proc, backbone, resuming)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
    ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay),
                                              use_buffers=True) if cfg.ema_decay > 0 else None
    state = RunState()
    if resuming:
        state = restore(last_path, cfg, model, ema, optimizer, scheduler)
        if master:
            print(f"resumed {last_path} at epoch {state.epoch + 1}, step {state.step}")
    aug = cfg.augment or AugmentConfig(output_size=cfg.input_size)
    net = nn.parallel.DistributedDataParallel(model) if proc.ddp else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    estimator = Estimator(ema.module if ema else model, spec, device=device)
    if master:  # the log is the checkpoint's history: rows a killed run logged after its last save go
        with atomic_path(out / "log.jsonl") as tmp:
            tmp.write_text("".join(json.dumps(row) + "\n" for row in state.history))
    log = open(out / "log.jsonl", "a") if master else None

    # ---- the loop
    for epoch in range(state.epoch, cfg.epochs):
        net.train()
        order = data.epoch_order(cfg, epoch)
        if state.step == 0:
            state.loss_sum, state.seen = 0.0, 0
        stage_loss = "dldl" if epoch < cfg.kl_only_epochs else cfg.loss
        objective = get_objective(stage_loss)
        t0 = time.time()
        bar = progress_bar(master and cfg.progress, steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}")
        for step in range(state.step, steps_per_epoch):
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size][proc.rank::proc.world]
            if device_images is not None:
                images = device_images[idx.to(device)].permute(0, 3, 1, 2)
            else:
                images = torch.from_numpy(data.images[idx.numpy()]).to(device, non_blocking=True).permute(0, 3, 1, 2)
            gen = torch.Generator().manual_seed(_seed_for(cfg.seed, epoch, step, proc.rank))
            # the global generator (dropout, ...) is seeded by (seed, epoch, step) too, so a run resumed
            # from any step draws exactly what the uninterrupted run drew
            torch.manual_seed(_seed_for(cfg.seed, epoch, step, proc.rank, "global"))
            x = train_transform(images, aug, generator=gen)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y, target = data.y[idx].to(device), data.target[idx].to(device)
            with autocast:
                output = net(x)
            loss = objective.loss(output.float(), target, y, labels, lam=cfg.lam, kl_reduction=cfg.kl_reduction,
                                  bounds=(data.low[idx].to(device), data.high[idx].to(device)))
            if cfg.pearson > 0 and len(idx) > 1:
                loss = loss + cfg.pearson * pearson_loss(objective.estimate(output.float(), labels), y)
            if not torch.isfinite(loss):
                kept = f"the last good checkpoint is {last_path}" if last_path.exists() else "no checkpoint was written yet"
                raise DldlError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; stopped, {kept}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
            state.loss_sum += loss.item() * len(idx)
            state.seen += len(idx)
            bar.advance(f"loss {state.loss_sum / state.seen:.4f}")
            if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < steps_per_epoch and master:
                state.epoch, state.step = epoch, step + 1
                save_checkpoint(last_path, resume_payload(spec, cfg, model, ema, optimizer, scheduler, state))
        bar.close()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        train_time = time.time() - t0
        if master:
            vals = {src.name: prediction_report(estimator.predict_arrays(images, cfg.tta_flip), src.val, cfg.task)
                    for src, images in zip(sources, data.val_images) if images is not None}
            val = vals[sources[0].name] if len(sources) == 1 else _mean_report(vals)
            row = {"epoch": epoch + 1, "train_loss": state.loss_sum / max(state.seen, 1), "val_mae": val["mae"], "val_cs5": val["cs5"],
                   **({f"val_mae/{k}": v["mae"] for k, v in vals.items()} if len(sources) > 1 else {}), "lr": lr,
                   "loss": stage_loss, "seconds": round(train_time, 2),
                   "images_per_s": round(state.seen * proc.world / max(train_time, 1e-9), 2)}
            state.history.append(row)
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(f"epoch {epoch + 1:3d}  loss {row['train_loss']:.4f}  val MAE {val['mae']:.3f}  "
                  f"{row['images_per_s']:.1f} img/s  {train_time:.0f}s")
            if val["mae"] < state.best:
                state.best = val["mae"]
                save_checkpoint(best_path, checkpoint_payload(spec, cfg, model, ema, epoch + 1, 0, {"val": val}))
        state.epoch, state.step, state.loss_sum, state.seen = epoch + 1, 0, 0.0, 0
        if master:
            save_checkpoint(last_path, resume_payload(spec, cfg, model, ema, optimizer, scheduler, state))

    # ---- final report on the best model
    report: dict[str, Any] = {"config": cfg.to_dict(), "history": state.history, "best_val_mae": state.best}
    if master and best_path.exists():
        final = Estimator.from_checkpoint(best_path, device)
        for src in sources:
            if src.test is None:
                continue
            test_images = load(src.test)  # from the cache built before training
            suffix = f"/{src.name}" if len(sources) > 1 else ""
            for key, flip in (("test", True), ("test_no_flip", False)):
                report[key + suffix] = prediction_report(final.predict_arrays(test_images, flip), src.test, cfg.task)
            print(f"test{suffix} MAE {report['test' + suffix]['mae']:.3f} (flip TTA), "
                  f"{report['test_no_flip' + suffix]['mae']:.3f} (no TTA)")
        (out / "report.json").write_text(json.dumps(report, indent=1))
    if log:
        log.close()
    if proc.ddp:
        dist.destroy_process_group()
    return report
