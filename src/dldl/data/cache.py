"""The decoded-image cache: each dataset split decoded once into one ``(N, S, S, 3)`` uint8 array.

An epoch then costs compute, not JPEG decoding. The array is stored as ``.npy`` (NHWC, which is
torch's ``channels_last`` layout once permuted to NCHW) beside a ``.json`` manifest holding:

* ``key``: a hash of the resolution, the cache format version and every source file's path
  (which includes the dataset root), size and modification time, so a changed file list or image
  never reuses a stale cache; the file names carry the key too, so splits of one name under two
  roots have two caches;
* ``sha256`` of the ``.npy`` file, computed before it is renamed into place, so a damaged or
  truncated cache is detected and rebuilt.

Both files are written to temporary names and renamed, the manifest last, so an interrupted build
leaves no cache that looks complete; the partial files of a killed build are removed by the next.
A cache that cannot be written (full disk, read-only folder) is a warning: the images are used
uncached.

Photo datasets (``SampleList.align``) are decoded through the photo pipeline instead: each image
is detected and its largest face aligned to the model's ``template`` (:func:`dldl.faces.aligned_crop`),
so training crops match what ``dldl predict`` feeds the model. An image with no face found is
used whole (centre square), counted in one :class:`~dldl.data.sources.DataWarning`.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from dldl import files
from dldl.data.images import load_face, read_image, square_resize
from dldl.data.samples import SampleList
from dldl.errors import DataError
from dldl.files import atomic_path, file_sha256, remove_stale_temps

CACHE_VERSION = 1
ALIGNED_VERSION = 2  # photo sets: 2 since the detector searches coarse to fine (95d7841)
_detector = None  # one face detector per decoding process, made on first use


def cache_key(samples: SampleList, size: int, template: str | None = None) -> str:
    """Hash of what the cache depends on: resolution, format version, alignment template and
    version of the detection (photo sets only), each file's path/size/mtime."""
    aligned = f":aligned-{template}-v{ALIGNED_VERSION}" if samples.align and template else ""
    h = hashlib.sha256(f"v{CACHE_VERSION}:{size}:{len(samples)}{aligned}\n".encode())
    for s in samples.samples:
        try:
            st = s.path.stat()
        except OSError:
            raise DataError(s.path, "image file not found") from None
        h.update(f"{s.path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _decode(args: tuple[str, int, str | None]) -> tuple[np.ndarray, bool]:
    """One image as a ``(size, size, 3)`` crop, and whether a face was found (``True`` for crops)."""
    path, size, template = args
    if template is None:
        return load_face(path, size), True
    global _detector
    from dldl.faces import aligned_crop, get_detector  # only photo sets need the detector

    if _detector is None:
        _detector = get_detector()
    image = read_image(path)
    pixels = np.asarray(image)
    faces = _detector.detect(pixels)
    if faces:  # the largest face, the only one kept
        return aligned_crop(pixels, faces[0], template, size), True
    return square_resize(image, size), False


def _paths(samples: SampleList, size: int, cache_dir: Path, key: str, template: str | None = None) -> tuple[Path, Path]:
    """The cache's ``.npy`` and manifest: named by the split and by its key, so two splits of one
    name (``labels.csv`` under two roots, two file lists) never share, nor fight over, one file."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", samples.name) or "dataset"
    aligned = f"-{template}" if samples.align and template else ""
    base = cache_dir / f"{stem}-{size}px{aligned}-{key[:16]}"
    return base.with_name(base.name + ".npy"), base.with_name(base.name + ".json")


def _valid(npy: Path, manifest: Path, key: str, verify: bool) -> bool:
    try:
        meta = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    if meta.get("key") != key or not npy.exists():
        return False
    return not verify or meta.get("sha256") == file_sha256(npy)


def _decoded_array(samples: SampleList, size: int) -> np.ndarray:
    """The empty ``(N, size, size, 3)`` uint8 array ``samples`` decode into; one DataError line when it
    needs more than the machine's memory (checked first: with overcommit the allocation itself may
    succeed, and the decoding be killed later)."""
    need = len(samples) * size * size * 3
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not every system says
        memory = None
    problem = (f"{len(samples):,} images decoded at {size}x{size} need {need / 2**30:,.1f} GiB of memory, more than this "
               "machine has{}; lower cache_size (or input_size), or train on fewer images (limit)")
    if memory and need > memory:
        raise DataError(samples.name, problem.format(f" ({memory / 2**30:,.1f} GiB)"))
    try:
        return np.empty((len(samples), size, size, 3), dtype=np.uint8)
    except MemoryError:
        raise DataError(samples.name, problem.format("")) from None


def decode_all(samples: SampleList, size: int, workers: int = 2, progress: bool = False,
               template: str | None = None) -> np.ndarray:
    """Decode every sample to ``(N, size, size, 3)`` uint8 (no cache), with ``workers`` processes;
    photo sets are aligned to ``template`` (when given)."""
    import warnings

    from dldl.data.sources import DataWarning

    out = _decoded_array(samples, size)
    align = template if samples.align else None
    jobs = [(str(s.path), size, align) for s in samples.samples]
    if workers <= 1 or len(jobs) < 64:
        missed = _fill(out, map(_decode, jobs), progress, samples.name)
    else:
        # spawned, not forked: a fork of a process that already runs torch threads (a loaded model,
        # as in dldl eval) can hang its children
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
            missed = _fill(out, pool.map(_decode, jobs, chunksize=64), progress, samples.name)
    if missed:
        first = samples.samples[missed[0]].path
        warnings.warn(DataWarning(samples.source[0] if samples.source else samples.name, len(missed),
                                  f"{samples.name}: no face found in {len(missed)} of {len(samples)} images, "
                                  f"the whole image was used (first: {first})"), stacklevel=2)
    return out


def exit_with_parent(parent: int, poll_s: float = 0.5) -> None:
    """In a worker process: exit as soon as process ``parent`` is gone. A pool's workers outlive a
    parent killed by a signal (a training stopped with ``kill``), and went on decoding for nobody."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _fill(out: np.ndarray, results, progress: bool, name: str) -> list[int]:
    """Store each decoded crop; the indices of images in which no face was found."""
    from dldl.progress import progress_bar

    missed = []
    with progress_bar(progress, len(out), f"decoding {name}") as bar:
        for i, (arr, found) in enumerate(results):
            out[i] = arr
            if not found:
                missed.append(i)
            bar.advance()
    return missed


