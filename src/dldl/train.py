"""Training: one config dataclass and one flat loop, read top to bottom.

``train(TrainConfig(...))`` loads the splits, decodes them once into the uint8 cache, builds the
target label distributions, trains with Adam and a step schedule, validates every epoch, keeps the
best-by-validation model, writes atomic resumable checkpoints, and finally reports the test split.

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

from dldl.checkpoint import load_checkpoint, save_checkpoint
from dldl.data.augment import AugmentConfig, train_transform
from dldl.data.cache import load_cached
from dldl.data.samples import SampleList
from dldl.config import coerce, load_yaml
from dldl.data.augment import cache_size_for
from dldl.data.datasets import DATASETS, TARGETS, get_dataset, load_dataset
from dldl.data.sources import check_labels_in
from dldl.errors import CheckpointError, ConfigError, DataError, DldlError
from dldl.evaluate import prediction_report
from dldl.labels import LabelSet, gaussian_distribution, histogram_distribution, interval_distribution
from dldl.losses import OBJECTIVES, get_objective
from dldl.models.registry import model_factory
from dldl.models.spec import ModelSpec
from dldl.models.imagenet import imagenet_weights_path, load_imagenet_weights
from dldl.predict import Estimator
from dldl.progress import progress_bar


SOURCE_KEYS = ("dataset", "root", "train_split", "val_split", "test_split", "weight", "target", "limit")
"""The keys of one entry of ``TrainConfig.sources``; all but dataset and root default to its registry entry."""


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
    target: str = "gaussian"  # gaussian | histogram (rater histograms, e.g. MEBeauty) | interval; interval samples always get interval targets
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
    kl_only_epochs: int = 0  # two-stage schedule: KL alone for these epochs, then the loss above
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
    init_from: str | None = None  # start from these weights (fine-tuning), head kept if shapes match
    backbone_weights: str | None = None  # ImageNet init (mobilenet_v2, efficientnet_lite0): "imagenet" (installed package) or a .pth path
    # runtime
    out_dir: str = "runs/default"
    resume: bool = False
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
    need(cfg.model in list_models(), "model", f"one of {', '.join(list_models())}")
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
    need(cfg.sigma >= 0 and math.isfinite(cfg.sigma), "sigma", "a number >= 0")
    need(cfg.input_size >= 32 and cfg.input_size % 32 == 0, "input_size", "a multiple of 32 (32, 64, 96, ...)")
    need(cfg.cache_size >= cfg.input_size, "cache_size", f"at least input_size ({cfg.input_size})")
    need(bool(DEVICE.fullmatch(cfg.device)), "device", "auto, cpu, mps, cuda or cuda:N")
    if cfg.augment is not None:
        need(cfg.augment.output_size == cfg.input_size, "augment", f"an AugmentConfig with output_size {cfg.input_size} (input_size)")
    if cfg.backbone_weights and cfg.init_from:
        raise ConfigError("init_from", cfg.init_from, "unset when backbone_weights is set (one initialisation)")
    factory = model_factory(cfg.model)
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
        if src.get("target") is not None and src["target"] not in TARGETS:
            raise ConfigError(f"{where}.target", src["target"], f"one of {', '.join(TARGETS)}")


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
    sig = torch.tensor([sigma if s.sigma is None else s.sigma for s in samples.samples])
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



def load_sources(cfg: TrainConfig) -> list[Source]:
    """The training sources of ``cfg``: its ``sources`` list (mixed training), or the one dataset
    of ``cfg.dataset``; each source's missing settings come from its registry entry."""
    entries = cfg.sources or [{"dataset": cfg.dataset, "root": cfg.root, "train_split": cfg.train_split,
                               "val_split": cfg.val_split, "test_split": cfg.test_split, "target": cfg.target,
                               "limit": cfg.limit}]
    out = []
    for k, entry in enumerate(entries):
        info = get_dataset(entry["dataset"])
        e = {**info.defaults(), **{key: v for key, v in entry.items()}} if cfg.sources else dict(entry)
        train_set = load_dataset(info.name, e["root"], e["train_split"])
        if e.get("limit"):
            train_set = dataclasses.replace(train_set, samples=train_set.samples[: int(e["limit"])])
        if e.get("val_split"):
            val_set = load_dataset(info.name, e["root"], e["val_split"])
        else:
            train_set, val_set = _holdout(train_set, cfg.val_fraction)
        test_set = load_dataset(info.name, e["root"], e["test_split"]) if e.get("test_split") else None
        out.append(Source(info.name if cfg.sources else "", train_set, val_set, test_set,
                          float(e.get("weight", 1.0)), e.get("target") or info.target))
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
    labels = [b for src in sources for s in src.train.samples for b in s.bounds]
    return ModelSpec(cfg.model, LabelSet.parse(cfg.labels), cfg.loss, cfg.input_size, cfg.task, cfg.template, cfg.model_kwargs,
                     cfg.cache_size, label_range=(min(labels), max(labels)) if labels else None)


