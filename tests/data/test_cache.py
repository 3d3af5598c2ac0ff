import json
import os

import numpy as np
import pytest

from dldl.data.cache import cache_key, load_cached
from dldl.data.sources import read_manifest_csv
from dldl.errors import DataError


def test_build_then_reuse(synthetic_manifest, tmp_path):
    samples = read_manifest_csv(synthetic_manifest)
    cache = tmp_path / "cache"
    a = load_cached(samples, 24, cache, workers=1)
    assert a.shape == (len(samples), 24, 24, 3) and a.dtype == np.uint8
    npy = next(cache.glob("*.npy"))
    mtime = npy.stat().st_mtime_ns
    b = load_cached(samples, 24, cache, workers=1)
    assert np.array_equal(a, b) and npy.stat().st_mtime_ns == mtime  # reused, not rebuilt


def test_parallel_decode_equals_serial(synthetic_manifest, tmp_path):
    samples = read_manifest_csv(synthetic_manifest)
    one = load_cached(samples, 20, tmp_path / "c1", workers=1, verify=False)
    two = load_cached(samples, 20, tmp_path / "c2", workers=2, verify=False)
    assert np.array_equal(one, two)


def test_stale_cache_is_rebuilt_when_an_image_changes(synthetic_manifest, tmp_path):
    samples = read_manifest_csv(synthetic_manifest)
    cache = tmp_path / "cache"
    key = cache_key(samples, 24)
    before = load_cached(samples, 24, cache, workers=1)
    first = samples.samples[0].path
    from PIL import Image

    Image.new("RGB", (40, 40), (255, 0, 0)).save(first)
    os.utime(first, ns=(1, 1))
    assert cache_key(samples, 24) != key
    after = load_cached(samples, 24, cache, workers=1)
    assert tuple(after[0, 5, 5]) == (255, 0, 0) and not np.array_equal(before[0], after[0])


def test_damaged_cache_is_detected_and_rebuilt(synthetic_manifest, tmp_path):
    samples = read_manifest_csv(synthetic_manifest)
    cache = tmp_path / "cache"
    good = load_cached(samples, 24, cache, workers=1)
    npy = next(cache.glob("*.npy"))
    data = bytearray(npy.read_bytes())
    data[-100:] = bytes(100)  # flip the last pixels to zero
    npy.write_bytes(bytes(data))
    assert np.array_equal(load_cached(samples, 24, cache, workers=1), good)
    npy.write_bytes(npy.read_bytes()[:1000])  # truncated
    assert np.array_equal(load_cached(samples, 24, cache, workers=1), good)
    meta = json.loads(next(cache.glob("*.json")).read_text())
    assert meta["count"] == len(samples) and meta["size"] == 24


def test_unreadable_image_names_the_file(synthetic_manifest, tmp_path):
    samples = read_manifest_csv(synthetic_manifest)
    samples.samples[3].path.write_bytes(b"garbage")
    with pytest.raises(DataError, match="face_003.png"):
        load_cached(samples, 24, tmp_path / "cache", workers=1)


def test_splits_of_one_name_under_two_roots_get_two_caches(tmp_path):
    """Two ``labels.csv`` of different roots: each its own cache file, each read back as its own pixels."""
    from PIL import Image

    arrays = {}
    for root, colour in (("a", (255, 0, 0)), ("b", (0, 0, 255))):
        folder = tmp_path / root
        folder.mkdir()
        Image.new("RGB", (30, 30), colour).save(folder / "x.png")
        (folder / "labels.csv").write_text("path,label\nx.png,30\n")
        arrays[root] = load_cached(read_manifest_csv(folder / "labels.csv"), 16, tmp_path / "cache", workers=1)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    for root, colour in (("a", (255, 0, 0)), ("b", (0, 0, 255))):
        samples = read_manifest_csv(tmp_path / root / "labels.csv")
        assert tuple(load_cached(samples, 16, tmp_path / "cache", workers=1)[0, 8, 8]) == colour


def test_checksum_is_of_the_file_renamed_into_place(synthetic_manifest, tmp_path):
    from dldl.files import file_sha256

    load_cached(read_manifest_csv(synthetic_manifest), 24, tmp_path / "cache", workers=1)
    (npy,), (manifest,) = (tmp_path / "cache").glob("*.npy"), (tmp_path / "cache").glob("*.json")
    assert json.loads(manifest.read_text())["sha256"] == file_sha256(npy)


