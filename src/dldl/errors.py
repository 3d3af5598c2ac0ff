"""Errors a user can cause. Each carries one line that names the file and the problem.

The CLI prints ``str(error)`` for these and exits non-zero, without a traceback (unless ``--debug``).
"""

from __future__ import annotations

from pathlib import Path


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
