"""Results as Parquet: one row a face, the columns of :data:`dldl.results.FIELDS`.

The rows are :meth:`~dldl.results.PhotoResult.records` (those of the CSV): one a face, or one for a
photo without a face or with an error (its ``error`` says which). The Arrow schema is derived from
:data:`~dldl.results.FIELDS` by :func:`schema`, so the columns are the JSON's keys with native types:
lists as Arrow lists, the distribution as a struct ``{labels, probs}``, the estimate named after the
task. ``dldl predict --parquet FILE`` writes one file (:func:`write`); ``dldl batch`` writes a folder
of part files (:func:`write_part`) and resumes from the photos already in it (:func:`done_paths`).

pyarrow is optional (``pip install 'dldl[parquet]'``): this module imports it only when called.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dldl.errors import DldlError, first_line
from dldl.files import atomic_path
from dldl.results import FIELDS, PhotoResult, field_names

if TYPE_CHECKING:
    import pyarrow as pa

INSTALL = "pip install 'dldl[parquet]'"
"""What installs pyarrow for dldl (``dldl[ray]`` includes it)."""
SUFFIX = ".parquet"


def require_pyarrow(what: str = "--parquet") -> Any:
    """The ``pyarrow`` module, or one :class:`~dldl.errors.DldlError` line saying ``what`` needs it
    and how to install it."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise DldlError(f"{what} needs pyarrow, which is not installed: {INSTALL}") from None
    return pyarrow


def arrow_type(kind: Any) -> pa.DataType:
    """The Arrow type of a :class:`~dldl.results.Field`'s Python ``type``: ``X | None`` as ``X``
    (every column is nullable), ``list[X]`` as a list of ``X``, ``str``/``int``/``float`` as
    string/int64/float64, and ``dict`` (the one mapping, a distribution) as ``{labels, probs}``.
    (No doctests here: pyarrow is optional.)"""
    pa = require_pyarrow("Parquet output")
    if isinstance(kind, types.UnionType):
        (kind,) = [k for k in typing.get_args(kind) if k is not type(None)]
    if typing.get_origin(kind) is list:
        return pa.list_(arrow_type(typing.get_args(kind)[0]))
    if kind is dict:
        return pa.struct([("labels", pa.list_(pa.float64())), ("probs", pa.list_(pa.float64()))])
    simple = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
    if kind not in simple:
        raise TypeError(f"no Arrow type for {kind!r}")
    return simple[kind]


def schema(task: str) -> pa.Schema:
    """The Arrow schema of ``task``'s rows: the columns of :func:`~dldl.results.field_names`, in order."""
    pa = require_pyarrow("Parquet output")
    kinds = {f.name.format(task=task): f.type for f in FIELDS}
    return pa.schema([(name, arrow_type(kinds[name])) for name in field_names(task)])


def table(results: Iterable[PhotoResult], task: str, distribution: bool = False) -> pa.Table:
    """The rows of ``results`` (:meth:`~dldl.results.PhotoResult.records`) as one Arrow table of :func:`schema`."""
    pa = require_pyarrow("Parquet output")
    return pa.Table.from_pylist([r for result in results for r in result.records(distribution)], schema=schema(task))


def write_table(path: str | Path, rows: pa.Table) -> Path:
    """``rows`` into the Parquet file ``path``, atomically (a reader sees no file or the whole one)."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(rows, tmp)
    return Path(path)


def write(path: str | Path, results: list[PhotoResult], task: str, distribution: bool = False) -> Path:
    """``results`` as one Parquet file at ``path`` (``dldl predict --parquet``), atomically."""
    return write_table(path, table(results, task, distribution))


def part_files(folder: str | Path) -> list[Path]:
    """The Parquet part files of ``folder`` (temporary files of a write in progress are hidden, so never counted)."""
    return sorted(p for p in Path(folder).glob(f"*{SUFFIX}") if not p.name.startswith(".") and p.is_file())


def write_part(folder: str | Path, name: str, rows: pa.Table) -> Path:
    """``rows`` as the part file ``folder/name.parquet``, atomically: until it is complete it is a
    hidden temporary file that :func:`part_files` and :func:`done_paths` do not see."""
    return write_table(Path(folder) / f"{name}{SUFFIX}", rows)


def done_paths(folder: str | Path, task: str, sha256: str | None) -> set[str]:
    """The photo ids (``path``) that the part files of ``folder`` hold, to skip them on a re-run.

    Raises:
        DldlError: a part file that cannot be read, or that holds rows of another task or model
            (one folder holds the rows of one model).
    """
    import pyarrow.parquet as pq

    done: set[str] = set()
    for part in part_files(folder):
        try:
            rows = pq.read_table(part, columns=["path", "task", "model_sha256"])
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise DldlError(f"{part}: not a readable Parquet file of dldl rows ({first_line(e)}); "
                            "move it out of the output folder") from None
        tasks = set(rows.column("task").to_pylist()) - {None, task}
        shas = set(rows.column("model_sha256").to_pylist()) - {None, sha256}
        if tasks or (sha256 and shas):
            other = f"{sorted(tasks)[0]} rows" if tasks else f"rows of another model (sha256 {sorted(shas)[0][:12]})"
            raise DldlError(f"{part}: holds {other}, not {task} rows of this model; give another output folder")
        done.update(rows.column("path").to_pylist())
    return done
