"""Annotated photos: each face's box and a numbered label drawn on a copy of the photo (PIL only,
so that ``dldl predict --save-dir`` does not import matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

BOX_COLOURS = ((255, 196, 0), (0, 200, 255), (255, 90, 160), (120, 230, 90))  # bright, each with a dark outline


def interval_text(interval: tuple[float, float] | None, task: str) -> str:
    """An interval as the table and the pictures show it: whole years for age, a score's tenths.

    >>> interval_text((3.0, 17.0), "age"), interval_text((1.5, 5.0), "beauty"), interval_text(None, "age")
    ('3-17', '1.5-5.0', '')
    """
    if interval is None:
        return ""
    digits = 0 if task == "age" else 1
    return f"{interval[0]:.{digits}f}-{interval[1]:.{digits}f}"


def annotate_photo(image: Any, faces: Sequence[Any], task: str, numbers: Sequence[int] | None = None) -> Any:
    """A copy of PIL ``image`` with each face's box and a numbered label ``"1  age 31.2 (25-38)"``,
    sized to the photo (readable on 400 px and on 4000 px photos) and drawn white on a dark tag,
    each box bright with a dark outline, so both show on light and dark backgrounds. Faces are
    numbered from 1, as in the table, the CSV and the JSON order (or by ``numbers``, e.g. track ids).

    >>> from PIL import Image
    >>> from types import SimpleNamespace
    >>> face = SimpleNamespace(box=(10.0, 10.0, 60.0, 70.0), value=31.2, interval=(25.0, 38.0), flags=())
    >>> annotate_photo(Image.new("RGB", (200, 150), "white"), [face], "age").size
    (200, 150)
    """
    from PIL import ImageDraw, ImageFont

    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    side = min(out.size)
    width = max(2, round(side / 250))
    font = ImageFont.load_default(size=max(12, round(side / 32)))
    for n, face in zip(numbers or range(1, len(faces) + 1), faces):
        colour = BOX_COLOURS[(n - 1) % len(BOX_COLOURS)]
        x0, y0, x1, y1 = face.box
        draw.rectangle((x0 - width, y0 - width, x1 + width, y1 + width), outline=(0, 0, 0), width=width)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        text = f"{n}  {task} {face.value:.1f}"
        if getattr(face, "interval", None):
            text += f" ({interval_text(face.interval, task)})"
        if getattr(face, "flags", ()):
            text += " ?"  # a flagged estimate (see the table's note)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        pad = max(2, (bottom - top) // 5)
        tw, th = right - left + 2 * pad, bottom - top + 2 * pad
        tx = min(max(0.0, x0 - width), out.width - tw)
        ty = y0 - width - th if y0 - width - th >= 0 else min(y1 + width, out.height - th)  # above the box, else below
        draw.rectangle((tx, ty, tx + tw, ty + th), fill=(20, 20, 20), outline=colour, width=max(1, width // 2))
        draw.text((tx + pad - left, ty + pad - top), text, font=font, fill=(255, 255, 255))
    return out
