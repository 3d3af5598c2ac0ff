"""Checkpoint files: atomic torch writes, safe (weights-only) reads, clear errors.

A checkpoint is a plain dict of tensors and Python primitives saved with ``torch.save``; it is read
back with ``torch.load(weights_only=True)``, which never unpickles code. Writes go to a temporary
file in the same folder, are flushed to disk, then renamed over the target, so a crash or ``kill -9``
mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

from dldl.errors import CheckpointError, first_line
from dldl.files import atomic_path
from dldl.lazy import lazy_import

torch = lazy_import("torch")  # on first save/load

FORMAT = "dldl"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` (plus format tags) to ``path``; returns the path.

    Raises:
        CheckpointError: the write failed (a full disk, a read-only folder); the previous file at
            ``path`` is kept and no partial file is left.
    """
    try:
        with atomic_path(path) as tmp:
            torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, tmp)
    except (OSError, RuntimeError) as e:  # torch reports a full disk as RuntimeError ("failed writing file")
        kept = "the previous file is kept" if Path(path).exists() else "nothing was written"
        raise CheckpointError(path, f"could not be written ({first_line(e)[:120]}); {kept}") from None
    return Path(path)


def model_weights(payload: dict[str, Any]) -> dict[str, Any]:
    """The state dict a checkpoint is used with: its EMA copy when it has one, else the training weights.

    >>> model_weights({"state_dict": {"w": 1}, "ema_state_dict": None})
    {'w': 1}
    >>> model_weights({"state_dict": {"w": 1}, "ema_state_dict": {"w": 2}})
    {'w': 2}
    """
    return payload.get("ema_state_dict") or payload["state_dict"]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` onto the CPU, weights-only.

    Raises:
        CheckpointError: missing, empty, truncated/corrupted, not a dldl file, or a newer format.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, "checkpoint file not found")
    if p.stat().st_size == 0:
        raise CheckpointError(p, "checkpoint file is empty (0 bytes)")
    if not zipfile.is_zipfile(p):
        raise CheckpointError(p, "checkpoint is truncated or corrupted (not a complete torch zip archive)")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().split(".")[0] or "unpickling failed"
        raise CheckpointError(p, f"refused to load: it holds more than plain weights ({first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = first_line(e)
        raise CheckpointError(p, f"checkpoint is truncated or corrupted ({first})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(p, "not a dldl checkpoint (no 'format: dldl' tag)")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(p, f"written by a newer dldl (format {data['format_version']} > {FORMAT_VERSION})")
    return data
