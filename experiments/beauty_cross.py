"""Does a beauty model hold on another dataset? Pearson and Spearman of each model's estimates on
each test set, in-domain and across (the scales differ: SCUT-FBP5500 1-5, MEBeauty 1-10, so only
correlations are compared), pooled and within each sex, and the offset between the sexes.

    python experiments/beauty_cross.py [--models mobilenet_v2-scut5500 mobilenet_v2-mebeauty] [--json out.json]
        [--one-view] [--threads N] [--scut-root DIR] [--mebeauty-root DIR]

Test sets: SCUT-FBP5500's 60/40 test split (its portraits detected and aligned to each model's
template, as ``dldl eval`` and ``dldl predict`` do), MEBeauty's test split as the authors' crops,
and the same MEBeauty test faces as their in-the-wild original photos through the photo pipeline
(detected, the largest face aligned to the model's template). Each model runs with its spec's
``tta_flip`` (flip TTA unless its card ships it one view); ``--one-view`` turns the mirror-image
average off for every model. Sets whose folder is absent are skipped.

Sex: each sample's ``meta["gender"]`` as the readers give it: SCUT-FBP5500 from the image name's
prefix (AF/CF female, AM/CM male), MEBeauty from ``labels.csv``'s ``gender`` column (the same as the
``female/`` or ``male/`` folder of each crop and original photo).

Offset between the sexes: mean score of the women minus that of the men, for the raters' mean
scores (the set's labels) and for the model's estimates, each divided by the standard deviation of
the set's own rater scores (all its faces), so a set rated 1-5 and one rated 1-10 compare; also in
the set's own points, the model's estimates first mapped end to end from its label range onto the
set's (1-10 -> 1-5: ``1 + (x - 1) * 4 / 9``; the way mobilenet_v2-beauty's card maps SCUT onto
MEBeauty's scale). A model's in-domain cells (the set's source is among the ``sources_seen`` of its
card, or of its run's config) are marked ``*``; the others are held out (cross-source).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

import dldl
from dldl.data.cache import load_cached
from dldl.data.datasets import get_dataset, load_dataset
from dldl.errors import run_script
from dldl.hub import sources_seen
from dldl.labels import LabelSet

REPO = Path(__file__).resolve().parents[1]
SCUT_ROOT = REPO / "data_external" / "scut5500"
MEBEAUTY_ROOT = REPO.parent / "shared" / "data" / "mebeauty"
SETS = {  # name -> (dataset, root, split, reader options)
    "SCUT-FBP5500 test (60/40)": ("scut-fbp5500", SCUT_ROOT, "test", {}),
    "MEBeauty test, crops": ("mebeauty", MEBEAUTY_ROOT, "test", {}),
    "MEBeauty test, original photos": ("mebeauty", MEBEAUTY_ROOT, "test", {"image": "original"}),
}
SEXES = ("female", "male")


def pick_sets(scut_root: Path | None = None, mebeauty_root: Path | None = None) -> dict[str, tuple]:
    """:data:`SETS` with the given roots in place of the default ones, those whose folder exists."""
    roots = {"scut-fbp5500": scut_root, "mebeauty": mebeauty_root}
    sets = {k: (d, roots[d] or root, split, opts) for k, (d, root, split, opts) in SETS.items()}
    return {k: v for k, v in sets.items() if Path(v[1]).exists()}


def to_scale(x: np.ndarray, model_labels: LabelSet, set_labels: LabelSet) -> np.ndarray:
    """Estimates on the model's label range mapped end to end onto the set's range (identity when
    both are the same): start -> start, stop -> stop."""
    f = (set_labels.stop - set_labels.start) / (model_labels.stop - model_labels.start)
    return set_labels.start + (np.asarray(x, np.float64) - model_labels.start) * f


def _mean_gap(values: np.ndarray, female: np.ndarray, male: np.ndarray) -> tuple[float, float]:
    """Mean of ``values`` over women minus over men, and its standard error (unequal variances)."""
    a, b = values[female], values[male]
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) if min(len(a), len(b)) > 1 else float("nan")
    return float(a.mean() - b.mean()), float(se)


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson's r, ``None`` for fewer than three points or a constant side."""
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(stats.pearsonr(x, y)[0])


def sex_stats(pred: np.ndarray, truth: np.ndarray, sex: list[str | None]) -> dict[str, Any]:
    """Correlations pooled and within each sex, and the offset between the sexes.

    ``pred`` must already be on the set's scale (:func:`to_scale`); ``truth`` is the raters' mean
    score of each face; ``sex`` each face's ``"female"``/``"male"`` (anything else: counted under
    ``count_unknown`` and left out of the within-sex numbers and offsets). Offsets are women minus
    men: ``raters_*`` of the labels, ``model_*`` of the estimates, ``gap_*`` the model's minus the
    raters' (the mean residual of women minus that of men); ``*_sd`` in units of the standard
    deviation of ``truth`` over all faces, ``*_points`` in the set's own scale, ``se_*`` their
    standard errors; ``model_offset_own_sd`` in units of the estimates' own standard deviation.
    """
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    sex_arr = np.array([s if s in SEXES else "" for s in sex])
    female, male = sex_arr == "female", sex_arr == "male"
    out: dict[str, Any] = {"count": len(truth), "count_female": int(female.sum()), "count_male": int(male.sum()),
                           "count_unknown": int(len(truth) - female.sum() - male.sum()),
                           "pearson": _pearson(pred, truth),
                           "spearman": float(stats.spearmanr(pred, truth)[0]) if len(truth) > 2 else None}
    for name, m in (("female", female), ("male", male)):
        out[f"pearson_{name}"] = _pearson(pred[m], truth[m])
        out[f"spearman_{name}"] = float(stats.spearmanr(pred[m], truth[m])[0]) if m.sum() > 2 else None
        out[f"raters_mean_{name}"] = float(truth[m].mean()) if m.any() else None
        out[f"model_mean_{name}"] = float(pred[m].mean()) if m.any() else None
    sd = float(truth.std(ddof=1)) if len(truth) > 1 else float("nan")
    out["raters_sd"] = sd
    if female.any() and male.any():
        for who, v in (("raters", truth), ("model", pred), ("gap", pred - truth)):
            d, se = _mean_gap(v, female, male)
            out[f"{who}_offset_points"], out[f"se_{who}_offset_points"] = d, se
            out[f"{who}_offset_sd"], out[f"se_{who}_offset_sd"] = d / sd, se / sd
        out["model_offset_own_sd"] = out["model_offset_points"] / float(pred.std(ddof=1))
    return out


