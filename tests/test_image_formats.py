"""Every image format the photo pipeline may meet: read as 8-bit RGB, or refused in one line naming
the file; never an exception from inside a Pillow plugin (issue: Reliability 3, item 2)."""

import io

import numpy as np
import pytest
from conftest import load_benchmark
from PIL import Image

from dldl.data.images import IMAGE_SUFFIXES, read_image
from dldl.errors import DataError

fuzz = load_benchmark("fuzz_images")


def _gray(path) -> float:
    return float(np.asarray(read_image(path)).mean())


def test_a_fuzzed_slice_of_every_format_ends_without_a_crash(tmp_path):
    """A slice of the seeded fuzz run (the full 8,050 cases: docs/RELIABILITY.md)."""
    report = fuzz.run(600, seed=1, folder=tmp_path)
    assert report["crashes"] == 0, report["crash_cases"]
    assert report["read"] > 100 and report["refused"] > 100
    assert {"TIFF", "AVIF", "DDS", "GIF", "ICO"} <= set(report["formats"])


def test_the_avif_decoder_errors_the_fuzzer_found_are_one_line(tmp_path):
    """Cases 1926 and 4662 of seed 0 made Pillow's AVIF plugin raise RuntimeError past read_image."""
    cases = {name: (suffix, data) for name, suffix, data in fuzz.cases(4663, 0)}
    for name in [n for n in cases if n.startswith(("01926-", "04662-"))]:
        suffix, data = cases[name]
        path = tmp_path / f"{name}{suffix}"
        path.write_bytes(data)
        with pytest.raises(DataError, match="cannot decode image") as e:
            read_image(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_any_exception_inside_a_plugin_becomes_the_file_s_error(tmp_path, monkeypatch):
    path = tmp_path / "x.tif"
    Image.new("RGB", (8, 8)).save(path)

    def broken(self, *a, **k):
        raise TypeError("unsupported operand type(s) for +: 'NoneType' and 'int'")

    monkeypatch.setattr(Image.Image, "load", broken)
    with pytest.raises(DataError, match=r"x\.tif: cannot decode image \(TypeError: unsupported operand"):
        read_image(path)


def test_float_tiff_in_0_to_1_reads_as_its_grey_levels(tmp_path):
    ramp = np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (16, 1))
    path = tmp_path / "float.tif"
    Image.fromarray(ramp, "F").save(path)
    got = np.asarray(read_image(path))[..., 0]
    np.testing.assert_allclose(got, np.rint(ramp * 255), atol=1)  # it decoded as black before


def test_32_bit_tiff_beyond_16_bits_and_float_outside_a_photo_range_are_refused(tmp_path):
    big = tmp_path / "int32.tif"
    Image.fromarray(np.full((8, 8), 2_000_000_000, np.int32), "I").save(big)
    with pytest.raises(DataError, match="32-bit integer pixels beyond the 16-bit range"):
        read_image(big)  # it decoded as white before
    odd = tmp_path / "float.tif"
    Image.fromarray(np.full((8, 8), -3.5, np.float32), "F").save(odd)
    with pytest.raises(DataError, match="floating-point pixels outside"):
        read_image(odd)


@pytest.mark.parametrize("fmt", ["ICO", "DDS"])
def test_formats_that_are_no_photo_are_refused_before_a_plugin_parses_them(tmp_path, fmt):
    path = tmp_path / f"x.{fmt.lower()}"
    Image.new("RGBA", (16, 16), (200, 100, 50, 255)).save(path, fmt)
    with pytest.raises(DataError, match=r"not a readable image \(unknown format or corrupted\); dldl reads JPEG"):
        read_image(path)


def test_the_folder_scan_finds_every_format_it_can_read(tmp_path):
    from dldl.predictor import expand_paths

    for suffix, fmt in [(".tif", "TIFF"), (".gif", "GIF"), (".avif", "AVIF"), (".jpg", "JPEG")]:
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), "white").save(buf, fmt)
        (tmp_path / f"x{suffix}").write_bytes(buf.getvalue())
    (tmp_path / "notes.txt").write_text("not an image")
    found = sorted(p.suffix for p in expand_paths([tmp_path]))
    assert found == [".avif", ".gif", ".jpg", ".tif"]
    assert {".tif", ".tiff", ".gif", ".avif"} <= set(IMAGE_SUFFIXES)
    assert all(_gray(p) > 250 for p in expand_paths([tmp_path]))
