"""Tests for dldl.plots: each function writes a valid PNG of the expected shape and validates input."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dldl import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VALUES = np.arange(0, 101, dtype=float)


def _gauss(mu: float, sigma: float = 4.0) -> np.ndarray:
    p = np.exp(-0.5 * ((VALUES - mu) / sigma) ** 2)
    return p / p.sum()


def _check_png(path: Path, ratio: float | None = None) -> tuple[int, int]:
    """The file is a non-empty PNG that PIL decodes; width/height is close to ``ratio``."""
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        w, h = im.size
    assert w > 100 and h > 100
    if ratio is not None:
        assert w / h == pytest.approx(ratio, rel=0.05)
    return w, h


def test_cs_curves(tmp_path: Path) -> None:
    curves = {
        "ThinAgeNet": {t: min(1.0, 0.1 + 0.09 * t) for t in range(11)},
        "TinyAgeNet": {str(t): 100 * min(1.0, 0.05 + 0.08 * t) for t in range(11)},  # percent, str keys
    }
    out = plots.plot_cs_curves(curves, tmp_path / "a" / "b" / "cs.png")
    assert out == tmp_path / "a" / "b" / "cs.png"
    _check_png(out, 6.0 / 4.2)
    with pytest.raises(ValueError):
        plots.plot_cs_curves({}, tmp_path / "x.png")


def test_mae_by_group(tmp_path: Path) -> None:
    groups = {f"{d}-{d + 9}": {"mae": 2.0 + d / 20, "count": 100 + d} for d in range(0, 80, 10)}
    _check_png(plots.plot_mae_by_group(groups, tmp_path / "groups.png"))
    with pytest.raises(ValueError, match="mae"):
        plots.plot_mae_by_group({"0-9": {"count": 3}}, tmp_path / "x.png")


@pytest.mark.parametrize("n", [50, 2500])  # scatter, then hexbin
def test_pred_vs_true(tmp_path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 80, n)
    pred = true + rng.normal(0, 4, n)
    _check_png(plots.plot_pred_vs_true(pred, true, tmp_path / "pvt.png", title="test"))


def test_pred_vs_true_accepts_torch(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pred = torch.linspace(0, 10, 20, requires_grad=True) * 1.0
    _check_png(plots.plot_pred_vs_true(pred, torch.linspace(0, 10, 20), tmp_path / "t.png"))


def test_pred_vs_true_shape_mismatch(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(5,\).*\(4,\)"):
        plots.plot_pred_vs_true(np.zeros(5), np.zeros(4), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_face_distributions(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 10
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    dist = np.stack([_gauss(20 + 5 * i) for i in range(n)])
    true = np.array([20 + 5 * i + 2 for i in range(n)], dtype=float)
    pred = dist @ VALUES
    out = plots.plot_face_distributions(images, dist, VALUES, tmp_path / "faces.png", true=true, pred=pred, max_faces=8)
    _check_png(out, (2.6 * 4) / (4.3 * 2))  # 8 faces: 4 columns, 2 rows
    out = plots.plot_face_distributions(images[:3], dist[:3], VALUES, tmp_path / "faces3.png")
    _check_png(out, (2.6 * 3) / 4.3)


def test_face_distributions_shape_mismatch(tmp_path: Path) -> None:
    images = np.zeros((3, 16, 16, 3), dtype=np.uint8)
    dist = np.full((3, 101), 1 / 101)
    with pytest.raises(ValueError, match=r"\(3, 101\).*\(100,\)"):
        plots.plot_face_distributions(images, dist, VALUES[:100], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\(2, 16, 16, 3\).*\(3, 101\)"):
        plots.plot_face_distributions(images[:2], dist, VALUES, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\(2,\).*\(3, 101\)"):
        plots.plot_face_distributions(images, dist, VALUES, tmp_path / "x.png", true=np.zeros(2))
    with pytest.raises(ValueError, match=r"\(3, 16, 16, 4\)"):
        plots.plot_face_distributions(np.zeros((3, 16, 16, 4)), dist, VALUES, tmp_path / "x.png")


def test_distributions(tmp_path: Path) -> None:
    curves = {"DLDL": _gauss(30, 3), "ranking (implied)": _gauss(32, 6)}
    _check_png(plots.plot_distributions(curves, VALUES, tmp_path / "d.png", true=31, title="unification"), 6.4 / 4.0)
    with pytest.raises(ValueError, match=r"\(50,\).*\(101,\)"):
        plots.plot_distributions({"bad": np.zeros(50)}, VALUES, tmp_path / "x.png")


def test_training_curves(tmp_path: Path) -> None:
    history = [{"epoch": e, "train_loss": 3 / e, "val_mae": 8 - e / 2, "lr": 1e-3 * 0.9**e} for e in range(1, 11)]
    history[3].pop("val_mae")  # gap
    out = plots.plot_training_curves(history, tmp_path / "h.png", keys=("train_loss", "val_mae", "lr", "absent"))
    _check_png(out, (4.0 * 3) / 3.4)  # "absent" skipped
    with pytest.raises(ValueError):
        plots.plot_training_curves(history, tmp_path / "x.png", keys=("absent",))
    with pytest.raises(ValueError):
        plots.plot_training_curves([], tmp_path / "x.png")


def test_threads(tmp_path: Path) -> None:
    """No pyplot state: plotting from several threads at once works."""
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            plots.plot_distributions({"a": _gauss(10 * i + 10)}, VALUES, tmp_path / f"t{i}.png")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for i in range(4):
        _check_png(tmp_path / f"t{i}.png")
