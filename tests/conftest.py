"""Shared test helpers: where ../shared/data is, and a small synthetic face dataset."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
UTKFACE = SHARED / "utkface"
needs_shared = pytest.mark.skipif(not UTKFACE.exists(), reason="../shared/data (UTKFace) not present on this machine")


def make_synthetic_dataset(folder: Path, n: int = 48, size: int = 40, seed: int = 0) -> Path:
    """``n`` images whose brightness and a bar's height grow with the label (10..60): learnable.
    Returns the manifest CSV path (``path,label``)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["path,label"]
    for i in range(n):
        age = int(rng.integers(10, 61))
        img = rng.integers(0, 40, (size, size, 3)).astype(np.float64)
        img += age * 3
        img[: int(size * age / 70), size // 3: size // 2] = 255
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"face_{i:03d}.png")
        rows.append(f"face_{i:03d}.png,{age}")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


@pytest.fixture
def synthetic_manifest(tmp_path: Path) -> Path:
    return make_synthetic_dataset(tmp_path / "synthetic")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A TinyAgeNet trained for one epoch on the synthetic set (32 px); returns its run folder."""
    from dldl.training import TrainConfig, train

    root = tmp_path_factory.mktemp("tiny_run")
    manifest = make_synthetic_dataset(root / "data", n=32)
    train(TrainConfig(dataset="csv", root=str(manifest), train_split=None, test_split=None, val_fraction=0.25,
                      input_size=32, epochs=1, batch_size=8, out_dir=str(root / "run"), cache_dir=str(root / "cache"),
                      progress=False, workers=1))
    return root


def load_benchmark(name: str):
    """The module ``benchmarks/<name>.py`` (not a package), so tests can run its checks on a small budget."""
    import importlib.util
    import sys

    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules[name]


def make_photo_folder(folder: Path, samples: int = 3) -> Path:
    """The bundled photos, the first ``samples`` bundled face samples, a truncated JPEG (an error
    row) and a plain grey picture (no face): a small batch with every kind of row."""
    import shutil

    from dldl.assets import PHOTOS_DIR, SAMPLES_DIR

    folder.mkdir(parents=True, exist_ok=True)
    for photo in sorted(PHOTOS_DIR.glob("*.jpg")) + sorted(SAMPLES_DIR.glob("*.jpg"))[:samples]:
        shutil.copy(photo, folder / photo.name)
    first = sorted(PHOTOS_DIR.glob("*.jpg"))[0]
    (folder / "corrupt.jpg").write_bytes(first.read_bytes()[:3000])
    Image.new("RGB", (200, 200), (128, 128, 128)).save(folder / "blank.jpg")
    return folder


def json_rows(results: list[dict]) -> dict[tuple[str, int | None], dict]:
    """``dldl predict --json`` flattened by hand, independently of dldl.results: one row a face
    (the photo's keys and the face's), or one row for a photo without a face, whose ``error`` is
    "no face found" when the photo was read; keyed by ``(path, face)``."""
    rows = {}
    for photo in results:
        top = {k: v for k, v in photo.items() if k != "faces"}
        for face in photo["faces"] or [{"face": None}]:
            row = {**top, **face}
            if not photo["faces"] and row["error"] is None:
                row["error"] = "no face found"
            rows[(row["path"], row["face"])] = row
    return rows


def dldl_cli(*args, check: bool = False, fresh_process: bool = False, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``dldl ARGS`` as text: its exit status, stdout and stderr (``check``: assert it exited 0).

    By default it runs in this process through ``dldl.cli.run``, the console script's entry point,
    with ``sys.argv``, stdout and stderr swapped and warnings shown as a fresh process shows them, and
    an exception that escapes printed as Python prints it, exit status 1: the same answer without a
    second of interpreter and torch start-up per call. ``fresh_process=True`` runs ``python -m
    dldl.cli`` instead, for what only a process shows (start-up, the console's width from
    ``COLUMNS`` in ``env``, non-UTF-8 names passed as bytes, as a shell passes them).
    """
    if fresh_process or env is not None:
        done = subprocess.run([sys.executable, "-m", "dldl.cli", *map(os.fsencode, args)], capture_output=True,
                              timeout=300, env=None if env is None else {**os.environ, **env})
        done = subprocess.CompletedProcess(done.args, done.returncode, *(os.fsdecode(b) for b in (done.stdout, done.stderr)))
    else:
        from dldl import cli

        out, err = io.StringIO(), io.StringIO()
        argv, formatwarning, debug = sys.argv, warnings.formatwarning, cli.state["debug"]
        sys.argv = ["dldl", *map(str, args)]
        code = 0
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
                warnings.resetwarnings()  # a fresh process: the interpreter's default filters, warnings printed to stderr
                for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                    warnings.simplefilter("ignore", category)
                warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
                warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
                    warnings.formatwarning(message, category, filename, lineno, line))
                try:
                    cli.run()
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                except Exception:  # noqa: BLE001 - what the interpreter does with an exception that escapes
                    traceback.print_exc(file=sys.stderr)
                    code = 1
        finally:
            sys.argv, warnings.formatwarning, cli.state["debug"] = argv, formatwarning, debug
        done = subprocess.CompletedProcess(["dldl", *map(str, args)], code, out.getvalue(), err.getvalue())
    if check:
        assert done.returncode == 0, done.stderr
    return done
