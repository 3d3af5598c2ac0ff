"""Millions of photos: the photo pipeline on a Ray cluster, the rows written as Parquet part files.

:func:`predict_dataset` maps a Ray Dataset of photos (rows with a ``path``, and their ``bytes`` when
read by ``ray.data.read_binary_files(..., include_paths=True)``) through a pool of actors, each
holding one :class:`~dldl.predictor.Predictor` loaded once, with ONNX Runtime's threads set to the
actor's CPUs; it returns a Dataset of face rows (:func:`dldl.parquet.schema`: the columns of
``dldl predict --json``). A photo that cannot be read gives an error row, never a failed job; an
actor that dies is restarted and its batch retried by Ray (``max_restarts``, ``max_task_retries``).

:func:`run` is what ``dldl batch`` runs: connect to a cluster (``address``, else ``RAY_ADDRESS``,
else a local one), skip the photos whose rows are already in the output folder, and write the rows
as they arrive into part files, each atomically (:func:`write_parts`), dropping the rows of a batch
that came twice. ray is optional: ``pip install 'dldl[ray]'``. How to run it on a cluster, and what
a failure costs: ``docs/SCALE.md``.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dldl import parquet
from dldl.data.images import IMAGE_SUFFIXES
from dldl.errors import DldlError, first_line
from dldl.predictor import Predictor, expand_paths, pipeline
from dldl.results import NO_FACE, PhotoResult

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

INSTALL = "pip install 'dldl[ray]'"
"""What installs ray (and pyarrow) for dldl."""
BATCH_SIZE = 16
"""Photos per batch sent to an actor: large enough to hide the per-call cost, small enough that a
restarted actor redoes little."""
ROWS_PER_FILE = 10_000
"""Rows gathered before a part file is written (a part file is the unit a re-run skips)."""
IN_FLIGHT = 2
"""Batches sent to an actor at a time (one running, one waiting: its photos arrive while the first
runs); what an actor killed mid-run has to do again."""
TASK_RETRIES = 3
"""How many times a batch is retried on a restarted actor after its actor died; a batch that
kills its actor more often stops the job (the rows written so far stay, a re-run resumes)."""


def require_ray(what: str = "dldl batch") -> Any:
    """The ``ray`` module (with pyarrow and ray.data), or one :class:`~dldl.errors.DldlError` line
    saying ``what`` needs it and how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise DldlError(f"{what} needs ray, which is not installed: {INSTALL}") from None
    parquet.require_pyarrow(what)
    return ray


class PhotoRows:
    """The callable class of :func:`predict_dataset`: one :class:`~dldl.predictor.Predictor` per
    actor, loaded when the actor starts; each call turns a batch of photos into their rows."""

    def __init__(self, task: str, model: str, threads: int = 1, crops: bool = False, min_score: float = 0.7,
                 min_face_size: float = 20.0, tta: bool | None = None, distribution: bool = False) -> None:
        self.predictor: Predictor = pipeline(task, model, "cpu", "auto", crops, min_score, min_face_size, tta,
                                             cache=False, threads=threads)
        self.distribution = distribution
        self.schema = parquet.schema(self.predictor.estimator.task)

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        names = batch.column_names
        if "path" not in names:
            raise DldlError(f"predict_dataset needs rows with a 'path' (and 'bytes' for photos read as bytes), got {names}")
        paths = [str(p) for p in batch.column("path").to_pylist()]
        blobs = batch.column("bytes").to_pylist() if "bytes" in names else [None] * len(paths)
        records = [r for path, blob in zip(paths, blobs) for r in self.photo(path, blob).records(self.distribution)]
        return pa.Table.from_pylist(records, schema=self.schema)

    def photo(self, path: str, blob: bytes | None) -> PhotoResult:
        """One photo, read from ``path`` or given as ``blob``, as its result; never raises."""
        try:
            return self.predictor.safe(path if blob is None else blob, name=path)
        except Exception as e:  # not a bad photo but a failure on one: an error row names it, the job goes on
            return self.predictor.error(path, f"{path}: {type(e).__name__}: {first_line(e)}")


