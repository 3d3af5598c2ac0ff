"""Where results go: output paths checked before any work, and annotated-image names that never
collide with each other or with an input.

Every file dldl writes for a user (CSV, JSON, annotated images, exports, reports) goes through
:func:`dldl.checkpoint.atomic_path`, so a failed write leaves the previous file intact.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from collections.abc import Sequence
from pathlib import Path

from dldl.errors import DldlError


class OutputWarning(UserWarning):
    """An output path needs something the user may not expect (a folder created for it)."""


def _first_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_parent(path: Path, option: str) -> None:
    anchor = _first_existing(path.absolute().parent)
    if not anchor.is_dir():
        raise DldlError(f"{option} {path}: {anchor} is a file, not a folder")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise DldlError(f"{option} {path}: cannot write in {anchor} (permission denied or read-only)")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        return folder.is_dir() and path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def check_output_file(path: str | Path, option: str, inputs: Sequence[str | Path] = ()) -> Path:
    """``path`` if a new file can be written there (atomically: a temporary file beside it, then a
    rename), else one :class:`~dldl.errors.DldlError` line: it is one of the command's ``inputs``
    (a file, or a file inside an input folder), it is a folder, it is not a regular file
    (``/dev/full``, a FIFO), a parent is a file, or the folder is not writable. A folder that does
    not exist yet is created when the file is written, and a warning says so.

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> check_output_file(d / "out.csv", "--csv") == d / "out.csv"
    True
    >>> _ = (d / "photo.jpg").write_bytes(b"x")
    >>> check_output_file(d / "photo.jpg", "--csv", [d / "photo.jpg"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dldl.errors.DldlError: --csv ...photo.jpg: is an input of this command; writing there would destroy it: give another file name
    >>> check_output_file(d, "--csv")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dldl.errors.DldlError: --csv ...: is a folder; give a file name
    """
    p = Path(path)
    for given in map(Path, inputs):
        if _same_file(p, given) or p.absolute() == given.absolute() or _inside(p, given):
            what = "is an input of this command" if not given.is_dir() else f"lies in the input folder {given}"
            raise DldlError(f"{option} {p}: {what}; writing there would destroy it: give another file name")
    if p.is_dir():
        raise DldlError(f"{option} {p}: is a folder; give a file name")
    if p.exists() or p.is_symlink():
        try:
            mode = p.stat().st_mode
        except OSError as e:
            raise DldlError(f"{option} {p}: {e.strerror}") from None
        if not stat.S_ISREG(mode):
            raise DldlError(f"{option} {p}: not a regular file (a device, FIFO or socket); give a file name")
    _check_parent(p, option)
    if not p.absolute().parent.exists():
        warnings.warn(f"{option} {p}: the folder {p.absolute().parent} does not exist; it is created", OutputWarning, stacklevel=2)
    return p


def check_output_dir(path: str | Path, option: str) -> Path:
    """``path`` as a folder that exists (created) and is writable, else one DldlError line."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise DldlError(f"{option} {p}: is a file, not a folder")
    _check_parent(p / "x" if p.exists() else p, option)  # an existing folder must itself be writable
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DldlError(f"{option} {p}: cannot create the folder ({e.strerror})") from None
    return p


def _safe(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("_") or "image"


def output_names(inputs: Sequence[str | Path], out_dir: str | Path, tag: str, suffix: str = ".jpg") -> list[Path]:
    """One output file per input in ``out_dir``: ``<stem>_<tag><suffix>``, lengthened only where
    needed so that no two inputs share a name and no output is an input.

    Stable (the same inputs give the same names, whatever else is in the folder) and unique:
    inputs of one stem get their extension (``x_jpg_age.jpg``, ``x_png_age.jpg``), then their
    parent folders (``a_x_jpg_age.jpg``), then a counter.

    >>> [p.name for p in output_names(["a/x.jpg", "b/x.jpg", "a/x.png", "a/y.jpg"], "out", "age")]
    ['a_x_jpg_age.jpg', 'b_x_jpg_age.jpg', 'x_png_age.jpg', 'y_age.jpg']
    >>> [p.name for p in output_names(["d/x.jpg", "d/x_age.jpg"], "d", "age")]  # never over an input
    ['x_jpg_age.jpg', 'x_age_age.jpg']
    """
    out = Path(out_dir)
    paths = [Path(p) for p in inputs]
    taken = {os.path.normcase(os.path.abspath(p)) for p in paths}

    def candidates(p: Path):
        yield f"{_safe(p.stem)}_{tag}{suffix}"
        yield f"{_safe(p.stem)}_{_safe(p.suffix.lstrip('.'))}_{tag}{suffix}"
        parents = [part for part in p.absolute().parent.parts if part not in ("/", "\\")]
        for depth in range(1, len(parents) + 1):
            yield f"{_safe('_'.join(parents[-depth:]))}_{_safe(p.stem)}_{_safe(p.suffix.lstrip('.'))}_{tag}{suffix}"

    options = [list(candidates(p)) for p in paths]
    chosen: list[str | None] = [None] * len(paths)
    for level in range(max(map(len, options))):
        wanted: dict[str, list[int]] = {}
        for i, opts in enumerate(options):
            if chosen[i] is None:
                wanted.setdefault(opts[min(level, len(opts) - 1)], []).append(i)
        fixed = {c for c in chosen if c}
        for name, who in wanted.items():
            is_input = os.path.normcase(os.path.abspath(out / name)) in taken
            if len(who) == 1 and name not in fixed and not is_input:
                chosen[who[0]] = name
    for i, name in enumerate(chosen):  # the same file given twice, or deeper clashes: a counter
        if name is None:
            base = options[i][-1]
            n = 2
            while f"{Path(base).stem}-{n}{suffix}" in chosen or os.path.normcase(
                    os.path.abspath(out / f"{Path(base).stem}-{n}{suffix}")) in taken:
                n += 1
            chosen[i] = f"{Path(base).stem}-{n}{suffix}"
    return [out / name for name in chosen]  # type: ignore[operator]
