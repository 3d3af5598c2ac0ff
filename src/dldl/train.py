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
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dldl.checkpoint import load_checkpoint, save_checkpoint
from dldl.data.augment import AugmentConfig, train_transform
from dldl.data.cache import load_cached
from dldl.data.samples import SampleList
from dldl.data.sources import check_labels_in, load_dataset
from dldl.errors import CheckpointError, DldlError
from dldl.evaluate import prediction_report
from dldl.labels import LabelSet, gaussian_distribution, histogram_distribution
from dldl.losses import get_objective
from dldl.models import create_model
from dldl.models.imagenet import imagenet_weights_path, load_imagenet_weights
from dldl.predict import Estimator


@dataclass
class TrainConfig:
    """Everything a run depends on. Defaults are the paper's recipe at a CPU-friendly input size."""

    # data
    dataset: str = "utkface"  # see dldl.data.sources.DATASETS
    root: str | None = None  # dataset folder
    train_split: str = "coral_train"
    val_split: str | None = None  # None: hold out val_fraction of train (by filename hash)
    val_fraction: float = 0.1
    test_split: str | None = "coral_test"
    limit: int | None = None  # use only the first N training samples (smoke tests)
    task: str = "age"
    labels: str = "0:100:1"  # label set start:stop:step
    sigma: float = 2.0  # Gaussian target std when the dataset gives none
    target: str = "gaussian"  # gaussian | histogram (rater histograms, e.g. MEBeauty)
    # model
    model: str = "tiny_age_net"
    hybrid_pool: bool = True
    input_size: int = 64
    cache_size: int | None = None  # stored crop side; default input_size * 9 // 8
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
        self._coerce_numbers()
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        if self.cache_size is None:
            self.cache_size = self.input_size * 9 // 8
        if self.input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32, got {self.input_size}")
        if self.target not in ("gaussian", "histogram"):
            raise ValueError(f"target must be 'gaussian' or 'histogram', got {self.target!r}")
        get_objective(self.loss)
        if self.backbone_weights and self.init_from:
            raise ValueError("set either init_from or backbone_weights, not both")
        if not isinstance(self.labels, str):
            raise ValueError(f"labels must be text like '0:100:1' (quote it in YAML), got {self.labels!r}")
        LabelSet.parse(self.labels)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _coerce_numbers(self) -> None:
        """Numbers given as text (YAML reads ``5e-4`` as a string) become numbers; other text is an error."""
        for f in dataclasses.fields(self):
            kind = {"float": float, "float | None": float, "int": int, "int | None": int}.get(str(f.type))
            value = getattr(self, f.name)
            if kind is None or value is None:
                continue
            try:
                number = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None
            except ValueError:
                number = None
            if number is None or (kind is int and not number.is_integer()):
                raise ValueError(f"{f.name} must be a{' whole' if kind is int else ''} number, got {value!r}")
            setattr(self, f.name, kind(number))


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


