import numpy as np
import pytest
import torch

from dldl.errors import CheckpointError, DataError
from dldl.runtime import Estimator


def test_predict_arrays_shapes_and_tta(tiny_run):
    est = Estimator.from_checkpoint(tiny_run / "run" / "best.pt")
    imgs = np.random.default_rng(0).integers(0, 255, (5, est.cache_size, est.cache_size, 3), dtype=np.uint8)
    pred = est.predict_arrays(imgs)
    assert pred.estimate.shape == (5,) and pred.distribution.shape == (5, 101)
    assert np.allclose(pred.distribution.sum(1), 1, atol=1e-5)
    assert np.allclose(pred.estimate, pred.distribution @ np.arange(101), atol=1e-3)
    lo_hi = pred.interval()
    assert lo_hi.shape == (5, 2) and (lo_hi[:, 0] <= pred.estimate + 1e-6).all() and (pred.estimate <= lo_hi[:, 1] + 1e-6).all()
    # flip TTA averages the image and its mirror: a mirrored input gives the same TTA prediction
    mirrored = est.predict_arrays(imgs[:, :, ::-1].copy())
    assert np.allclose(pred.estimate, mirrored.estimate, atol=1e-4)


def test_batching_does_not_change_results(tiny_run):
    est = Estimator.from_checkpoint(tiny_run / "run" / "best.pt")
    imgs = np.random.default_rng(1).integers(0, 255, (7, est.cache_size, est.cache_size, 3), dtype=np.uint8)
    a = est.predict_arrays(imgs, batch_size=7).estimate
    b = est.predict_arrays(imgs, batch_size=2).estimate
    assert np.allclose(a, b, atol=1e-4)


def test_predict_files_and_errors(tiny_run, tmp_path):
    est = Estimator.from_checkpoint(tiny_run / "run" / "best.pt")
    files = sorted((tiny_run / "data").glob("*.png"))[:3]
    assert est.predict_files(files).estimate.shape == (3,)
    bad = tmp_path / "bad.jpg"
    bad.write_text("hello")
    with pytest.raises(DataError, match="bad.jpg"):
        est.predict_files([bad])
    with pytest.raises(ValueError, match=r"\(N, S, S, 3\)"):
        est.predict_arrays(np.zeros((2, 3, 8, 8), dtype=np.uint8))


def test_checkpoint_without_model_is_refused(tmp_path):
    from dldl.checkpoint import save_checkpoint

    p = save_checkpoint(tmp_path / "x.pt", {"state_dict": {"w": torch.ones(1)}})
    with pytest.raises(CheckpointError, match="usable dldl model"):
        Estimator.from_checkpoint(p)


def test_a_photo_is_predicted_without_importing_torch(tmp_path):
    """The default model predicts from its shipped ONNX graph: ``dldl.predict`` and ``dldl predict``
    run on numpy and ONNX Runtime alone, from the first call, and write no ONNX copy into the cache
    (torch's import, about 1.5 s and 220 MB here, is what kept start-up over a second)."""
    import os
    import subprocess
    import sys

    from dldl.assets import PHOTOS_DIR

    photo = sorted(PHOTOS_DIR.glob("*.jpg"))[0]
    env = {**os.environ, "DLDL_CACHE": str(tmp_path)}
    script = ("import sys, dldl; from dldl.lazy import is_imported; r = dldl.predict(sys.argv[1]); "
              "print(len(r['faces']), r['faces'][0]['age'], is_imported('torch'))")
    first = subprocess.run([sys.executable, "-c", script, str(photo)], env=env, capture_output=True, text=True, check=True)
    assert first.stdout.split()[2] == "False" and not (tmp_path / "onnx").exists(), "the shipped graph: no export"
    again = subprocess.run([sys.executable, "-c", script, str(photo)], env=env, capture_output=True, text=True, check=True)
    faces, age, torch_imported = again.stdout.split()
    assert int(faces) >= 1 and torch_imported == "False", again.stdout
    assert abs(float(age) - float(first.stdout.split()[1])) < 1e-6  # the same reading either way
    cli = subprocess.run([sys.executable, "-c", "import sys; from dldl.cli import run; from dldl.lazy import is_imported; "
                          "sys.argv = ['dldl', 'predict', sys.argv[1], '--json']; "
                          "import atexit; atexit.register(lambda: print('torch', is_imported('torch'), file=sys.stderr)); run()",
                          str(photo)], env=env, capture_output=True, text=True)
    assert cli.returncode == 0 and '"age"' in cli.stdout and "torch False" in cli.stderr, cli.stderr[-500:]
