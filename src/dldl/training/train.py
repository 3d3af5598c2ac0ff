"""Training: one flat loop, read top to bottom.

``train(TrainConfig(...))`` runs named steps -- :func:`setup_process` (device, DDP, threads,
seed), :func:`~dldl.training.runs.run_folder` (the out_dir, locked), :func:`~dldl.training.mixing.load_sources`
(each source's splits, with defaults from the dataset registry),
:func:`~dldl.training.mixing.load_training_data` (label checks, the decoded uint8 cache, targets of
each source's kind), :func:`model_spec` and :func:`build_model`, :func:`~dldl.training.runs.restore`
(resume) -- then the loop itself: Adam with a step schedule, per-source validation every epoch, the
best-by-validation model, and atomic resumable checkpoints; finally the test split of each source
is reported.

Mixed training: ``sources=[{dataset, root, weight, ...}, ...]`` draws ``epoch_size`` samples an
epoch, each source in proportion to its weight, each sample with its own target kind (Gaussian,
rater histogram, interval).

Reproducibility: the data order of epoch ``e`` comes from ``(seed, e)`` and the augmentation of
step ``s`` from ``(seed, e, s, rank)``, so a run resumed from any checkpoint follows the same path
as an uninterrupted one. Multi-GPU / multi-process: launch with ``torchrun`` (DDP; gloo on CPU).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from dldl import hub
from dldl.checkpoint import model_weights, save_checkpoint
from dldl.data.augment import AugmentConfig, train_transform
from dldl.data.cache import load_cached
from dldl.devices import resolve_device
from dldl.errors import ConfigError, DldlError
from dldl.evaluate import prediction_report
from dldl.labels import LabelSet
from dldl.losses import consistency_loss, distribution_consistency_loss, get_objective, pearson_loss
from dldl.models.backbone_weights import backbone_weights_path, load_backbone_weights
from dldl.models.spec import ModelSpec
from dldl.progress import progress_bar
from dldl.runtime import Estimator
from dldl.training.config import TrainConfig, need
from dldl.training.mixing import Source, load_sources, load_training_data, seed_for
from dldl.training.runs import RunState, checkpoint_payload, open_log, restore, resume_payload, run_folder


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


def model_spec(cfg: TrainConfig, sources: list[Source]) -> ModelSpec:
    """The :class:`ModelSpec` of the model a run trains (stored with every checkpoint)."""
    labels = [b for src in sources if not src.taught for s in src.train.samples for b in s.bounds]
    return ModelSpec(cfg.model, LabelSet.parse(cfg.labels), cfg.loss, cfg.input_size, cfg.task, cfg.template, cfg.model_kwargs,
                     cfg.cache_size, label_range=(min(labels), max(labels)) if labels else None)


def build_model(cfg: TrainConfig, spec: ModelSpec, proc: Process, backbone: Path | None, resuming: bool) -> nn.Module:
    """The network of ``spec`` on ``proc.device``: initialised from ``init_from`` (:func:`load_init_from`)
    or pre-trained ``backbone`` weights (unless resuming), SyncBN under multi-GPU DDP, channels_last when asked."""
    model = spec.create_model()
    if cfg.init_from:
        load_init_from(model, spec, cfg.init_from)
    elif backbone and not resuming:
        load_backbone_weights(model, backbone)
    model.to(proc.device)
    if proc.ddp and proc.device.type == "cuda":  # SyncBatchNorm needs CUDA (NCCL); with gloo on CPU each process keeps its own BN
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def head_keys(spec: ModelSpec) -> set[str]:
    """The tensors of ``spec``'s network whose shapes follow its number of outputs: its head."""
    from dldl.models import create_model

    own = spec.create_model().state_dict()
    wider = create_model(spec.architecture, num_outputs=spec.num_outputs + 1, **spec.model_kwargs).state_dict()
    return {k for k, v in own.items() if k not in wider or wider[k].shape != v.shape}


def load_init_from(model: nn.Module, spec: ModelSpec, name: str) -> int:
    """Load the model ``name`` (a checkpoint, run folder or shipped name; :func:`dldl.hub.checkpoint`,
    sha256 checked; its EMA copy when it has one, the weights it is evaluated with) into ``model``, the
    network of ``spec``. Every tensor of the backbone must fit; the head is loaded when it fits too,
    else it starts afresh and a warning says so (another label set or objective). Returns the
    number of tensors loaded.

    Raises:
        ConfigError: ``name`` holds another network (another architecture or options), naming how
            many of the backbone's tensors fit.
    """
    weights, payload = hub.checkpoint(name)
    try:
        source: ModelSpec | None = ModelSpec.from_payload(payload, weights.path)
    except DldlError:  # a bare payload of weights: only the tensors tell
        source = None
    src, own = model_weights(payload), model.state_dict()
    fits = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
    head = head_keys(spec)
    backbone = [k for k in own if k not in head]
    fitting = sum(k in fits for k in backbone)
    if fitting < len(backbone) or (source is not None and source.architecture != spec.architecture):
        what = f"a {source.architecture} {source.model_kwargs or ''}".rstrip() if source is not None else "another network"
        raise ConfigError("init_from", name, f"a model of this run's network, {spec.architecture} {spec.model_kwargs or ''}"
                          f"(it is {what}: {fitting} of {len(backbone)} backbone tensors fit); set model (and model_kwargs) "
                          "to its own, or leave them unset to take its")
    model.load_state_dict(fits, strict=False)
    if not head <= set(fits):
        theirs = f"{source.objective} over {source.labels.start:g}:{source.labels.stop:g}:{source.labels.step:g}" if source else "another head"
        ours = f"{spec.objective} over {spec.labels.start:g}:{spec.labels.stop:g}:{spec.labels.step:g}"
        warnings.warn(f"init_from {name}: its head ({theirs}) does not fit this run's ({ours}); the head starts "
                      "from scratch, the backbone is kept", stacklevel=2)
    return len(fits)


