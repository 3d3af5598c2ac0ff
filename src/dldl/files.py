"""Files, without torch: atomic writes, hashes and the cache folder.

The photo pipeline needs these and nothing heavier, so they live apart from torch checkpoints
(:mod:`dldl.checkpoint`). Every file dldl writes for a user or a run goes through
:func:`atomic_path` (or :func:`write_atomic`), so a crash or ``kill -9`` mid-write leaves the
previous file intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")  # atomic_path's temporary names


def cache_dir() -> Path:
    """dldl's cache folder: ``$DLDL_CACHE`` if set and not empty (``~`` expanded), else
    ``~/.cache/dldl`` (decoded images, ONNX copies of the shipped models).

    >>> os.environ["DLDL_CACHE"] = "~/x"; cache_dir() == Path.home() / "x"
    True
    >>> os.environ["DLDL_CACHE"] = ""; cache_dir() == Path.home() / ".cache" / "dldl"
    True
    >>> del os.environ["DLDL_CACHE"]
    """
    given = os.environ.get("DLDL_CACHE", "").strip()
    return Path(given).expanduser() if given else Path.home() / ".cache" / "dldl"


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
    except OSError as e:  # a full disk or a failed write names the file it was for, not the temporary one
        if e.filename is None or os.fspath(e.filename) == os.fspath(tmp):
            raise OSError(e.errno, e.strerror or str(e), os.fspath(p)) from e
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, write: Callable[..., Any], *args: Any, **kwargs: Any) -> Path:
    """``write(tmp, *args, **kwargs)`` on a temporary path, then renamed onto ``path``
    (:func:`atomic_path`); returns ``path``.

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> write_atomic(d / "b.txt", Path.write_text, "done").read_text()
    'done'
    """
    with atomic_path(path) as tmp:
        write(tmp, *args, **kwargs)
    return Path(path)


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