def load_cached(
    samples: SampleList,
    size: int,
    cache_dir: str | Path | None = None,
    workers: int = 2,
    verify: bool = True,
    progress: bool = False,
    template: str | None = None,
) -> np.ndarray:
    """The split's images as ``(N, size, size, 3)`` uint8, from the cache or decoded and cached;
    photo sets (``samples.align``) are detected and aligned to ``template`` (``None``: used whole).

    A cache whose key (files, sizes, mtimes, resolution) or checksum does not match is rebuilt.

    Raises:
        DataError: an image is missing or unreadable (names the file).
    """
    if len(samples) == 0:
        raise DataError(",".join(samples.source) or samples.name, "no samples to decode")
    cdir = Path(cache_dir) if cache_dir is not None else files.cache_dir()
    if cdir.exists() and not cdir.is_dir():
        raise DataError(cdir, "the cache folder is a file; remove it or give another cache_dir")
    key = cache_key(samples, size, template)
    npy, manifest = _paths(samples, size, cdir, key, template)
    if _valid(npy, manifest, key, verify):
        try:
            arr = np.load(npy)
        except (OSError, ValueError):  # damaged past what the checksum saw (verify=False): rebuilt
            arr = None
        if arr is not None and arr.shape == (len(samples), size, size, 3) and arr.dtype == np.uint8:
            return arr
    arr = decode_all(samples, size, workers, progress, template)
    try:
        cdir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(cdir)  # partial files of a build that was killed or ran out of disk
        with atomic_path(npy) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, arr)
            digest = file_sha256(tmp)  # of the very bytes renamed into place, before any other build can replace them
        meta = {"key": key, "sha256": digest, "count": len(samples), "size": size, "name": samples.name,
                "source": list(samples.source), "version": CACHE_VERSION}
        with atomic_path(manifest) as tmp:
            tmp.write_text(json.dumps(meta, indent=1))
    except OSError as e:  # a full disk, a read-only or odd cache folder: the decoded images are still used
        import warnings

        from dldl.data.sources import DataWarning

        warnings.warn(DataWarning(cdir, 0, f"could not write the decoded-image cache ({e.strerror or type(e).__name__}); "
                                           "continuing without it"), stacklevel=2)
    return arr
