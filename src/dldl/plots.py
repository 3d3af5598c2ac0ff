"""PNG plots for evaluation reports and docs.

Every function takes numpy arrays (torch tensors and lists are accepted too), plain dicts or lists
of dicts, draws one :class:`~matplotlib.figure.Figure` and writes it as a PNG to ``path``
(creating parent folders), then returns ``Path(path)``. Figures are built with
``matplotlib.figure.Figure`` and rendered by the Agg canvas directly, so pyplot's global state is
never touched: the functions are safe in threads and in headless processes, and nothing stays
open after they return. Image sizes are fixed (no tight bounding box); constrained layout keeps
labels, titles and legends inside the figure.

Bad input raises :class:`ValueError`; a shape mismatch names both shapes.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     out = plot_cs_curves({"model": {0: 0.2, 5: 0.7, 10: 0.9}}, f"{d}/sub/cs.png")
...     out.name, out.read_bytes()[:4] == b"\\x89PNG"
('cs.png', True)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dldl.files import atomic_path

DPI = 120
HEXBIN_ABOVE = 2000  # plot_pred_vs_true switches from a scatter to a hexbin above this many points

__all__ = [
    "plot_cs_curves",
    "plot_mae_by_group",
    "plot_pred_vs_true",
    "plot_face_distributions",
    "plot_distributions",
    "plot_training_curves",
]


# --------------------------------------------------------------------------------------- helpers
@contextmanager
def _figure(path: str | Path, figsize: tuple[float, float]) -> Iterator[Figure]:
    """Yield a fresh constrained-layout Figure; on normal exit write it to ``path`` as a PNG (atomically)."""
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    try:
        yield fig
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        fig.clear()


def _array(x: Any, name: str, ndim: int | None = None, dtype: Any = np.float64) -> np.ndarray:
    """``x`` as a numpy array (torch tensors are detached and moved to the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=dtype)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    return a


def _same_length(a: np.ndarray, a_name: str, b: np.ndarray, b_name: str, axis_b: int = 0) -> None:
    if a.shape[0] != b.shape[axis_b]:
        raise ValueError(f"{a_name} has shape {a.shape} but {b_name} has shape {b.shape}")


# --------------------------------------------------------------------------------------- plots
def plot_cs_curves(curves: Mapping[str, Mapping[int, float]], path: str | Path, title: str = "Cumulative score") -> Path:
    """Cumulative-score curves CS(theta) vs error level theta, one line per model.

    ``curves`` maps a model name to ``{theta: CS}`` as returned by :func:`dldl.metrics.cs_curve`.
    CS values may be fractions (all <= 1, as ``cs_curve`` returns) or percents; fractions are
    scaled to percent. Keys may be ints or numeric strings (as after a JSON round trip).
    """
    if not curves:
        raise ValueError("curves is empty: need at least one model")
    with _figure(path, (6.0, 4.2)) as fig:
        ax = fig.add_subplot()
        for name, curve in curves.items():
            if not curve:
                raise ValueError(f"curve {name!r} is empty")
            pts = sorted((float(k), float(v)) for k, v in curve.items())
            theta, cs = np.array(pts).T
            if cs.max() <= 1.0:
                cs = cs * 100.0
            ax.plot(theta, cs, marker="o", markersize=3.5, label=str(name))
        ax.set(xlabel="error level θ (years)", ylabel="CS(θ) (%)", title=title, ylim=(0, 100))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    return Path(path)


def plot_mae_by_group(groups: Mapping[str, Mapping[str, float]], path: str | Path, title: str = "MAE by age group") -> Path:
    """Bar chart of the MAE per label group, with the group's sample count written on each bar.

    ``groups`` is ``{"20-29": {"mae": 3.1, "count": 812}, ...}`` as returned by
    :func:`dldl.metrics.mae_by_group`; bars keep the dict's order. ``count`` is optional.
    """
    if not groups:
        raise ValueError("groups is empty: need at least one group")
    missing = [g for g, v in groups.items() if "mae" not in v]
    if missing:
        raise ValueError(f"groups {missing} have no 'mae' entry")
    names = [str(g) for g in groups]
    maes = [float(v["mae"]) for v in groups.values()]
    counts = [f"n={int(v['count'])}" if "count" in v else "" for v in groups.values()]
    with _figure(path, (max(5.0, 0.75 * len(names) + 2.0), 4.2)) as fig:
        ax = fig.add_subplot()
        bars = ax.bar(names, maes, color="tab:blue", alpha=0.85)
        ax.bar_label(bars, labels=counts, padding=2, fontsize=8)
        ax.set(xlabel="group", ylabel="MAE", title=title)
        ax.set_ylim(0, max(maes) * 1.15 if max(maes) > 0 else 1.0)
        ax.grid(axis="y", alpha=0.3)
        if len(names) > 12:
            ax.tick_params(axis="x", labelrotation=45)
    return Path(path)