def freeze(model: nn.Module, prefixes: list[str]) -> list[nn.Module]:
    """Keep the parameters named ``prefix...`` as they are (no gradient) and return the batch-norm
    layers among them, whose statistics :func:`train_mode` keeps too.

    Raises:
        ConfigError: a prefix names no parameter (naming the network's top-level parts).
    """
    if not prefixes:
        return []
    names = [n for n, _ in model.named_parameters()]
    for prefix in prefixes:
        parts = sorted({n.split(".")[0] for n in names})
        need(any(n.startswith(prefix) for n in names), "freeze", prefix,
             f"a prefix of this network's parameter names (its parts: {', '.join(parts)})")
    frozen = lambda n: any(n.startswith(p) for p in prefixes)  # noqa: E731
    for n, p in model.named_parameters():
        if frozen(n):
            p.requires_grad_(False)
    return [m for n, m in model.named_modules() if frozen(n) and isinstance(m, nn.modules.batchnorm._BatchNorm)]


def train_mode(net: nn.Module, frozen: list[nn.Module]) -> None:
    """``net`` in training mode, but the ``frozen`` batch-norm layers in eval mode (their statistics kept)."""
    net.train()
    for m in frozen:
        m.eval()


def _validate(estimator: Estimator, sources: list[Source], data: Any, cfg: TrainConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The validation report of each source with a validation split, and the one report models are
    selected by: a single source's, else the mean of their ``mae`` and ``cs5`` (every source alike)."""
    vals = {src.name: prediction_report(estimator.predict_arrays(images, cfg.tta_flip), src.val, cfg.task)
            for src, images in zip(sources, data.val_images) if images is not None}
    if len(sources) == 1:
        return vals, vals[sources[0].name]
    return vals, {k: float(np.mean([r[k] for r in vals.values()])) for k in ("mae", "cs5")}


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run one training job; returns the final report (also written to ``out_dir/report.json``).

    The out_dir is locked for the run (:func:`~dldl.training.runs.run_folder`): a folder holding a
    run is refused without ``resume`` or ``overwrite``, and two runs never write into one folder at once.
    """
    proc = setup_process(cfg)
    with run_folder(cfg, proc.master) as out:
        return _train(cfg, proc, out)


def _train(cfg: TrainConfig, proc: Process, out: Path) -> dict[str, Any]:
    device, master = proc.device, proc.master
    last_path, best_path = out / "last.pt", out / "best.pt"
    labels = LabelSet.parse(cfg.labels)
    backbone = backbone_weights_path(cfg.model, cfg.backbone_weights) if cfg.backbone_weights else None  # fail before decoding
    resuming = cfg.resume and last_path.exists()
    # the network does not depend on the data: built first, so a wrong init_from or freeze fails before decoding
    model = build_model(cfg, model_spec(cfg, []), proc, backbone, resuming)
    frozen = freeze(model, cfg.freeze)

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

    # ---- model, optimiser, schedule, EMA, resume
    spec = model_spec(cfg, sources)  # with the label range of the data, for the checkpoints
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
    log = open_log(out, state.history) if master else None
    if cfg.init_from and master and not resuming:  # the start is a candidate: a fine-tune never ends worse on validation
        start = _validate(estimator, sources, data, cfg)[1]
        state.best = start["mae"]
        save_checkpoint(best_path, checkpoint_payload(spec, cfg, model, ema, 0, 0, {"val": start}))
        print(f"epoch   0  val MAE {start['mae']:.3f}  (init_from {cfg.init_from}, before training)")

    # ---- the loop
    for epoch in range(state.epoch, cfg.epochs):
        train_mode(net, frozen)
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
            gen = torch.Generator().manual_seed(seed_for(cfg.seed, epoch, step, proc.rank))
            # the global generator (dropout, ...) is seeded by (seed, epoch, step) too, so a run resumed
            # from any step draws exactly what the uninterrupted run drew
            torch.manual_seed(seed_for(cfg.seed, epoch, step, proc.rank, "global"))
            x = train_transform(images, aug, generator=gen)
            if cfg.consistency > 0:  # a second draw of the augmentation of the same faces, in the same batch
                x = torch.cat([x, train_transform(images, aug, generator=gen)])
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y, target = data.y[idx].to(device), data.target[idx].to(device)
            with autocast:
                output = net(x)
            if cfg.consistency > 0:
                output, other = output.chunk(2)
            loss = objective.loss(output.float(), target, y, labels, lam=cfg.lam, kl_reduction=cfg.kl_reduction,
                                  bounds=(data.low[idx].to(device), data.high[idx].to(device)))
            if cfg.consistency > 0 and cfg.consistency_on == "distribution":
                loss = loss + cfg.consistency * distribution_consistency_loss(output, other)
            elif cfg.consistency > 0:
                loss = loss + cfg.consistency * consistency_loss(objective.estimate(output.float(), labels),
                                                                 objective.estimate(other.float(), labels))
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
            vals, val = _validate(estimator, sources, data, cfg)
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
