"""Seeded fuzzing of the image reader: every file is either read as an 8-bit RGB photo or refused
with one DataError line naming it; anything else (a TypeError from a TIFF plugin, a RuntimeError
from AVIF, a hang) is a crash.

The files are made here, from one small photo, in every format Pillow can write (JPEG, PNG, WebP,
BMP, TIFF in several modes and compressions, GIF, AVIF, ICO, DDS, TGA, PPM, QOI, JPEG 2000, ...):
intact, truncated at a random byte, with random bytes overwritten, and with damaged metadata
(an EXIF block of garbage, a header field changed). Each case goes through
:func:`dldl.data.images.read_image` as ``dldl predict`` and the server read a file.

    python benchmarks/fuzz_images.py --count 8050 --seed 0 --json docs/bench/fuzz_images.json
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
from PIL import Image

from dldl.data.images import read_image
from dldl.errors import DataError

# (format, mode, save options): what Pillow can write, in the modes photos come in
WRITERS = [
    ("JPEG", "RGB", {}), ("JPEG", "L", {}), ("JPEG", "CMYK", {}), ("JPEG", "RGB", {"progressive": True}),
    ("PNG", "RGB", {}), ("PNG", "RGBA", {}), ("PNG", "P", {}), ("PNG", "I;16", {}), ("PNG", "LA", {}), ("PNG", "1", {}),
    ("WEBP", "RGB", {}), ("WEBP", "RGBA", {"lossless": True}),
    ("BMP", "RGB", {}), ("BMP", "P", {}),
    ("TIFF", "RGB", {}), ("TIFF", "RGB", {"compression": "tiff_lzw"}), ("TIFF", "RGB", {"compression": "jpeg"}),
    ("TIFF", "CMYK", {}), ("TIFF", "F", {}), ("TIFF", "I", {}), ("TIFF", "I;16", {}), ("TIFF", "RGBA", {"compression": "tiff_deflate"}),
    ("TIFF", "1", {"compression": "group4"}), ("TIFF", "LA", {}),
    ("GIF", "P", {}), ("GIF", "L", {}),
    ("AVIF", "RGB", {}),
    ("ICO", "RGBA", {}), ("DDS", "RGBA", {}), ("DDS", "RGB", {}), ("TGA", "RGB", {}), ("PPM", "RGB", {}), ("QOI", "RGBA", {}),
    ("JPEG2000", "RGB", {}), ("PCX", "RGB", {}), ("SGI", "RGB", {}), ("IM", "RGB", {}), ("EPS", "RGB", {}),
]
SUFFIX = {"JPEG": ".jpg", "JPEG2000": ".jp2", "TIFF": ".tif"}
KINDS = ("intact", "truncated", "mutated", "metadata")


def base_photo(size: int = 48) -> Image.Image:
    """A small smooth photo-like RGB image (gradients and a disc), the same every time."""
    y, x = np.mgrid[0:size, 0:size] / size
    disc = ((x - 0.5) ** 2 + (y - 0.45) ** 2 < 0.09).astype(float)
    rgb = np.stack([0.3 + 0.6 * x, 0.2 + 0.5 * y, 0.4 + 0.4 * disc], -1)
    return Image.fromarray((rgb * 255).astype(np.uint8), "RGB")


def encode(fmt: str, mode: str, options: dict, photo: Image.Image) -> bytes | None:
    """``photo`` in ``mode`` written as ``fmt``; ``None`` where this Pillow cannot write it."""
    img = photo.convert(mode) if mode not in ("I;16", "I", "F") else Image.fromarray(
        (np.asarray(photo.convert("L"), np.float64) * {"I;16": 257.0, "I": 8_421_504.0, "F": 1 / 255}[mode]).astype(
            {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]))
    buf = io.BytesIO()
    try:
        img.save(buf, fmt, **options)
    except Exception:  # noqa: BLE001 -- a writer this Pillow build lacks (or a mode it does not take)
        return None
    return buf.getvalue()


def variant(data: bytes, kind: str, rng: random.Random) -> bytes:
    """One damaged copy of ``data``: cut short, some bytes overwritten, or its metadata damaged."""
    if kind == "intact":
        return data
    if kind == "truncated":
        return data[:rng.randrange(1, max(2, len(data)))]
    out = bytearray(data)
    if kind == "mutated":
        for _ in range(rng.randint(1, 12)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    # metadata: overwrite bytes of the header (where sizes, offsets and tags live), or splice in a garbage EXIF block
    if rng.random() < 0.5 and len(out) > 4:
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(min(len(out), 64))] = rng.choice([0, 0xFF, 0x7F, rng.randrange(256)])
        return bytes(out)
    garbage = b"Exif\x00\x00" + bytes(rng.randrange(256) for _ in range(rng.randint(8, 200)))
    segment = b"\xff\xe1" + (len(garbage) + 2).to_bytes(2, "big") + garbage
    return bytes(out[:2]) + segment + bytes(out[2:]) if out[:2] == b"\xff\xd8" else bytes(out) + garbage


def cases(count: int, seed: int) -> list[tuple[str, str, bytes]]:
    """``count`` cases ``(name, suffix, bytes)``, cycling through every writable format and every kind."""
    rng = random.Random(seed)
    photo = base_photo()
    encoded = [(f"{fmt}-{mode}-{'-'.join(map(str, opts.values())) or 'plain'}", SUFFIX.get(fmt, "." + fmt.lower()), data)
               for fmt, mode, opts in WRITERS if (data := encode(fmt, mode, opts, photo)) is not None]
    out = []
    for i in range(count):
        name, suffix, data = encoded[i % len(encoded)]
        kind = KINDS[(i // len(encoded)) % len(KINDS)] if i >= len(encoded) else "intact"
        out.append((f"{i:05d}-{name}-{kind}", suffix, variant(data, kind, rng)))
    return out


def run(count: int, seed: int, folder: Path) -> dict:
    """Write the cases into ``folder`` and read each one; returns the tally and every crash."""
    tally = {"read": 0, "refused": 0}
    crashes: list[dict] = []
    formats = set()
    start = time.perf_counter()
    for name, suffix, data in cases(count, seed):
        formats.add(name.split("-")[1])
        path = folder / f"{name}{suffix}"
        path.write_bytes(data)
        try:
            img = read_image(path)
            assert img.mode == "RGB" and img.size[0] >= 1 and img.size[1] >= 1, f"read as {img.mode} {img.size}"
            tally["read"] += 1
        except DataError as e:
            line = str(e)
            if "\n" in line or str(path) not in line:
                crashes.append({"case": name, "error": f"DataError not one line naming the file: {line[:200]}"})
            tally["refused"] += 1
        except Exception as e:  # noqa: BLE001 -- what the fuzzer is looking for
            crashes.append({"case": name, "error": f"{type(e).__name__}: {e}"[:300],
                            "where": traceback.format_exc().strip().splitlines()[-3][:200]})
        path.unlink()
    return {"cases": count, "seed": seed, "formats": sorted(formats), **tally, "crashes": len(crashes),
            "crash_cases": crashes[:50], "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=8050)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the report here")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dldl-fuzz-") as tmp:
        report = run(a.count, a.seed, Path(tmp))
    report["command"] = "python benchmarks/fuzz_images.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = json.dumps(report, indent=1)
    if a.json:
        a.json.write_text(text + "\n")
    print(text)
    return 1 if report["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
