"""ONNX / TorchScript export: parity with eager torch and use through dldl.load."""

import numpy as np
import pytest

from dldl.errors import CheckpointError
from dldl.export import export, load_exported
from dldl.predict import Estimator
from dldl.pretrained import load


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_parity_with_torch(tiny_run, tmp_path, fmt):
    est = Estimator.from_checkpoint(tiny_run / "run" / "best.pt")
    path = export(est, tmp_path / f"m.{fmt}", fmt)
    other = load(path)
    assert (other.labels, other.input_size, other.cache_size, other.task) == (est.labels, est.input_size, est.cache_size, est.task)
    imgs = np.random.default_rng(0).integers(0, 255, (9, est.cache_size, est.cache_size, 3), dtype=np.uint8)
    a, b = est.predict_arrays(imgs), other.predict_arrays(imgs, batch_size=4)
    assert np.abs(a.distribution - b.distribution).max() < 1e-4
    assert np.abs(a.estimate - b.estimate).max() < 0.01


def test_runtime_onnx_exports_once_and_matches(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("DLDL_CACHE", str(tmp_path / "cache"))
    ck = tiny_run / "run" / "best.pt"
    est = load(ck, runtime="onnx")
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1
    files = sorted((tiny_run / "data").glob("*.png"))[:3]
    assert np.abs(est.predict_files(files).estimate - load(ck).predict_files(files).estimate).max() < 0.01


def test_bad_export_file(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(CheckpointError, match="not a dldl export"):
        load_exported(bad)
    with pytest.raises(ValueError, match="unknown export format"):
        export(None, tmp_path / "y", "tflite")
