"""benchmarks/pack_utkface.py + gpu_train.py: the archive round-trips; the GPU script trains on CPU."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pack_utkface
import pytest
from PIL import Image

from dldl.data.datasets import load_dataset
from dldl.errors import DataError

BENCHMARKS = Path(pack_utkface.__file__).parent


def _utkface_like(root: Path, n_train: int, n_test: int) -> Path:
    """A folder laid out like UTKFace (images named <age>_<gender>_<race>_<time>.jpg.chip.jpg)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "splits").mkdir()
    names = []
    for i in range(n_train + n_test):
        age = int(rng.integers(1, 90))
        img = np.clip(rng.normal(age * 2.5, 30, (48, 48, 3)), 0, 255).astype(np.uint8)
        names.append(f"{age}_0_0_20170101{i:09d}.jpg.chip.jpg")
        Image.fromarray(img).save(root / "images" / names[-1], quality=90)
    (root / "splits" / "coral_train.txt").write_text("\n".join(names[:n_train]) + "\n")
    (root / "splits" / "coral_test.txt").write_text("\n".join(names[n_train:]) + "\n")
    return root


def test_pack_round_trip_and_size_limit(tmp_path):
    root = _utkface_like(tmp_path / "utk", 12, 4)
    summary = pack_utkface.pack(root, tmp_path / "p.npz", side=32, quality=80)
    assert summary["faces"] == 16 and summary["bytes"] == (tmp_path / "p.npz").stat().st_size
    back = pack_utkface.unpack(tmp_path / "p.npz", tmp_path / "out")
    for split in ("coral_train", "coral_test"):
        a, b = load_dataset("utkface", root, split), load_dataset("utkface", back, split)
        assert [s.path.name for s in a.samples] == [s.path.name for s in b.samples]
        assert [s.label for s in a.samples] == [s.label for s in b.samples]
        assert all(Image.open(s.path).size == (32, 32) for s in b.samples)
    with pytest.raises(DataError, match="above 0.001 MB"):
        pack_utkface.pack(root, tmp_path / "big.npz", side=32, max_mb=0.001)


def test_gpu_script_trains_one_epoch_on_cpu(tmp_path):
    root = _utkface_like(tmp_path / "utk", 256, 32)
    pack_utkface.pack(root, tmp_path / "pack.npz", side=72, quality=80)
    cmd = [sys.executable, str(BENCHMARKS / "gpu_train.py"), "--archive", str(tmp_path / "pack.npz"), "--out", str(tmp_path / "out"),
           "--epochs", "1", "--limit", "256", "--size", "64", "--device", "cpu", "--workers", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["epochs"] == 1 and result["device"] == "cpu" and result["cache_size"] == 72
    assert result["images_per_s_median"] > 0 and math.isfinite(result["test_mae"])
    assert json.loads((tmp_path / "out" / "gpu_train.json").read_text())["history"][0]["epoch"] == 1
