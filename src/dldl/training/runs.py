"""Run folders and checkpoints: the out_dir a run owns, what ``best.pt`` and ``last.pt`` hold, and
how a run goes on from ``last.pt``.

:func:`run_folder` creates the out_dir and, on the master process, holds it (:func:`run_lock`): a
folder holding a run is refused without ``resume`` or ``overwrite``, and two runs never write into
one folder at once. Checkpoints are written atomically (:func:`dldl.checkpoint.save_checkpoint`)
from :func:`checkpoint_payload` / :func:`resume_payload`; :func:`restore` loads ``last.pt`` back,
after :func:`check_resumable` has made sure it was written with the same data, model and batches.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from torch import nn

from dldl.checkpoint import load_checkpoint
from dldl.errors import CheckpointError, DldlError
from dldl.files import atomic_path, process_alive, remove_stale_temps
from dldl.models.spec import ModelSpec
from dldl.training.config import TrainConfig


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


RESUME_KEYS = ("dataset", "root", "train_split", "val_split", "val_fraction", "limit", "labels", "target", "sigma",
               "model", "model_kwargs", "input_size", "cache_size", "loss", "batch_size", "seed", "sources", "epoch_size",
               "template", "freeze")
"""Settings a resumed run must share with the run that wrote ``last.pt`` (data, its order, the network)."""


def check_resumable(ck: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    """Refuse to resume from a checkpoint written with other data, model or batch settings."""
    old = ck.get("config") or {}
    diff = [f"{k} {old[k]!r}, now {getattr(cfg, k)!r}" for k in RESUME_KEYS if k in old and old[k] != getattr(cfg, k)]
    if diff:
        raise CheckpointError(path, f"written by a run with other settings ({'; '.join(diff)}); "
                                    "resume with the same settings, or train into another --out folder")


def restore(path: Path, cfg: TrainConfig, model: nn.Module, ema: Any, optimizer: Any, scheduler: Any) -> RunState:
    """Load ``last.pt`` into the model, EMA, optimiser and schedule (refused when written with
    other data, model or batch settings); the state to go on from."""
    ck = load_checkpoint(path)
    check_resumable(ck, cfg, path)
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


@contextlib.contextmanager
def run_folder(cfg: TrainConfig, master: bool) -> Iterator[Path]:
    """``cfg.out_dir``, created, for the run: held by :func:`run_lock` on the master process (the
    other DDP processes only read and write where the master allows)."""
    out = Path(cfg.out_dir)
    if not master:
        out.mkdir(parents=True, exist_ok=True)
        yield out
        return
    with run_lock(out, cfg):
        yield out


def open_log(out: Path, history: list[dict[str, Any]]) -> IO[str]:
    """``out/log.jsonl``, open for appending, rewritten first to hold the rows of ``history`` alone:
    the log is the checkpoint's history, so rows a killed run logged after its last save go."""
    with atomic_path(out / "log.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(row) + "\n" for row in history))
    return open(out / "log.jsonl", "a")
