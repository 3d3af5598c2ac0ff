"""Checkpoint files: atomic writes, safe (weights-only) reads, clear errors.

A checkpoint is a plain dict of tensors and Python primitives saved with ``torch.save``; it is read
back with ``torch.load(weights_only=True)``, which never unpickles code. Writes go to a temporary
file in the same folder, are flushed to disk, then renamed over the target, so a crash or ``kill -9``
mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dldl.errors import CheckpointError, first_line
from dldl.lazy import lazy_import

torch = lazy_import("torch")  # on first save/load: file_sha256 and atomic_path serve the photo pipeline too

FORMAT = "dldl"
FORMAT_VERSION = 1
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")  # atomic_path's temporary names

def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in blocks (weight files and caches can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an error it is synced
    and renamed onto ``path`` (so readers see the old file or the complete new one, never a part),
    otherwise removed. The one way dldl writes files others may read.

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("done")
    >>> (d / "a.txt").read_text(), sorted(p.name for p in d.iterdir())
    ('done', ['a.txt'])
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` left in ``folder`` when a process was killed
    mid-write (``.NAME.PID.tmp`` of a process that no longer runs); returns what was removed.

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> _ = (d / ".last.pt.999999999.tmp").write_bytes(b"partial")
    >>> [p.name for p in remove_stale_temps(d)], list(d.iterdir())
    (['.last.pt.999999999.tmp'], [])
    """
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP.match(p.name)
        if m and not process_alive(int(m["pid"])) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


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
