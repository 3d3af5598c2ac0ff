"""The decoded-image cache: each dataset split decoded once into one ``(N, S, S, 3)`` uint8 array.

An epoch then costs compute, not JPEG decoding. The array is stored as ``.npy`` (NHWC, which is
torch's ``channels_last`` layout once permuted to NCHW) beside a ``.json`` manifest holding:

* ``key``: a hash of the resolution, the cache format version and every source file's path,
  size and modification time, so a changed file list or image never reuses a stale cache;
* ``sha256`` of the ``.npy`` file, so a damaged or truncated cache is detected and rebuilt.

Both files are written to temporary names and renamed, the manifest last, so an interrupted build
leaves no cache that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from dldl.checkpoint import file_sha256
from dldl.data.images import load_face
from dldl.data.samples import SampleList
from dldl.errors import DataError

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$DLDL_CACHE`` if set, else ``~/.cache/dldl``."""
    return Path(os.environ.get("DLDL_CACHE", Path.home() / ".cache" / "dldl"))


def cache_key(samples: SampleList, size: int) -> str:
    """Hash of what the cache depends on: resolution, format version, each file's path/size/mtime."""
    h = hashlib.sha256(f"v{CACHE_VERSION}:{size}:{len(samples)}\n".encode())
    for s in samples.samples:
        try:
            st = s.path.stat()
        except OSError:
            raise DataError(s.path, "image file not found") from None
        h.update(f"{s.path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _decode(args: tuple[str, int]) -> np.ndarray:
    return load_face(args[0], args[1])


def _paths(samples: SampleList, size: int, cache_dir: Path) -> tuple[Path, Path]:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", samples.name) or "dataset"
    base = cache_dir / f"{stem}-{size}px"
    return base.with_suffix(".npy"), base.with_suffix(".json")


def _valid(npy: Path, manifest: Path, key: str, verify: bool) -> bool:
    try:
        meta = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    if meta.get("key") != key or not npy.exists():
        return False
    return not verify or meta.get("sha256") == file_sha256(npy)


def decode_all(samples: SampleList, size: int, workers: int = 2, progress: bool = False) -> np.ndarray:
    """Decode every sample to ``(N, size, size, 3)`` uint8 (no cache), with ``workers`` processes."""
    out = np.empty((len(samples), size, size, 3), dtype=np.uint8)
    jobs = [(str(s.path), size) for s in samples.samples]
    if workers <= 1 or len(jobs) < 64:
        results = map(_decode, jobs)
        _fill(out, results, progress, samples.name)
    else:
        with ProcessPoolExecutor(workers) as pool:
            _fill(out, pool.map(_decode, jobs, chunksize=64), progress, samples.name)
    return out


def _fill(out: np.ndarray, results, progress: bool, name: str) -> None:
    if not progress:
        for i, arr in enumerate(results):
            out[i] = arr
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(f"decoding {name}", total=len(out))
        for i, arr in enumerate(results):
            out[i] = arr
            bar.advance(task)


def load_cached(
    samples: SampleList,
    size: int,
    cache_dir: str | Path | None = None,
    workers: int = 2,
    verify: bool = True,
    progress: bool = False,
) -> np.ndarray:
    """The split's images as ``(N, size, size, 3)`` uint8, from the cache or decoded and cached.

    A cache whose key (files, sizes, mtimes, resolution) or checksum does not match is rebuilt.

    Raises:
        DataError: an image is missing or unreadable (names the file).
    """
    if len(samples) == 0:
        raise DataError(",".join(samples.source) or samples.name, "no samples to decode")
    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    npy, manifest = _paths(samples, size, cdir)
    key = cache_key(samples, size)
    if _valid(npy, manifest, key, verify):
        arr = np.load(npy)
        if arr.shape == (len(samples), size, size, 3) and arr.dtype == np.uint8:
            return arr
    arr = decode_all(samples, size, workers, progress)
    cdir.mkdir(parents=True, exist_ok=True)
    tmp = npy.with_name(npy.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, npy)
    meta = {"key": key, "sha256": file_sha256(npy), "count": len(samples), "size": size, "name": samples.name,
            "source": list(samples.source), "version": CACHE_VERSION}
    tmp_m = manifest.with_name(manifest.name + f".{os.getpid()}.tmp")
    tmp_m.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_m, manifest)
    return arr
