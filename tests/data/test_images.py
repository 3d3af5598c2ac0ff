import numpy as np
import pytest
from PIL import Image

from dldl.data.images import MAX_PIXELS, load_face, read_image, square_resize
from dldl.errors import DataError


def _save(tmp_path, name, img, **kw):
    p = tmp_path / name
    img.save(p, **kw)
    return p


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16"])
def test_modes_become_rgb(tmp_path, mode):
    img = Image.new(mode, (30, 20))
    suffix = ".jpg" if mode == "CMYK" else ".png"
    out = read_image(_save(tmp_path, f"x{suffix}", img))
    assert out.mode == "RGB" and out.size == (30, 20)


def test_16_bit_values_are_scaled_by_the_16_bit_range_not_the_brightest_pixel(tmp_path):
    dark = Image.fromarray(np.full((8, 8), 25 * 257, dtype=np.uint16))  # a dark 16-bit image: 8-bit value 25
    out = np.asarray(read_image(_save(tmp_path, "dark16.png", dark)))
    assert dark.mode == "I;16" and out.min() == out.max() == 25


def test_alpha_is_composited_on_white(tmp_path):
    out = read_image(_save(tmp_path, "a.png", Image.new("RGBA", (4, 4), (0, 0, 0, 0))))
    assert np.asarray(out).min() == 255


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    out = read_image(_save(tmp_path, "r.jpg", img, exif=exif))
    assert out.size == (20, 40)


@pytest.mark.parametrize("content,problem", [
    (b"", "empty file"),
    (b"this is not an image", "not a readable image"),
])
def test_bad_files_name_file_and_problem(tmp_path, content, problem):
    p = tmp_path / "bad face.jpg"
    p.write_bytes(content)
    with pytest.raises(DataError, match=problem) as e:
        read_image(p)
    assert "bad face.jpg" in str(e.value)


def test_truncated_jpeg(tmp_path):
    p = _save(tmp_path, "t.jpg", Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    p.write_bytes(p.read_bytes()[:300])
    with pytest.raises(DataError, match="t.jpg"):
        read_image(p)


def test_missing_and_folder(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(DataError, match="is a folder"):
        read_image(tmp_path)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("dldl.data.images.MAX_PIXELS", 100)
    p = _save(tmp_path, "big.png", Image.new("RGB", (20, 20)))
    with pytest.raises(DataError, match="above the limit"):
        read_image(p)
    assert MAX_PIXELS > 20_000_000


def test_square_resize_centre_crops():
    arr = np.zeros((10, 30, 3), dtype=np.uint8)
    arr[:, 10:20] = 255  # the centre square is white
    out = square_resize(Image.fromarray(arr), 5)
    assert out.shape == (5, 5, 3) and out.min() > 200


def test_load_face(tmp_path):
    p = _save(tmp_path, "f.png", Image.new("RGB", (50, 50), (10, 20, 30)))
    out = load_face(p, 16)
    assert out.dtype == np.uint8 and out.shape == (16, 16, 3) and tuple(out[8, 8]) == (10, 20, 30)


def test_damaged_exif_is_a_warning_and_the_pixels_are_kept(tmp_path):
    """Issue repro: a single-byte EXIF mutation made exif_transpose raise TypeError and killed the batch."""
    import io
    import warnings as w

    from dldl.data.images import ExifWarning, read_image

    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x112], exif[0x10F] = 6, "cam"
    Image.new("RGB", (200, 100), (10, 20, 30)).save(buf, "JPEG", exif=exif)
    data = bytearray(buf.getvalue())
    data[41] = 0x1F
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(bytes(data))
    with pytest.warns(ExifWarning, match=r"bad.jpg: damaged EXIF data \(TypeError\), orientation not applied"):
        img = read_image(bad)
    assert img.size == (200, 100)  # unrotated
    # bounded fuzz: every single-byte change of the EXIF block gives an image or a DataError, nothing else
    start, count = data.index(b"Exif"), 0
    for i in range(start, min(start + 120, len(data))):
        for value in (0x00, 0x1F, 0x7F, 0xFF):
            mutated = bytearray(buf.getvalue())
            mutated[i] = value
            f = tmp_path / f"m{i}_{value}.jpg"
            f.write_bytes(bytes(mutated))
            with w.catch_warnings():
                w.simplefilter("ignore")
                try:
                    read_image(f)
                except DataError:
                    pass
            count += 1
    assert count >= 400