def _targets(samples: SampleList, cfg: TrainConfig, labels: LabelSet) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N,)`` labels and ``(N, K)`` target distributions for a split."""
    y = torch.tensor([s.label for s in samples.samples], dtype=torch.float32)
    if cfg.target == "histogram":
        if samples.histogram_bins is None or any(s.histogram is None for s in samples.samples):
            raise DldlError(f"{samples.name}: target 'histogram' needs rater histograms, which this dataset lacks")
        counts = torch.tensor([s.histogram for s in samples.samples], dtype=torch.float64)
        return y, histogram_distribution(counts, torch.tensor(samples.histogram_bins), labels)
    sigma = torch.tensor([cfg.sigma if s.sigma is None else s.sigma for s in samples.samples])
    return y, gaussian_distribution(y, sigma, labels)


RESUME_KEYS = ("dataset", "root", "train_split", "val_split", "val_fraction", "limit", "labels", "target", "sigma",
               "model", "hybrid_pool", "input_size", "cache_size", "loss", "batch_size", "seed")
"""Settings a resumed run must share with the run that wrote ``last.pt`` (data, its order, the network)."""


def _check_resumable(ck: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    """Refuse to resume from a checkpoint written with other data, model or batch settings."""
    old = ck.get("config") or {}
    diff = [f"{k} {old[k]!r}, now {getattr(cfg, k)!r}" for k in RESUME_KEYS if k in old and old[k] != getattr(cfg, k)]
    if diff:
        raise CheckpointError(path, f"written by a run with other settings ({'; '.join(diff)}); "
                                    "resume with the same settings, or train into another --out folder")


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
    objective = get_objective(cfg.loss)
    backbone = imagenet_weights_path(cfg.model, cfg.backbone_weights) if cfg.backbone_weights else None  # fail before decoding

    # ---- data: label files -> checked samples -> decoded uint8 arrays + targets
    train_set = load_dataset(cfg.dataset, cfg.root, cfg.train_split)
    if cfg.limit:
        train_set = dataclasses.replace(train_set, samples=train_set.samples[: cfg.limit])
    if cfg.val_split:
        val_set = load_dataset(cfg.dataset, cfg.root, cfg.val_split)
    else:
        train_set, val_set = _holdout(train_set, cfg.val_fraction)
    test_set = load_dataset(cfg.dataset, cfg.root, cfg.test_split) if cfg.test_split else None
    for s in (train_set, val_set, test_set):
        if s is not None:
            check_labels_in(s, labels)
    load = lambda s: load_cached(s, cfg.cache_size, cfg.cache_dir, cfg.workers, progress=cfg.progress and master)  # noqa: E731
    train_images, val_images = load(train_set), load(val_set)
    if test_set is not None and master:
        load(test_set)  # decode (and cache) now, so a bad test image stops the run before training, not after
    y_all, target_all = _targets(train_set, cfg, labels)
    # (N, S, S, 3) uint8 copy on the device, batches gathered there (numpy gathers faster on CPU)
    device_images = torch.from_numpy(train_images).to(device) if cfg.cache_on_device else None
    n = len(train_set)
    if n < world:
        raise DldlError(f"{train_set.name}: {n} training samples cannot be shared by {world} processes")

    # ---- model, optimiser, schedule
    model = create_model(cfg.model, num_labels=objective.num_outputs(labels), hybrid_pool=cfg.hybrid_pool)
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
    steps_per_epoch = math.ceil(n / cfg.batch_size)
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
        return {"model": {"name": cfg.model, "num_outputs": objective.num_outputs(labels), "hybrid_pool": cfg.hybrid_pool},
                "labels": labels.to_dict(), "loss": cfg.loss, "task": cfg.task, "input_size": cfg.input_size,
                "cache_size": cfg.cache_size, "config": cfg.to_dict(), "epoch": epoch, "step": step,
                "state_dict": model.state_dict(), "ema_state_dict": ema.module.state_dict() if ema else None,
                "metrics": metrics or {}}

    def save_last(epoch: int, step: int, loss_sum: float, seen: int) -> None:
        if master:
            save_checkpoint(last_path, {**bundle(epoch, step), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                        "best": best, "history": history, "loss_sum": loss_sum, "seen": seen,
                                        "ema_n_averaged": int(ema.n_averaged) if ema else 0})

    estimator = Estimator(ema.module if ema else model, labels, cfg.loss, cfg.input_size, cfg.cache_size, cfg.task, device=device)
    log = open(out / "log.jsonl", "a") if master else None

    # ---- the loop
    for epoch in range(start_epoch, cfg.epochs):
        net.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(_seed_for(cfg.seed, epoch)))
        loss_sum, seen = resumed_sums if epoch == start_epoch and start_step else (0.0, 0)
        stage_loss = "dldl" if epoch < cfg.kl_only_epochs else cfg.loss
        loss_fn = get_objective(stage_loss).loss
        t0 = time.time()
        bar = _progress(master and cfg.progress, steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}")
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
            loss = loss_fn(output.float(), target, y, labels, lam=cfg.lam, kl_reduction=cfg.kl_reduction)
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
            val = prediction_report(estimator.predict_arrays(val_images, cfg.tta_flip), val_set, cfg.task)
            row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "val_mae": val["mae"], "val_cs5": val["cs5"],
                   "lr": lr,
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
        if test_set is not None:
            test_images = load(test_set)  # from the cache built before training
            for key, flip in (("test", True), ("test_no_flip", False)):
                report[key] = prediction_report(final.predict_arrays(test_images, flip), test_set, cfg.task)
            print(f"test MAE {report['test']['mae']:.3f} (flip TTA), {report['test_no_flip']['mae']:.3f} (no TTA)")
        (out / "report.json").write_text(json.dumps(report, indent=1))
    if log:
        log.close()
    if ddp:
        dist.destroy_process_group()
    return report


class _progress:
    """A rich progress bar when enabled, else nothing."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.bar = None
        if enabled:
            from rich.progress import Progress

            self.bar = Progress(*Progress.get_default_columns(), "{task.fields[info]}", transient=True)
            self.bar.start()
            self.task = self.bar.add_task(label, total=total, info="")

    def advance(self, info: str) -> None:
        if self.bar:
            self.bar.update(self.task, advance=1, info=info)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()