def test_partial_files_of_a_killed_build_are_removed(synthetic_manifest, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    stale = cache / "x-24px-0123456789abcdef.npy.999999999.tmp"
    stale = stale.with_name("." + stale.name)
    stale.write_bytes(b"partial")
    load_cached(read_manifest_csv(synthetic_manifest), 24, cache, workers=1)
    assert not stale.exists() and not list(cache.glob(".*.tmp"))


def test_cache_folder_that_is_a_file_is_one_line(synthetic_manifest, tmp_path):
    (tmp_path / "cache").write_text("not a folder")
    with pytest.raises(DataError, match=f"^{tmp_path / 'cache'}: the cache folder is a file"):
        load_cached(read_manifest_csv(synthetic_manifest), 24, tmp_path / "cache", workers=1)


def test_cache_on_a_full_disk_warns_and_goes_on(synthetic_manifest, tmp_path, monkeypatch):
    """The decoded images are still returned; nothing partial stays in the cache folder."""
    import errno

    from dldl.data.sources import DataWarning

    def full(f, arr, *a, **k):
        f.write(b"\x93NUMPY partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    samples = read_manifest_csv(synthetic_manifest)
    want = load_cached(samples, 24, tmp_path / "ok", workers=1)
    monkeypatch.setattr(np, "save", full)
    with pytest.warns(DataWarning, match="could not write the decoded-image cache \\(No space left on device\\)"):
        got = load_cached(samples, 24, tmp_path / "cache", workers=1)
    assert np.array_equal(got, want) and list((tmp_path / "cache").iterdir()) == []


def test_parallel_photo_decoding_after_a_model_is_loaded_finishes(tmp_path):
    """Photo sets decoded by worker processes in a process that already runs torch (dldl eval loads
    the model first): the workers are spawned, not forked, so they cannot hang (they did)."""
    import subprocess
    import sys

    pytest.importorskip("yuface", reason="the face detector (yuface, a CPython 3.11 wheel) is not installed")
    from dldl.assets import PHOTOS_DIR

    photo = sorted(PHOTOS_DIR.glob("*.jpg"))[0]
    for i in range(64):  # 64 files: the size at which decoding uses worker processes
        (tmp_path / f"p{i}.jpg").write_bytes(photo.read_bytes())
    manifest = tmp_path / "photos.csv"
    manifest.write_text("path,label\n" + "".join(f"p{i}.jpg,30\n" for i in range(64)))
    script = f"""
import dataclasses, torch
import dldl
from dldl.data.cache import load_cached
from dldl.data.sources import read_manifest_csv
est = dldl.load("tiny_age_net-utkface")
est.predict_arrays(torch.zeros(2, est.cache_size, est.cache_size, 3, dtype=torch.uint8).numpy())  # torch threads running
samples = dataclasses.replace(read_manifest_csv({str(manifest)!r}), align=True)
print(load_cached(samples, 32, {str(tmp_path / 'cache')!r}, workers=2, template="utkface").shape)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0 and "(64, 32, 32, 3)" in done.stdout, done.stderr[-2000:]


def test_decode_workers_exit_when_their_parent_is_killed(tmp_path):
    """A pool's spawned workers outlive a parent killed by a signal unless they watch it."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(
        "import multiprocessing, os, sys, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from dldl.data.cache import exit_with_parent\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn'),\n"
        "                               initializer=exit_with_parent, initargs=(os.getpid(), 0.1))\n"
        "    print(pool.submit(os.getpid).result(), flush=True)\n"
        "    pool.submit(time.sleep, 60)\n"
        "    time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(100):
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(worker, signal.SIGKILL)
    raise AssertionError("the decode worker outlived its killed parent by 10 s")


def test_a_cache_larger_than_memory_is_one_line_before_any_decoding(tmp_path):
    """Within the config's bounds (cache_size <= 2048) a large set can still need more memory than
    there is: 100,000 images at 2048 px is 1.1 TiB. It was a MemoryError (exit 3); now one line."""
    from pathlib import Path

    from dldl.data.cache import decode_all
    from dldl.data.samples import Sample, SampleList

    many = SampleList("big/train", [Sample(Path(f"{i}.jpg"), 30.0) for i in range(100_000)])
    with pytest.raises(DataError, match=r"^big/train: 100,000 images decoded at 2048x2048 need 1,171.9 GiB of memory, more than this "
                                        r"machine has .*; lower cache_size"):
        decode_all(many, 2048, workers=1)


def test_photo_caches_change_key_with_the_detection_version(synthetic_manifest, monkeypatch):
    """Crops of photo sets depend on the detector: a change of ALIGNED_VERSION (a detection that
    finds other landmarks) gives them a new key, so an old cache is not reused; crop sets keep theirs."""
    import dataclasses

    import dldl.data.cache as cache

    crops = read_manifest_csv(synthetic_manifest)
    photos = dataclasses.replace(crops, align=True)
    before = cache_key(photos, 24, "utkface"), cache_key(crops, 24, "utkface")
    monkeypatch.setattr(cache, "ALIGNED_VERSION", cache.ALIGNED_VERSION + 1)
    after = cache_key(photos, 24, "utkface"), cache_key(crops, 24, "utkface")
    assert after[0] != before[0] and after[1] == before[1]