def plot_pred_vs_true(pred: Any, true: Any, path: str | Path, label_name: str = "age", title: str | None = None) -> Path:
    """Predicted vs true label: translucent scatter (hexbin above 2000 points) with the y=x line.

    The MAE is given in the title (appended to ``title`` when one is passed).
    """
    p = _array(pred, "pred", ndim=1)
    t = _array(true, "true", ndim=1)
    if p.shape != t.shape:
        raise ValueError(f"pred has shape {p.shape} but true has shape {t.shape}")
    if p.size == 0:
        raise ValueError("pred and true are empty")
    mae = float(np.abs(p - t).mean())
    lo, hi = float(min(p.min(), t.min())), float(max(p.max(), t.max()))
    pad = 0.03 * (hi - lo) or 1.0
    lo, hi = lo - pad, hi + pad
    hexbin = p.size > HEXBIN_ABOVE
    with _figure(path, (6.0 if hexbin else 5.2, 5.0)) as fig:
        ax = fig.add_subplot()
        if hexbin:
            hb = ax.hexbin(t, p, gridsize=50, bins="log", mincnt=1, cmap="viridis", extent=(lo, hi, lo, hi))
            fig.colorbar(hb, ax=ax, label="count (log)", shrink=0.8, aspect=30)
        else:
            ax.scatter(t, p, s=8, alpha=0.35 if p.size > 200 else 0.7, edgecolors="none", label=f"n={p.size}")
        ax.plot([lo, hi], [lo, hi], color="tab:red", linewidth=1, label="y = x")
        ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel=f"true {label_name}", ylabel=f"predicted {label_name}")
        ax.set_aspect("equal")
        ax.set_title(f"{title} (MAE {mae:.2f})" if title else f"Predicted vs true {label_name}: MAE {mae:.2f}")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
    return Path(path)


def _vlines(ax: Any, true: float | None, pred: float | None) -> None:
    """Mark the true (green, dashed) and predicted (red, solid) value on a distribution axis."""
    if true is not None:
        ax.axvline(true, color="tab:green", linestyle="--", linewidth=1.2, label=f"true {true:.1f}")
    if pred is not None:
        ax.axvline(pred, color="tab:red", linewidth=1.2, label=f"pred {pred:.1f}")


def _optional_values(x: Any, name: str, n: int, dist_name: str, dist_shape: tuple[int, ...]) -> np.ndarray | None:
    if x is None:
        return None
    a = _array(x, name, ndim=1)
    if a.shape[0] != n:
        raise ValueError(f"{name} has shape {a.shape} but {dist_name} has shape {dist_shape}")
    return a


