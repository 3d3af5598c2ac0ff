"""Pack UTKFace coral_train + coral_test into one small archive for a lent GPU machine (< 60 MB).

The device tool carries at most 64 MiB with the working tree, and UTKFace's 16,433 coral faces
are 81 MB as shipped, so each face is re-encoded as a JPEG of side ``--side`` at ``--quality``
(optimised Huffman tables). Candidates, measured once with an ad-hoc script on 300 random faces
(seed 0; PSNR against the original after resizing back to 200 px): 200 px q40 2.7 kB/face,
38.4 dB; 176 px q70 3.5 kB, 40.8 dB; 160 px q75 3.4 kB, 40.9 dB; 144 px q80 3.4 kB, 41.0 dB;
128 px q85 3.3 kB, 41.2 dB. The default, 160 px q75, keeps many pixels for the 224 px input with
~2 MB to spare under 60 MB (176 px q70 would leave under 1 MB). ``--check`` measures the
archive's effect: PSNR and the shipped 64 px age model's MAE on packed vs original test faces.
Measured with the command below: 57.65 MB (3,508 B/face); coral_test median PSNR 40.82 dB; MAE of
``tiny_age_net-utkface`` 5.1404 on the original faces, 5.1438 on the packed ones (+0.0034). At
224 px the network sees more of the detail lost to the smaller side (not measured here).

The archive is an uncompressed ``.npz``: ``jpeg`` (all files' bytes, concatenated), ``offsets``
(N + 1), ``names`` and ``splits`` (newline-joined UTF-8), ``split`` (index into ``splits`` per
face), ``meta`` (JSON). File names are UTKFace's own, so ages parse from them and the 10%
hold-out that ``dldl.training`` draws by file-name hash is the same as on the original files.

    python benchmarks/pack_utkface.py --root ../shared/data/utkface --out .pack/utkface_coral.npz --check
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import benchlib
import numpy as np
from PIL import Image

from dldl.data.images import read_image
from dldl.data.samples import SampleList
from dldl.data.datasets import load_dataset
from dldl.errors import DataError

SPLITS = ("coral_train", "coral_test")
MAX_MB = 60.0


def _encode(job: tuple[str, int, int]) -> bytes:
    path, side, quality = job
    img = read_image(path)
    if img.size != (side, side):
        img = img.resize((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def _text(values: list[str]) -> np.ndarray:
    return np.frombuffer("\n".join(values).encode(), dtype=np.uint8)


def pack(root: Path, out: Path, side: int = 160, quality: int = 75, splits: tuple[str, ...] = SPLITS,
         limit: int | None = None, workers: int = 1, max_mb: float = MAX_MB) -> dict[str, Any]:
    """Write the archive; returns its summary (faces, bytes). ``limit``: first N faces per split."""
    names, split_of, jobs = [], [], []
    for k, split in enumerate(splits):
        for s in load_dataset("utkface", root, split).samples[:limit]:
            names.append(s.path.name)
            split_of.append(k)
            jobs.append((str(s.path), side, quality))
    t0 = time.perf_counter()
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            blobs = list(pool.map(_encode, jobs, chunksize=64))
    else:
        blobs = [_encode(j) for j in jobs]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    meta = {"source": str(root), "side": side, "quality": quality, "faces": len(names), "splits": list(splits)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, jpeg=np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets=offsets, names=_text(names),
             splits=_text(list(splits)), split=np.array(split_of, dtype=np.uint8), meta=_text([json.dumps(meta)]))
    os.replace(tmp, out)
    size = out.stat().st_size
    if size > max_mb * 1e6:
        raise DataError(out, f"archive is {size / 1e6:.1f} MB, above {max_mb:g} MB: lower --side or --quality")
    return {**meta, "archive": str(out), "bytes": size, "bytes_per_face": round(size / max(len(names), 1)),
            "encode_s": round(time.perf_counter() - t0, 1)}


def read_pack(path: Path) -> dict[str, Any]:
    """The archive as ``{"names", "split" (names per face), "jpeg" (bytes per face), "meta"}``."""
    try:
        with np.load(path) as z:
            data, offsets = z["jpeg"].tobytes(), z["offsets"]
            names = z["names"].tobytes().decode().split("\n")
            splits = z["splits"].tobytes().decode().split("\n")
            split = [splits[i] for i in z["split"]]
            meta = json.loads(z["meta"].tobytes().decode())
    except (OSError, KeyError, ValueError) as e:
        raise DataError(path, f"not a UTKFace pack written by pack_utkface.py ({e})") from None
    if not (len(names) == len(split) == len(offsets) - 1):
        raise DataError(path, f"damaged pack: {len(names)} names, {len(split)} split entries, {len(offsets) - 1} images")
    return {"names": names, "split": split, "meta": meta,
            "jpeg": [data[offsets[i]:offsets[i + 1]] for i in range(len(names))]}


def unpack(path: Path, dest: Path) -> Path:
    """Write the archive as a UTKFace folder (``images/`` + ``splits/<split>.txt``) that
    ``dldl.data.sources.read_utkface`` reads; returns ``dest``."""
    p = read_pack(path)
    (dest / "images").mkdir(parents=True, exist_ok=True)
    (dest / "splits").mkdir(exist_ok=True)
    lists: dict[str, list[str]] = {}
    for name, split, blob in zip(p["names"], p["split"], p["jpeg"]):
        (dest / "images" / name).write_bytes(blob)
        lists.setdefault(split, []).append(name)
    for split, files in lists.items():
        (dest / "splits" / f"{split}.txt").write_text("\n".join(files) + "\n")
    return dest


def check(path: Path, root: Path, limit: int | None = None) -> dict[str, Any]:
    """Effect of the packing on ``coral_test``: median PSNR (packed, resized back to the original
    side, vs the original) and the shipped age model's MAE (flip TTA) on packed vs original faces."""
    import tempfile

    import dldl
    from dldl.data.cache import decode_all
    from dldl.metrics import mae

    est = dldl.load("tiny_age_net-utkface")
    original = load_dataset("utkface", root, "coral_test")
    with tempfile.TemporaryDirectory() as tmp:
        packed = load_dataset("utkface", unpack(path, Path(tmp)), "coral_test")
        keep = {s.path.name for s in packed.samples}
        orig = [s for s in original.samples if s.path.name in keep][:limit]
        byname = {s.path.name: s for s in packed.samples}
        psnr = []
        for s in orig[:300]:
            a = np.asarray(read_image(s.path), dtype=np.float64)
            b = read_image(byname[s.path.name].path).resize(a.shape[1::-1], Image.Resampling.BICUBIC)
            psnr.append(10 * np.log10(255**2 / max(((np.asarray(b, dtype=np.float64) - a) ** 2).mean(), 1e-12)))
        truth = np.array([s.label for s in orig])
        rows = {}
        for label, samples in (("original", orig), ("packed", [byname[s.path.name] for s in orig])):
            images = decode_all(SampleList(label, samples), est.cache_size, workers=1)
            rows[label] = round(mae(est.predict_arrays(images).estimate, truth), 4)
    return {"faces": len(orig), "psnr_db_median": round(float(np.median(psnr)), 2), "mae_original": rows["original"],
            "mae_packed": rows["packed"], "mae_change": round(rows["packed"] - rows["original"], 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=benchlib.SHARED_DATA / "utkface")
    ap.add_argument("--out", type=Path, default=benchlib.REPO / ".pack" / "utkface_coral.npz")
    ap.add_argument("--side", type=int, default=160)
    ap.add_argument("--quality", type=int, default=75)
    ap.add_argument("--limit", type=int, default=None, help="first N faces of each split (tests)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--max-mb", type=float, default=MAX_MB)
    ap.add_argument("--check", action="store_true", help="measure PSNR and the shipped model's MAE change on coral_test")
    args = ap.parse_args()
    summary = pack(args.root, args.out, args.side, args.quality, limit=args.limit, workers=args.workers, max_mb=args.max_mb)
    if args.check:
        summary["check"] = check(args.out, args.root, args.limit)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