def _mean_report(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The mean of each source's ``mae`` and ``cs5`` (model selection weighs every source alike)."""
    return {k: float(np.mean([r[k] for r in reports.values()])) for k in ("mae", "cs5")}


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run one training job; returns the final report (also written to ``out_dir/report.json``)."""
    # ---- processes, device, seeds
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = _device(cfg.device)
    if ddp:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
    else:
        rank, world = 0, 1
    master = rank == 0
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = LabelSet.parse(cfg.labels)
    backbone = imagenet_weights_path(cfg.model, cfg.backbone_weights) if cfg.backbone_weights else None  # fail before decoding

    # ---- data: label files -> checked samples -> decoded uint8 arrays + targets, per source
    sources = load_sources(cfg)
    for src in sources:
        for split in (src.train, src.val, src.test):
            if split is not None:
                check_labels_in(split, labels)
    load = lambda s: load_cached(s, cfg.cache_size, cfg.cache_dir, cfg.workers, progress=cfg.progress and master,  # noqa: E731
                                 template=cfg.template)
    train_images = np.concatenate([load(src.train) for src in sources]) if len(sources) > 1 else load(sources[0].train)
    val_images = [load(src.val) for src in sources]
    if master:
        for src in sources:
            if src.test is not None:
                load(src.test)  # decode (and cache) now, so a bad test image stops the run before training, not after
    parts = [_targets(src.train, src.target, cfg.sigma, labels) for src in sources]
    y_all, target_all = torch.cat([y for y, _ in parts]), torch.cat([t for _, t in parts])
    bounds = [_bounds(src.train) for src in sources]
    low_all, high_all = torch.cat([b[0] for b in bounds]), torch.cat([b[1] for b in bounds])
    sizes = [len(src.train) for src in sources]
    # (N, S, S, 3) uint8 copy on the device, batches gathered there (numpy gathers faster on CPU)
    device_images = torch.from_numpy(train_images).to(device) if cfg.cache_on_device else None
    n = len(train_images)
    epoch_n = n if len(sources) == 1 else (cfg.epoch_size or n)
    if n < world:
        raise DldlError(f"{sources[0].train.name}: {n} training samples cannot be shared by {world} processes")

    # ---- model, optimiser, schedule
    spec = model_spec(cfg, sources)
    model = spec.create_model()
    if cfg.init_from:
        src = load_checkpoint(cfg.init_from)["state_dict"]
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in src.items() if k in own and own[k].shape == v.shape}, strict=False)
    elif backbone and not (cfg.resume and (out / "last.pt").exists()):
        load_imagenet_weights(model, backbone)
    model.to(device)
    if ddp and device.type == "cuda":  # SyncBatchNorm needs CUDA (NCCL); with gloo on CPU each process keeps its own BN
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
    ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay),
                                              use_buffers=True) if cfg.ema_decay > 0 else None
    aug = cfg.augment or AugmentConfig(output_size=cfg.input_size)
    steps_per_epoch = math.ceil(epoch_n / cfg.batch_size)
    start_epoch, start_step, best, history, resumed_sums = 0, 0, math.inf, [], (0.0, 0)
    last_path, best_path = out / "last.pt", out / "best.pt"
    if cfg.resume and last_path.exists():
        ck = load_checkpoint(last_path)
        _check_resumable(ck, cfg, last_path)
        model.load_state_dict(ck["state_dict"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if ema is not None and ck.get("ema_state_dict"):
            ema.module.load_state_dict(ck["ema_state_dict"])
            ema.n_averaged.fill_(int(ck["ema_n_averaged"]))
        start_epoch, start_step, best, history = ck["epoch"], ck["step"], ck["best"], ck["history"]
        resumed_sums = (ck["loss_sum"], ck["seen"])
        if master:
            print(f"resumed {last_path} at epoch {start_epoch + 1}, step {start_step}")
    net = nn.parallel.DistributedDataParallel(model) if ddp else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    def bundle(epoch: int, step: int, metrics: dict | None = None) -> dict[str, Any]:
        return {"spec": spec.to_dict(), "config": cfg.to_dict(), "epoch": epoch, "step": step,
                "state_dict": model.state_dict(), "ema_state_dict": ema.module.state_dict() if ema else None,
                "metrics": metrics or {}}

    def save_last(epoch: int, step: int, loss_sum: float, seen: int) -> None:
        if master:
            save_checkpoint(last_path, {**bundle(epoch, step), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                        "best": best, "history": history, "loss_sum": loss_sum, "seen": seen,
                                        "ema_n_averaged": int(ema.n_averaged) if ema else 0})

    estimator = Estimator(ema.module if ema else model, spec, device=device)
    log = open(out / "log.jsonl", "a") if master else None

    # ---- the loop
    for epoch in range(start_epoch, cfg.epochs):
        net.train()
        gen = torch.Generator().manual_seed(_seed_for(cfg.seed, epoch))
        order = torch.randperm(n, generator=gen) if len(sources) == 1 else _epoch_order(sizes, [src.weight for src in sources],
                                                                                        cfg.epoch_size, gen)
        loss_sum, seen = resumed_sums if epoch == start_epoch and start_step else (0.0, 0)
        stage_loss = "dldl" if epoch < cfg.kl_only_epochs else cfg.loss
        loss_fn = get_objective(stage_loss).loss
        t0 = time.time()
        bar = progress_bar(master and cfg.progress, steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}")
        for step in range(start_step if epoch == start_epoch else 0, steps_per_epoch):
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size][rank::world]
            if device_images is not None:
                images = device_images[idx.to(device)].permute(0, 3, 1, 2)
            else:
                images = torch.from_numpy(train_images[idx.numpy()]).to(device, non_blocking=True).permute(0, 3, 1, 2)
            gen = torch.Generator().manual_seed(_seed_for(cfg.seed, epoch, step, rank))
            x = train_transform(images, aug, generator=gen)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y, target = y_all[idx].to(device), target_all[idx].to(device)
            with autocast:
                output = net(x)
            loss = loss_fn(output.float(), target, y, labels, lam=cfg.lam, kl_reduction=cfg.kl_reduction,
                           bounds=(low_all[idx].to(device), high_all[idx].to(device)))
            if not torch.isfinite(loss):
                kept = f"the last good checkpoint is {last_path}" if last_path.exists() else "no checkpoint was written yet"
                raise DldlError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; stopped, {kept}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
            loss_sum += loss.item() * len(idx)
            seen += len(idx)
            bar.advance(f"loss {loss_sum / seen:.4f}")
            if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < steps_per_epoch:
                save_last(epoch, step + 1, loss_sum, seen)
        bar.close()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        train_time = time.time() - t0
        if master:
            vals = {src.name: prediction_report(estimator.predict_arrays(images, cfg.tta_flip), src.val, cfg.task)
                    for src, images in zip(sources, val_images)}
            val = vals[sources[0].name] if len(sources) == 1 else _mean_report(vals)
            row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "val_mae": val["mae"], "val_cs5": val["cs5"],
                   **({f"val_mae/{k}": v["mae"] for k, v in vals.items()} if len(sources) > 1 else {}), "lr": lr,
                   "loss": stage_loss, "seconds": round(train_time, 2), "images_per_s": round(seen * world / max(train_time, 1e-9), 2)}
            history.append(row)
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(f"epoch {epoch + 1:3d}  loss {row['train_loss']:.4f}  val MAE {val['mae']:.3f}  "
                  f"{row['images_per_s']:.1f} img/s  {train_time:.0f}s")
            if val["mae"] < best:
                best = val["mae"]
                save_checkpoint(best_path, bundle(epoch + 1, 0, {"val": val}))
        save_last(epoch + 1, 0, 0.0, 0)
        start_step = 0

    # ---- final report on the best model
    report: dict[str, Any] = {"config": cfg.to_dict(), "history": history, "best_val_mae": best}
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
    if ddp:
        dist.destroy_process_group()
    return report