def plot_face_distributions(
    images: Any,
    distributions: Any,
    label_values: Any,
    path: str | Path,
    true: Any = None,
    pred: Any = None,
    max_faces: int = 8,
    label_name: str = "label",
) -> Path:
    """A grid of faces, each above its predicted label distribution, numbered from 1 (as
    ``dldl predict`` numbers faces); the x axis is ``label_name``, the y axis the probability.

    ``images`` is ``(n, H, W, 3)`` uint8 (or float in [0, 1]; ``(n, H, W)`` is drawn in grey),
    ``distributions`` is ``(n, K)`` and ``label_values`` is ``(K,)``. ``true`` / ``pred`` are
    optional ``(n,)`` arrays drawn as vertical lines. Only the first ``max_faces`` faces are shown.
    """
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    imgs = np.asarray(images)
    if imgs.ndim not in (3, 4) or (imgs.ndim == 4 and imgs.shape[-1] not in (1, 3)):
        raise ValueError(f"images must have shape (n, H, W, 3), got {imgs.shape}")
    dist = _array(distributions, "distributions", ndim=2)
    values = _array(label_values, "label_values", ndim=1)
    _same_length(imgs, "images", dist, "distributions")
    if dist.shape[1] != values.shape[0]:
        raise ValueError(f"distributions has shape {dist.shape} but label_values has shape {values.shape}")
    t = _optional_values(true, "true", len(dist), "distributions", dist.shape)
    p = _optional_values(pred, "pred", len(dist), "distributions", dist.shape)
    if max_faces < 1:
        raise ValueError(f"max_faces must be >= 1, got {max_faces}")
    n = min(len(dist), max_faces)
    if n == 0:
        raise ValueError("no faces to plot")
    if imgs.ndim == 4 and imgs.shape[-1] == 1:
        imgs = imgs[..., 0]
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    with _figure(path, (2.6 * cols, 4.3 * rows)) as fig:
        grid = fig.add_gridspec(2 * rows, cols, height_ratios=[1.6, 1.0] * rows)
        for i in range(n):
            r, c = divmod(i, cols)
            ax_img = fig.add_subplot(grid[2 * r, c])
            ax_img.imshow(imgs[i], cmap="gray" if imgs.ndim == 3 else None)
            ax_img.set_axis_off()
            ax_img.set_title(f"face {i + 1}", fontsize=9)
            ax = fig.add_subplot(grid[2 * r + 1, c])
            ax.plot(values, dist[i], color="tab:blue", linewidth=1)
            ax.fill_between(values, dist[i], color="tab:blue", alpha=0.25)
            _vlines(ax, None if t is None else float(t[i]), None if p is None else float(p[i]))
            ax.set_ylim(bottom=0)
            ax.tick_params(labelsize=7)
            ax.set_xlabel(label_name, fontsize=8)
            if c == 0:
                ax.set_ylabel("probability", fontsize=8)
            if t is not None or p is not None:
                ax.legend(fontsize=6, loc="best", handlelength=1.2)
        fig.suptitle(f"Predicted label distributions ({n} of {len(dist)} faces)" if n < len(dist) else "Predicted label distributions")
    return Path(path)


def plot_distributions(
    curves: Mapping[str, Any],
    label_values: Any,
    path: str | Path,
    true: float | None = None,
    title: str | None = None,
) -> Path:
    """Several label distributions of one face overlaid, e.g. ``{"DLDL": p, "ranking (implied)": q}``.

    Each curve is a ``(K,)`` array over ``label_values`` ``(K,)``; ``true`` adds a vertical line.
    """
    if not curves:
        raise ValueError("curves is empty: need at least one distribution")
    values = _array(label_values, "label_values", ndim=1)
    arrays = {}
    for name, curve in curves.items():
        a = _array(curve, f"curves[{name!r}]")
        if a.shape != values.shape:
            raise ValueError(f"curves[{name!r}] has shape {a.shape} but label_values has shape {values.shape}")
        arrays[str(name)] = a
    with _figure(path, (6.4, 4.0)) as fig:
        ax = fig.add_subplot()
        for name, a in arrays.items():
            ax.plot(values, a, linewidth=1.5, label=name)
        _vlines(ax, None if true is None else float(true), None)
        ax.set(xlabel="label", ylabel="probability", title=title or "Label distributions")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    return Path(path)


def plot_training_curves(
    history: Sequence[Mapping[str, float]],
    path: str | Path,
    keys: Sequence[str] = ("train_loss", "val_mae"),
) -> Path:
    """Training history, one subplot per key in ``keys`` (x = ``epoch``, or the row number).

    Keys absent from every row are skipped; a row missing a present key leaves a gap.
    """
    if not history:
        raise ValueError("history is empty")
    present = [k for k in keys if any(k in row for row in history)]
    if not present:
        raise ValueError(f"none of the keys {list(keys)} appear in history")
    x = np.array([float(row.get("epoch", i + 1)) for i, row in enumerate(history)])
    with _figure(path, (4.0 * len(present), 3.4)) as fig:
        axes = fig.subplots(1, len(present), squeeze=False)[0]
        for ax, key in zip(axes, present):
            y = np.array([float(row[key]) if row.get(key) is not None else np.nan for row in history])
            ax.plot(x, y, marker="o", markersize=3)
            ax.set(xlabel="epoch", title=key)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if key == "lr" and np.nanmin(y) > 0 and np.nanmax(y) / np.nanmin(y) >= 10:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
    return Path(path)
