"""Reading images safely: every failure becomes a one-line :class:`~dldl.errors.DataError`.

Handles EXIF orientation, grayscale / CMYK / palette / alpha / 16-bit inputs (all become 8-bit RGB)
and refuses decompression bombs (more than :data:`MAX_PIXELS` pixels).
"""

from __future__ import annotations

import errno
import math
import re
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dldl.errors import DataError, first_line

MAX_PIXELS = 120_000_000
"""The one decompression-bomb cap (about 13400 x 9000): a file with more pixels is refused from its
header, before any pixel is decoded, by every reader (``dldl predict``, the server, datasets, videos)."""
WORKING_PIXELS = 16_000_000
"""The photo pipeline decodes a larger photo down to about this many pixels (a 4900 x 3270 image;
JPEGs at a reduced scale straight from the file): enough for any face, and the boxes and landmarks
are reported in the photo's own pixels all the same (:func:`read_photo`)."""
READ_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "DIB", "TIFF", "GIF", "AVIF", "PPM")  # JPEG covers MPO (multi-picture) files
"""The formats dldl opens (Pillow's plugins for them, and no others): photo formats. Anything else
(ICO, DDS, EPS, PSD, ...) is refused as an unknown format before a plugin parses it."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".avif", ".mpo", ".ppm", ".pgm", ".pnm")
"""The file names a folder scan picks up: those of :data:`READ_FORMATS`."""


def _to_rgb(img: Image.Image, name: str | Path = "<image>") -> Image.Image:
    if img.mode == "F":  # float pixels: a photo in 0..1 (or already 0..255); other ranges are no photo
        arr = np.asarray(img, dtype=np.float64)
        top = float(np.max(arr)) if arr.size and np.isfinite(arr).all() else float("nan")
        if not (np.isfinite(top) and arr.min() >= 0 and top <= 255):
            raise DataError(name, "floating-point pixels outside 0..1 and 0..255: not a photo (convert it to 8-bit)")
        img = Image.fromarray(np.clip(np.rint(arr * (255.0 if top <= 1.0 else 1.0)), 0, 255).astype(np.uint8), "L")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)  # 16-bit range 0..65535 -> 0..255; an "I" image holding 8-bit values stays
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise DataError(name, "32-bit integer pixels beyond the 16-bit range: not an 8- or 16-bit photo (convert it to 8-bit)")
        scale = 255.0 / 65535.0 if arr.size and arr.max() > 255 else 1.0
        img = Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _too_large(p: Path, size: str, limit: int = MAX_PIXELS) -> DataError:
    return DataError(p, f"image {size}, above the limit of {limit:,} (decompression-bomb guard)")


class ExifWarning(UserWarning):
    """A photo's EXIF block could not be read: its pixels are used unrotated."""


