"""Errors a user can cause. Each carries one line that names the file and the problem.

The CLI prints ``str(error)`` for these and exits non-zero, without a traceback (unless ``--debug``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none.

    >>> first_line(ValueError("bad value\\nmore detail")), first_line(KeyError())
    ('bad value', 'KeyError')
    """
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class DldlError(Exception):
    """Base class of every error caused by user input (files, labels, options)."""


class DataError(DldlError, ValueError):
    """A label file, split file, image or cache is missing or malformed.

    >>> str(DataError("labels.csv", "line 3: age 'abc' is not a number"))
    "labels.csv: line 3: age 'abc' is not a number"
    """

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")

    def __reduce__(self):  # picklable, so an error raised in a decoding worker process reaches the caller
        return type(self), (self.path, self.problem)


class CheckpointError(DldlError):
    """A checkpoint or weight file is missing, partial, corrupted or of the wrong kind."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):
        return type(self), (self.path, self.problem)


class ConfigError(DldlError, ValueError):
    """An option or configuration value is not allowed: names the field, the value and what is.

    >>> str(ConfigError("batch_size", -4, "a whole number >= 1"))
    'batch_size -4: must be a whole number >= 1'
    """

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field} {value!r}: must be {allowed}")

    def __reduce__(self):
        return type(self), (self.field, self.value, self.allowed)


def run_script(main: Callable[[], int | None]) -> None:
    """Run a script's ``main`` (the ``experiments/`` and ``benchmarks/`` scripts) as the ``dldl``
    commands run: a user error (a :class:`DldlError`, or an ``OSError`` naming a path) becomes one
    ``error:`` line on stderr and exit status 2; anything else keeps its traceback, since that is a bug.

    >>> run_script(lambda: 0)
    Traceback (most recent call last):
    ...
    SystemExit: 0
    """
    try:
        code = main()
    except DldlError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        where = f"{e.filename}: " if e.filename is not None else ""
        print(f"error: {where}{e.strerror or first_line(e)}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)


def printable(text: str) -> str:
    """``text`` with file-name bytes that are not UTF-8 (surrogate escapes) shown as ``\\xNN``:
    safe to print or write as UTF-8. ``--json`` keeps the exact name (as a ``\\udcNN`` escape).

    >>> printable("caf\\udce9.jpg")
    'caf\\\\xe9.jpg'
    """
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
