"""Measure what dldl.faces needs from data: the alignment templates, the round trip, the speed.

    python benchmarks/measure_template.py template utkface     # mean landmarks on UTKFace chips
    python benchmarks/measure_template.py template mebeauty    # ... on MEBeauty's MTCNN crops
    python benchmarks/measure_template.py roundtrip            # detect + align UTKFace chips at 200 px
    python benchmarks/measure_template.py speed                # detection ms on MEBeauty originals

Data come from ../shared/data (``--data`` to change). Results are printed; docs/FACES.md records them.
``--detector`` (default ``yuface``, with which the shipped templates were measured; ``yunet``: the
default detector, the same network in ONNX Runtime).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path

import numpy as np
from scipy.stats import trim_mean

from dldl.data.images import read_image
from dldl.faces import (
    DETECTORS,
    TEMPLATES,
    align_face,
    alignment_matrix,
    get_detector,
    invert_affine,
    transform_points,
    warp_affine,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def utkface_chips(data: Path, n: int) -> list[Path]:
    """The first ``n`` names of the coral_test split (a shuffled list): 200x200 chips."""
    names = (data / "utkface" / "splits" / "coral_test.txt").read_text().split()
    return [data / "utkface" / "images" / name for name in names[:n]]


def mebeauty_crops(data: Path, n: int) -> list[Path]:
    """``n`` of MEBeauty's 224x224 MTCNN crops, evenly spaced over the sorted list (all groups)."""
    files = sorted((data / "mebeauty" / "cropped_images" / "images_crop_align_mtcnn").rglob("*.jpg"))
    step = max(1, len(files) // n)
    return files[::step][:n]


def main_face(detector, image: np.ndarray, pad: int = 0):
    """The best-scored face of ``image`` reflect-padded by ``pad`` px (context for the detector, as
    in a photo), with landmarks in the unpadded image's pixels; None if there is none."""
    if pad:
        image = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    faces = detector.detect(image)
    if not faces:
        return None
    face = max(faces, key=lambda f: f.score)
    return face.score, face.landmarks - pad


def cmd_template(args) -> None:
    files = utkface_chips(args.data, args.n) if args.dataset == "utkface" else mebeauty_crops(args.data, args.n)
    det = get_detector(args.detector, min_score=0.0, min_size=0)
    points, found = [], 0
    for path in files:
        image = np.asarray(read_image(path))
        for pad in args.pad:
            face = main_face(det, image, pad)
            if face is None:
                continue
            found += face[0] >= 0.5
            if face[0] >= args.min_score:
                points.append((face[1] + 0.5) / image.shape[0])
    pts = np.array(points)
    # The detector reports whole pixels, so a median sits on a 1 px grid (a 0.7 deg tilt step between
    # eyes ~80 px apart); the 20%-trimmed mean (mean of the middle 60%) is as robust and sub-pixel.
    trimmed = trim_mean(pts, 0.2, axis=0)
    med = np.median(pts, axis=0)
    iqr = np.percentile(pts, 75, axis=0) - np.percentile(pts, 25, axis=0)
    print(f"{args.dataset}: {len(files)} images x reflect padding {args.pad} px: {found} detections scored "
          f">= 0.5, {len(pts)} scored >= {args.min_score} used")
    print("(x, y) normalised to the crop side, rows: left eye, right eye, nose, mouth left, mouth right")
    print("20%-trimmed mean (the template):")
    print("[" + ", ".join(f"[{x:.4f}, {y:.4f}]" for x, y in trimmed) + "]")
    print("median:", "[" + ", ".join(f"[{x:.4f}, {y:.4f}]" for x, y in med) + "]")
    print("interquartile range:", "[" + ", ".join(f"[{x:.3f}, {y:.3f}]" for x, y in iqr) + "]")


def cmd_roundtrip(args) -> None:
    det = get_detector(args.detector, min_score=0.0, min_size=0)
    target = TEMPLATES["utkface"] * 200 - 0.5
    mad, mad_centre, mad_shift, fit_err, redetect_err, repeat_err = ([] for _ in range(6))
    scales, angles, shifts = [], [], []
    missed = 0
    for i, path in enumerate(utkface_chips(args.data, args.n)):
        chip = np.asarray(read_image(path))
        pad = args.pad[i % len(args.pad)]
        face = main_face(det, chip, pad)
        if face is None or face[0] < args.min_score:
            missed += 1
            continue
        m = alignment_matrix(face[1], "utkface", 200)
        crop = warp_affine(chip, m, 200)
        diff = np.abs(crop.astype(np.int16) - chip.astype(np.int16))
        mad.append(diff.mean())
        mad_centre.append(diff[40:160, 40:160].mean())
        mad_shift.append(np.abs(chip[:, 1:].astype(np.int16) - chip[:, :-1]).mean())
        fit_err.append(np.linalg.norm(transform_points(face[1], m) - target, axis=1).mean())
        again = main_face(det, crop, pad)
        if again is not None:
            redetect_err.append(np.linalg.norm(again[1] - target, axis=1).mean())
            back = transform_points(again[1], invert_affine(m))  # into the chip's pixels
            repeat_err.append(np.linalg.norm(back - face[1], axis=1).mean())
        scales.append(math.hypot(m[0, 0], m[1, 0]))
        angles.append(math.degrees(math.atan2(m[1, 0], m[0, 0])))
        shifts.append(transform_points(np.array([[99.5, 99.5]]), m)[0] - 99.5)

    def q(values, fmt=".2f"):
        return " / ".join(format(v, fmt) for v in np.percentile(values, [50, 90]))

    print(f"round trip on {len(mad)} UTKFace chips ({missed} without a face scored >= {args.min_score}), "
          f"reflect padding {args.pad} px for detection; median / 90th percentile:")
    print(f"  mean |aligned - chip| (0..255): whole crop {q(mad)}, central 120x120 {q(mad_centre)}"
          f" (reference: chip vs itself shifted 1 px: {q(mad_shift)})")
    shifts = np.array(shifts)
    print(f"  transform chip -> crop: scale {q(scales, '.3f')}, |angle| deg {q(np.abs(angles))}, "
          f"|centre shift| px {q(np.linalg.norm(shifts, axis=1))}")
    print(f"  systematic part (mean): scale {np.mean(scales):.3f}, angle {np.mean(angles):+.2f} deg, "
          f"centre shift ({shifts[:, 0].mean():+.2f}, {shifts[:, 1].mean():+.2f}) px")
    print(f"  landmark error px (mean over 5 points): similarity fit residual {q(fit_err)}, "
          f"re-detected on the crop vs template {q(redetect_err)}, re-detected and mapped back vs first "
          f"detection (detector repeatability) {q(repeat_err)} ({len(redetect_err)} re-detected)")


def cmd_speed(args) -> None:
    files = sorted((args.data / "mebeauty" / "original_images").rglob("*.jpg"))[: args.n]
    det = get_detector(args.detector, num_threads=args.threads)
    images = [np.asarray(read_image(p)) for p in files]
    det.detect(images[0])  # warm-up
    wall, cpu, align, found = [], [], [], 0
    for image in images:
        runs = []
        for _ in range(args.repeat):  # the fastest of a few runs: the least disturbed by other jobs
            t0, c0 = time.perf_counter(), time.process_time()
            faces = det.detect(image)
            runs.append((time.perf_counter() - t0, time.process_time() - c0))
        wall.append(min(r[0] for r in runs))
        cpu.append(min(r[1] for r in runs))
        found += bool(faces)
        for face in faces:
            c0 = time.process_time()
            align_face(image, face.landmarks, "utkface", 200)
            align.append(time.process_time() - c0)
    sides = sorted({max(i.shape[:2]) for i in images})
    print(f"{len(images)} MEBeauty originals (long side {sides[0]}..{sides[-1]} px), {found} with >= 1 face "
          f"(defaults: min_score 0.7, min_size 20); threads {args.threads}")
    print(f"  detection ms per image (fastest of {args.repeat} runs): median wall {1000 * statistics.median(wall):.1f}, "
          f"median CPU {1000 * statistics.median(cpu):.1f}; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    print(f"  align_face to 200 px: median CPU {1000 * statistics.median(align):.2f} ms per face")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--detector", default="yuface", choices=sorted(DETECTORS),
                        help="the templates were measured with yuface, the same network as the default yunet")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("template", help="print the median normalised landmarks of a dataset's crops")
    p.add_argument("dataset", choices=["utkface", "mebeauty"])
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--min-score", type=float, default=0.9)
    p.add_argument("--pad", type=int, nargs="+", default=[0],
                   help="detect on each crop reflect-padded by each of these px (context), pool the results")
    p.set_defaults(func=cmd_template)
    p = sub.add_parser("roundtrip", help="detect + align UTKFace chips at 200 px, compare with the chip")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--min-score", type=float, default=0.7)
    p.add_argument("--pad", type=int, nargs="+", default=[0],
                   help="detect on chip i reflect-padded by pad[i %% len(pad)] px")
    p.set_defaults(func=cmd_roundtrip)
    p = sub.add_parser("speed", help="detection time on MEBeauty's in-the-wild originals")
    p.add_argument("--n", type=int, default=444)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.set_defaults(func=cmd_speed)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