def _exif_upright(img: Image.Image, path: Path) -> Image.Image:
    """``img`` turned upright by its EXIF orientation; a damaged EXIF block (which makes Pillow
    raise TypeError, struct.error, AttributeError, ...) is one warning naming the file, and the
    pixels are kept as stored, so one bad photo never stops a batch."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception as e:  # noqa: BLE001 -- any failure inside Pillow's EXIF parser means "unreadable EXIF"
        warnings.warn(ExifWarning(f"{path}: damaged EXIF data ({type(e).__name__}), orientation not applied"), stacklevel=3)
        return img


def upright_rgb(img: Image.Image, name: str | Path = "<image>") -> Image.Image:
    """``img`` (any mode) turned upright by its EXIF orientation and made 8-bit RGB, as
    :func:`read_image` does for files; ``name`` is what a damaged-EXIF warning or a refusal calls it.

    Raises:
        DataError: pixels that are no photo (floats or 32-bit integers beyond a photo's range).
    """
    return _to_rgb(_exif_upright(img, Path(name)), name)


def _not_found(text: str) -> str:
    """Why a path that is not there was not read, saying what is accepted when it looks like a URL or stdin.

    >>> _not_found("https://example.org/a.jpg")
    'file not found (URLs are not fetched: dldl works offline; download the photo and give its path)'
    """
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:/", text):  # a Path folds "https://" into "https:/"
        return "file not found (URLs are not fetched: dldl works offline; download the photo and give its path)"
    if text == "-":
        return "file not found (standard input is not read; give photo files or folders)"
    return "file not found"


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open an image file as an 8-bit RGB PIL image with EXIF orientation applied.

    ``max_pixels`` (at most :data:`MAX_PIXELS`) bounds the decoding work; the size is read from the
    header, before any pixel is decoded.

    Raises:
        DataError: the file is missing, empty, not a regular file, not an image, truncated, or too large.
    """
    return read_photo(path, max_pixels)[0]


def read_photo(path: str | Path, max_pixels: int = MAX_PIXELS, working_pixels: int | None = None
               ) -> tuple[Image.Image, float]:
    """:func:`read_image`, and a photo over ``working_pixels`` decoded down to about that many
    pixels (a JPEG at a reduced scale straight from the file, others resized after decoding);
    returns the image and its ``scale``, the photo's pixels per pixel of the image (1.0 when kept).

    Raises:
        DataError: as :func:`read_image`.
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise DataError(p, "symbolic link loop") from None
        if p.is_symlink():
            raise DataError(p, "broken symbolic link (its target does not exist)") from None
        if isinstance(e, FileNotFoundError):
            raise DataError(p, _not_found(str(path))) from None
        raise DataError(p, f"cannot read ({e.strerror})") from None
    if p.is_dir():
        raise DataError(p, "is a folder, not an image file")
    if not stat.S_ISREG(st.st_mode):  # never opened: a FIFO would block, /dev/zero never ends
        raise DataError(p, "not a regular file (a FIFO, device or socket), not an image file")
    if st.st_size == 0:
        raise DataError(p, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the cap is ours (MAX_PIXELS), checked from the header below
            with Image.open(p, formats=READ_FORMATS) as img:
                w, h = img.size
                if w * h > min(max_pixels, MAX_PIXELS):
                    raise _too_large(p, f"is {w}x{h} = {w * h:,} pixels", min(max_pixels, MAX_PIXELS))
                if w < 1 or h < 1:
                    raise DataError(p, f"image has no pixels ({w}x{h})")
                shrink = math.sqrt(working_pixels / (w * h)) if working_pixels and w * h > working_pixels else 1.0
                if shrink < 1.0:
                    # JPEG: decode at the smallest of 1/2, 1/4, 1/8 that keeps at least half the working side
                    img.draft("RGB", (max(1, int(w * shrink / 2)), max(1, int(h * shrink / 2))))
                img.load()
                out = img
                if out.width * out.height > (working_pixels or out.width * out.height):
                    out = out.resize((max(1, round(w * shrink)), max(1, round(h * shrink))), Image.Resampling.BOX)
                return upright_rgb(out, p), w / out.width
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # Pillow's own, looser check
        m = re.search(r"\((\d+) pixels\)", str(e))
        raise _too_large(p, f"has {int(m[1]):,} pixels" if m else "has too many pixels") from None
    except UnidentifiedImageError:
        raise DataError(p, f"not a readable image (unknown format or corrupted); dldl reads {', '.join(READ_FORMATS)}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(p, f"cannot decode image: {first_line(e)}") from None
    except MemoryError:
        raise DataError(p, "cannot decode image: not enough memory for its pixels") from None
    except Exception as e:  # noqa: BLE001 -- Pillow's plugins raise TypeError, RuntimeError, NotImplementedError... on damaged files
        raise DataError(p, f"cannot decode image ({type(e).__name__}: {first_line(e)[:160]})") from None


def square_resize(img: Image.Image, size: int) -> np.ndarray:
    """Centre-crop ``img`` to a square and resize it to ``size x size``: ``(size, size, 3)`` uint8.

    Aligned face crops are already square, so for them this is a plain resize.

    >>> square_resize(Image.new("RGB", (40, 20), (255, 0, 0)), 8).shape
    (8, 8, 3)
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    if (w, h) != (side, side):
        img = img.crop((left, top, left + side, top + side))
    if side != size:
        img = img.resize((size, size), Image.Resampling.BICUBIC if size > side else Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def load_face(path: str | Path, size: int) -> np.ndarray:
    """:func:`read_image` then :func:`square_resize`: a ``(size, size, 3)`` uint8 array."""
    return square_resize(read_image(path), size)
