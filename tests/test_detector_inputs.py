"""Every image the photo pipeline takes reaches the face detector the same way (issue 38, item 4).

One bundled photo (two faces, one cut by the border) stored as grayscale, CMYK, 16-bit, palette,
with alpha, rotated by its EXIF orientation, and tiny and huge variants, given to ``dldl.pipeline``'s
:class:`~dldl.predictor.Predictor` as a path, a PIL image and bytes: the default detector (YuNet in
ONNX Runtime) gets an upright ``(H, W, 3)`` uint8 RGB array and finds the faces of the plain photo
where they are.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dldl
from dldl.assets import PHOTOS_DIR
from dldl.faces import OnnxYuNetDetector
from dldl.predictor import Predictor

PHOTO = PHOTOS_DIR / "steward-masweneng-Ws4YEqBafus-unsplash.jpg"  # 500 x 500, 2 faces
HUGE = (8000, 6000)  # the photo, 12x, in a grey 8000 x 6000 frame (48 MP, under MAX_PIXELS)


def plain_photo() -> Image.Image:
    """The photo cut to 500 x 420 (both faces kept): not square, so a turn shows in the shape."""
    return Image.open(PHOTO).convert("RGB").crop((0, 0, 500, 420))


class Spy:
    """A detector that records what reaches it."""

    def __init__(self, inner) -> None:
        self.inner, self.seen = inner, []

    def detect(self, image: np.ndarray):
        self.seen.append((image.shape, image.dtype))
        return self.inner.detect(image)


def write_variant(kind: str, folder: Path) -> tuple[Path, tuple[int, int], float, tuple[float, float]]:
    """The photo stored as ``kind``: its file, the upright ``(H, W)`` expected, and the scale and
    offset that take the plain photo's boxes to it."""
    rgb = plain_photo()
    path = folder / f"{kind}.{'jpg' if kind in ('cmyk', 'exif', 'huge') else 'png'}"
    scale, offset = 1.0, (0.0, 0.0)
    if kind == "gray":
        rgb.convert("L").save(path)
    elif kind == "cmyk":
        rgb.convert("CMYK").save(path, quality=95)
    elif kind == "16-bit":
        Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257).save(path)  # I;16 PNG
    elif kind == "palette":
        rgb.quantize(256, method=Image.Quantize.FASTOCTREE).save(path)
    elif kind == "alpha":
        rgba = rgb.convert("RGBA")
        rgba.putalpha(Image.fromarray(np.pad(np.full((400, 500), 255, np.uint8), ((0, 20), (0, 0)))))  # a clear strip
        rgba.save(path)
    elif kind == "exif":  # stored turned a quarter left; orientation 6 says "turn right to view"
        exif = Image.Exif()
        exif[0x0112] = 6
        rgb.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif)
    elif kind == "tiny":
        rgb.resize((10, 10), Image.BILINEAR).save(path)
        return path, (10, 10), 0.0, offset
    elif kind == "huge":
        frame = Image.new("RGB", HUGE, (128, 128, 128))
        frame.paste(rgb.resize((6000, 5040), Image.BILINEAR), (1000, 0))
        frame.save(path, quality=90)
        scale, offset = 12.0, (1000.0, 0.0)
    return path, (HUGE[1], HUGE[0]) if kind == "huge" else (420, 500), scale, offset


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


@pytest.fixture(scope="module")
def pipeline_parts():
    if "tiny_age_net-utkface" not in dldl.list_pretrained():
        pytest.skip("no shipped model in this checkout")
    predictor = dldl.pipeline("age", "tiny_age_net-utkface")
    assert isinstance(predictor.detector, OnnxYuNetDetector)  # the default, nothing to install
    plain = [f.box for f in predictor.detector.detect(np.asarray(plain_photo()))]
    assert len(plain) == 2
    return predictor, plain


KINDS = ["gray", "cmyk", "16-bit", "palette", "alpha", "exif", "tiny", "huge"]
CASES = [(kind, source) for kind in KINDS for source in ("path", "pil", "bytes") if kind != "huge" or source == "path"]
"""The huge photo only as a path: one 48 MP decode is enough (the sources share the conversion)."""


@pytest.mark.parametrize(("kind", "source"), CASES)
def test_every_kind_of_photo_reaches_the_detector_upright_rgb(pipeline_parts, tmp_path, kind, source):
    predictor, plain = pipeline_parts
    path, (height, width), scale, (dx, dy) = write_variant(kind, tmp_path)
    spy = Spy(predictor.detector)
    pred = Predictor(predictor.estimator, spy)
    given = {"path": path, "pil": Image.open(path), "bytes": path.read_bytes()}[source]
    result = pred(given)
    assert result.error is None
    from dldl.data.images import WORKING_PIXELS

    if height * width > WORKING_PIXELS and source != "pil":  # a file over 16 MP is decoded smaller, boxes still the photo's
        (seen_shape, seen_type), = spy.seen
        assert seen_type == np.uint8 and seen_shape[2] == 3 and seen_shape[0] * seen_shape[1] <= WORKING_PIXELS
        assert abs(seen_shape[0] / seen_shape[1] - height / width) < 0.01
    else:
        assert spy.seen == [((height, width, 3), np.uint8)]
    if kind == "tiny":
        assert result.faces == []
        return
    assert len(result.faces) == len(plain), [f.box for f in result.faces]
    for face, box in zip(result.faces, plain):
        expected = (box[0] * scale + dx, box[1] * scale + dy, box[2] * scale + dx, box[3] * scale + dy)
        assert iou(face.box, expected) > 0.8, (face.box, expected)
        assert face.value is not None and 0 <= face.value <= 120


def test_bytes_and_file_objects_are_the_same_photo(pipeline_parts, tmp_path):
    predictor, _ = pipeline_parts
    path, *_ = write_variant("exif", tmp_path)
    by_path = predictor(path)
    by_file = predictor(io.BytesIO(path.read_bytes()))
    assert [f.box for f in by_file.faces] == [f.box for f in by_path.faces]