def evaluate(est: Any, dataset: str, root: Path, split: str, options: dict, one_view: bool = False) -> dict:
    """Pearson / Spearman (pooled and by sex) and the offset between the sexes of the estimator
    ``est``'s estimates on one set (:func:`sex_stats`), the estimates on the set's scale (:func:`to_scale`)."""
    samples = load_dataset(dataset, root, split, **options)
    images = load_cached(samples, est.cache_size, None, 1, template=est.template)
    pred = est.predict_arrays(images, tta_flip=False if one_view else None).estimate
    truth = np.array([s.label for s in samples.samples], dtype=np.float64)
    sex = [(s.meta or {}).get("gender") for s in samples.samples]
    return sex_stats(to_scale(pred, est.spec.labels, LabelSet.parse(get_dataset(dataset).labels)), truth, sex)


def _num(x: float | None, fmt: str = ".3f") -> str:
    """``x`` formatted, or ``-`` for ``None``."""
    return "-" if x is None else format(x, fmt)


def tables(result: dict[str, dict], sets: dict[str, tuple]) -> str:
    """The Markdown tables of :func:`main`'s result: Pearson / Spearman per model and set, then one
    row per model and set with the within-sex Pearsons and the offsets; in-domain cells marked ``*``."""
    lines = ["| model (sources seen) | " + " | ".join(f"{s}: Pearson / Spearman" for s in sets) + " |",
             "|---|" + "---|" * len(sets)]
    for m, r in result.items():
        seen = ", ".join(r["sources_seen"]) if r["sources_seen"] else "unknown"
        cells = [f"{_num(c['pearson'])} / {_num(c['spearman'])}{'*' if c['in_domain'] else ''} ({c['count']})"
                 for c in r["sets"].values()]
        lines.append(f"| {m} ({seen}) | " + " | ".join(cells) + " |")
    lines += ["", "| model | set | faces F / M | Pearson all / F / M | raters F-M: SD (points) | "
              "model F-M: SD (points) | model - raters: SD +- se |", "|---|---|---|---|---|---|---|"]
    for m, r in result.items():
        for s, c in r["sets"].items():
            mark = "*" if c["in_domain"] else ""
            off = ("-", "-", "-") if "raters_offset_sd" not in c else (
                f"{c['raters_offset_sd']:+.2f} ({c['raters_offset_points']:+.2f})",
                f"{c['model_offset_sd']:+.2f} ({c['model_offset_points']:+.2f})",
                f"{c['gap_offset_sd']:+.2f} +- {c['se_gap_offset_sd']:.2f}")
            lines.append(f"| {m} | {s}{mark} | {c['count_female']} / {c['count_male']} | "
                         f"{_num(c['pearson'])} / {_num(c['pearson_female'])} / {_num(c['pearson_male'])} | "
                         + " | ".join(off) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Score each model on each set present, print the tables, optionally write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["mobilenet_v2-scut5500", "mobilenet_v2-mebeauty"])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--one-view", action="store_true", help="no flip TTA for any model (default: each spec's tta_flip)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    ap.add_argument("--scut-root", type=Path, help=f"SCUT-FBP5500 folder (default {SCUT_ROOT})")
    ap.add_argument("--mebeauty-root", type=Path, help=f"MEBeauty folder (default {MEBEAUTY_ROOT})")
    a = ap.parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    sets = pick_sets(a.scut_root, a.mebeauty_root)
    result = {}
    for m in a.models:
        seen, est = sources_seen(m), dldl.load(m)
        spec = est.spec
        cells = {}
        for name, (dataset, root, split, opts) in sets.items():
            cells[name] = evaluate(est, dataset, root, split, opts, a.one_view)
            cells[name]["in_domain"] = bool(seen and dataset in seen)
        result[m] = {"sources_seen": seen, "tta_flip": bool(spec.tta_flip and not a.one_view),
                     "labels": spec.labels.to_dict(), "sets": cells}
    print(tables(result, sets))
    if a.json:
        meta = {name: {"dataset": d, "root": str(root), "split": split, "options": opts,
                       "scale": get_dataset(d).labels} for name, (d, root, split, opts) in sets.items()}
        a.json.write_text(json.dumps({"sets": meta, "models": result}, indent=1))
    return 0


if __name__ == "__main__":
    run_script(main)
