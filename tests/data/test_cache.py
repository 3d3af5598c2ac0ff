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