def check_model(task: str, model: str | None, crops: bool = False, min_score: float = 0.7,
                min_face_size: float = 20.0, tta: bool | None = None) -> Predictor:
    """The predictor an actor will load, loaded here first (once a process): a bad model or setting
    is one line before any cluster work, and a local cluster finds the model's ONNX copy in the cache."""
    return pipeline(task, model, "cpu", "auto", crops, min_score, min_face_size, tta, threads=1)


def default_workers(cpus_per_worker: float = 1) -> int:
    """Actors for the cluster ``ray.init`` connected to: its CPUs, less one for the tasks that read
    and move the data, divided by ``cpus_per_worker``; at least one."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 1.0)
    return max(1, int((cpus - 1) // cpus_per_worker))


def predict_dataset(ds: ray.data.Dataset, task: str = "age", model: str | None = None, *, workers: int | None = None,
                    cpus_per_worker: float = 1, batch_size: int = BATCH_SIZE, crops: bool = False, min_score: float = 0.7,
                    min_face_size: float = 20.0, tta: bool | None = None, distribution: bool = False,
                    task_retries: int = TASK_RETRIES) -> ray.data.Dataset:
    """A Dataset of photos -> a Dataset of their rows (:func:`dldl.parquet.schema`), one a face or
    one for a photo without a face or with an error, computed by ``workers`` actors
    (:func:`default_workers` if not given) of ``cpus_per_worker`` CPUs each.

    ``ds``: rows with a ``path`` (a file every worker can read) and, optionally, the photo's
    ``bytes`` (``ray.data.read_binary_files(paths, include_paths=True)``; the path is then its id).
    The other arguments are those of :func:`dldl.pipeline`. Lazy, as Ray Datasets are: nothing runs
    until the rows are read (``write_parts``, ``iter_batches``, ``write_parquet``, ``take_all``).

    Raises:
        DldlError: ray or pyarrow missing, an unknown task, a bad model or setting (one line, before any work).
    """
    ray = require_ray("predict_dataset")
    if not 0 < cpus_per_worker <= 1024 or batch_size < 1 or (workers is not None and workers < 1):
        raise DldlError(f"workers {workers}, cpus_per_worker {cpus_per_worker}, batch_size {batch_size}: "
                        "give at least one worker of more than 0 CPUs and batches of at least one photo")
    probe = check_model(task, model, crops, min_score, min_face_size, tta)
    settings = dict(task=probe.estimator.task, model=probe.model, threads=max(1, int(cpus_per_worker)), crops=crops,
                    min_score=min_score, min_face_size=min_face_size, tta=tta, distribution=distribution)
    pool = ray.data.ActorPoolStrategy(size=workers or default_workers(cpus_per_worker), max_tasks_in_flight_per_actor=IN_FLIGHT)
    with warnings.catch_warnings():  # Ray 2.60 names no parameter for these two yet, and warns of the pass-through
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        return ds.map_batches(PhotoRows, fn_constructor_kwargs=settings, batch_format="pyarrow", batch_size=batch_size,
                              compute=pool, num_cpus=cpus_per_worker, max_restarts=-1, max_task_retries=task_retries)


@dataclass
class Counts:
    """What a run wrote: photos, faces, photos without a face, photos that could not be read
    (``errors``), rows dropped because they came twice (a retried batch), and the part files."""

    photos: int = 0
    faces: int = 0
    no_face: int = 0
    errors: int = 0
    duplicates: int = 0
    parts: list[Path] = field(default_factory=list)

    def add(self, block: pa.Table, seen: set[tuple[str, int | None]]) -> pa.Table:
        """Count the rows of ``block`` not ``seen`` before (by photo and face) and return them."""
        keep = []
        columns = (block.column(name).to_pylist() for name in ("path", "face", "error"))
        for i, (path, face, error) in enumerate(zip(*columns)):
            if (path, face) in seen:
                self.duplicates += 1
                continue
            seen.add((path, face))
            keep.append(i)
            self.photos += face in (None, 1)
            self.faces += face is not None
            self.no_face += face is None and error == NO_FACE
            self.errors += face is None and error != NO_FACE
        return block if len(keep) == block.num_rows else block.take(keep)

    def line(self, total: int | None = None, seconds: float | None = None) -> str:
        """``120/500 photos, 131 faces, 2 errors, 9 without a face, 24.0 photos/s``."""
        rate = f", {self.photos / seconds:.1f} photos/s" if seconds else ""
        return (f"{self.photos}{'' if total is None else f'/{total}'} photos, {self.faces} faces, {self.errors} errors, "
                f"{self.no_face} without a face{rate}")


def write_parts(rows: ray.data.Dataset, out: str | Path, rows_per_file: int = ROWS_PER_FILE,
                on_block: Callable[[Counts], None] | None = None) -> Counts:
    """Read ``rows`` (:func:`predict_dataset`) block by block and write them into ``out`` as part
    files of about ``rows_per_file`` rows, each written atomically and named by run, so a re-run
    never replaces one. A block holds whole photos (the rows of one batch), so a part file never
    holds part of a photo; a row that comes twice (a batch retried after its rows arrived) is
    dropped. What arrived before an error or an interrupt is written before it propagates."""
    import pyarrow as pa

    counts = Counts()
    seen: set[tuple[str, int | None]] = set()
    name = f"part-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    pending: list[pa.Table] = []

    def flush() -> None:
        if pending:
            counts.parts.append(parquet.write_part(out, f"{name}-{len(counts.parts):05d}", pa.concat_tables(pending)))
            pending.clear()

    try:
        for block in rows.iter_batches(batch_size=None, batch_format="pyarrow"):
            block = counts.add(block, seen)
            if block.num_rows:
                pending.append(block)
            if sum(t.num_rows for t in pending) >= rows_per_file:
                flush()
            if on_block is not None:
                on_block(counts)
    finally:
        flush()
    return counts


def _listed(uri: str) -> tuple[Any, list[str]]:
    """The filesystem of ``uri`` (``s3://``, ``gs://``, ``hdfs://``, ...: pyarrow's) and the photo
    files under it (or ``uri`` itself if it is a file), as that filesystem names them."""
    from pyarrow import fs as pafs

    try:
        filesystem, root = pafs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(root)
        if info.type == pafs.FileType.Directory:
            found = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
            return filesystem, sorted(f.path for f in found if f.is_file and Path(f.path).suffix.lower() in IMAGE_SUFFIXES)
    except (OSError, ValueError) as e:
        raise DldlError(f"{uri}: cannot be listed ({first_line(e)})") from None
    if info.type != pafs.FileType.File:
        raise DldlError(f"{uri}: not found")
    return filesystem, [info.path]


def photos_dataset(inputs: Iterable[str], skip: set[str] = frozenset()) -> tuple[ray.data.Dataset | None, int]:
    """The photos of ``inputs`` not in ``skip`` as a Dataset, and how many there are: local files,
    folders and globs as absolute paths (``path`` rows; each worker reads its photos, so on several
    machines they must be on a shared filesystem), URIs (``s3://bucket/photos/``) as ``path`` and
    ``bytes`` rows read through pyarrow's filesystems. ``None`` when there is nothing to do."""
    import ray

    local = [i for i in inputs if "://" not in i]
    uris = [i for i in inputs if "://" in i]
    parts = []
    todo = [p for p in dict.fromkeys(os.path.abspath(f) for f in expand_paths(local)) if p not in skip]
    if todo:
        parts.append(ray.data.from_items([{"path": p} for p in todo]))
    count = len(todo)
    for uri in uris:
        filesystem, listed = _listed(uri)
        listed = [p for p in listed if p not in skip]
        if listed:
            parts.append(ray.data.read_binary_files(listed, filesystem=filesystem, include_paths=True))
            count += len(listed)
    if not parts:
        return None, 0
    return (parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]), count


def connect(address: str | None = None, workers: int | None = None, cpus_per_worker: float = 1) -> bool:
    """Connect to the cluster at ``address`` (``ray://head:10001``, ``auto``), else at
    ``$RAY_ADDRESS``, else start a local one with room for ``workers`` (default: one a core) and
    one more CPU for the data tasks; True when a local cluster was started (to shut down after)."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or None)
        return False
    workers = workers or max(1, int((os.cpu_count() or 1) // cpus_per_worker))
    ray.init(num_cpus=math.ceil(workers * cpus_per_worker) + 1, include_dashboard=False)
    return True


@dataclass
class Summary:
    """A ``dldl batch`` run: ``counts`` of what it wrote, ``todo`` photos it had to do, ``skipped``
    ones already in the output folder, ``seconds`` from the first photo sent to the last row written."""

    counts: Counts
    todo: int
    skipped: int
    seconds: float
    model: str

    def lines(self, out: str | Path) -> list[str]:
        c = self.counts
        missing = self.todo - c.photos
        lines = [f"{c.line(seconds=self.seconds)}; {self.skipped} skipped (already in {out}); "
                 f"{self.seconds:.1f} s ({self.model})",
                 f"wrote {len(c.parts)} part file(s) into {out}"]
        if c.duplicates:
            lines.append(f"dropped {c.duplicates} rows that came twice (batches retried after a worker died)")
        if missing:
            lines.append(f"{missing} photos have no rows yet: run the same command again to do them")
        return lines


def run(inputs: list[str], out: str | Path, task: str = "age", model: str | None = None, address: str | None = None,
        workers: int | None = None, cpus_per_worker: float = 1, batch_size: int = BATCH_SIZE,
        rows_per_file: int = ROWS_PER_FILE, crops: bool = False, min_score: float = 0.7, min_face_size: float = 20.0,
        tta: bool | None = None, distribution: bool = False,
        on_block: Callable[[Counts, int, float], None] | None = None) -> Summary:
    """``dldl batch``: the photos of ``inputs`` (files, folders, globs, URIs) not yet in the folder
    ``out``, predicted on the cluster (:func:`connect`), their rows written into ``out`` as part
    files (:func:`write_parts`). ``on_block(counts, todo, seconds)`` is called as rows arrive.

    Raises:
        DldlError: ray or pyarrow missing, a bad model or setting, an output folder that cannot be
            written or that holds rows of another task or model, inputs that cannot be listed.
    """
    from dldl.files import remove_stale_temps
    from dldl.outputs import check_output_dir

    ray = require_ray()
    probe = check_model(task, model, crops, min_score, min_face_size, tta)
    check_output_dir(out, "--parquet")
    remove_stale_temps(out)  # part files a killed run left half-written
    done = parquet.done_paths(out, probe.estimator.task, probe.estimator.meta.get("sha256"))
    started = connect(address, workers, cpus_per_worker)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the caller shows one line of its own, and the summary
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled": we know
        ds, todo = photos_dataset(inputs, done)
        counts, t0 = Counts(), time.perf_counter()
        if ds is not None:
            batches = -(-todo // batch_size)  # no more actors than batches: each loads a model
            workers = min(workers or default_workers(cpus_per_worker), batches)
            rows = predict_dataset(ds, task, probe.model, workers=workers, cpus_per_worker=cpus_per_worker,
                                   batch_size=batch_size, crops=crops, min_score=min_score, min_face_size=min_face_size,
                                   tta=tta, distribution=distribution)
            tick = None if on_block is None else (lambda c: on_block(c, todo, time.perf_counter() - t0))
            try:
                counts = write_parts(rows, out, rows_per_file, tick)
            except ray.exceptions.RayError as e:  # e.g. a batch that killed its worker every time it was retried
                raise DldlError(f"the Ray job failed ({type(e).__name__}: {first_line(e)}); the rows written so far "
                                f"are in {out}: run the same command again to resume") from e
        return Summary(counts, todo, len(done), time.perf_counter() - t0, probe.model)
    finally:
        if started:
            ray.shutdown()
