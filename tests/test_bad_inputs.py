"""The bad-input matrix: broken and unusual image files through every door a user has.

Each case is a file generated here (zero bytes, truncated JPEG, random bytes, text, a 20000x20000
PNG, symbolic-link loops, alpha / 16-bit / CMYK / grayscale / 1x1 / EXIF-rotated images, no face,
30 faces, file names that are not UTF-8 or hold a space or rich markup, a FIFO, ``/dev/zero``). For each, ``dldl predict`` (photos and
``--crops``; ``--json``, ``--csv`` and the table), the Python API, the dataset loaders and the
server give one line naming the file and the problem, and the other files still get results.
docs/RELIABILITY.md lists what the user sees for each case.
"""

from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dldl
from conftest import dldl_cli as run_dldl
from dldl.data.cache import load_cached
from dldl.data.datasets import load_dataset
from dldl.data.images import load_face, read_image
from dldl.errors import DataError

ASSETS = Path(dldl.__file__).parent / "assets"
SAMPLES = sorted((ASSETS / "samples").glob("*.jpg"))  # 128 px aligned face crops
PHOTO = sorted((ASSETS / "photos").glob("*.jpg"))[0]  # 400 px photo, one face
BOMB = "image has 400,000,000 pixels, above the limit of 120,000,000 (decompression-bomb guard)"


def _face() -> Image.Image:
    return Image.open(SAMPLES[0]).convert("RGB")


def _save(img: Image.Image, name: str | bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / os.fsdecode(name)
        img.save(path)
        return path
    return make


def _write(name: str, data: bytes | Callable[[], bytes]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        (folder / name).write_bytes(data() if callable(data) else data)
        return folder / name
    return make


def _link(name: str, target: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        os.symlink(target, folder / name)
        return folder / name
    return make


def _truncated_jpeg() -> bytes:
    data = SAMPLES[1].read_bytes()
    return data[: len(data) // 3]


def _png_20000px() -> bytes:
    """A valid 1-bit 20000x20000 PNG (400 M pixels) of ~50 KB: decoding it would take 400 MB."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    side = 20000
    row, z = b"\x00" + bytes(side // 8), zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _sixteen_bit() -> Image.Image:
    img = Image.fromarray(np.asarray(_face().convert("L")).astype(np.uint16) * 257)
    assert img.mode == "I;16"
    return img


def _exif_rotated() -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the pixels are stored turned left
        Image.open(PHOTO).transpose(Image.Transpose.ROTATE_90).save(folder / "exif_rotated.jpg", quality=95, exif=exif)
        return folder / "exif_rotated.jpg"
    return make


def _thirty_faces() -> Image.Image:
    grid = Image.new("RGB", (600, 500))
    for i in range(30):
        grid.paste(Image.open(SAMPLES[i % len(SAMPLES)]).convert("RGB").resize((100, 100)), (i % 6 * 100, i // 6 * 100))
    return grid


@dataclass(frozen=True)
class Case:
    """A generated input: ``problem`` is the expected error (``None``: readable); ``faces`` what the
    detector finds in it; ``crop_problem`` the error with ``--crops`` only."""

    name: str
    make: Callable[[Path], Path]
    problem: str | None = None
    faces: int = 1
    crop_problem: str | None = None
    special: bool = False  # not a regular file: the tests never read its bytes (a FIFO blocks, /dev/zero never ends)


def _fifo(name: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        os.mkfifo(folder / name)
        return folder / name
    return make


CASES = [
    Case("zero_bytes", _write("zero.jpg", b""), "empty file (0 bytes)"),
    Case("truncated_jpeg", _write("truncated.jpg", _truncated_jpeg), "cannot decode image: image file is truncated"),
    Case("random_bytes_jpg", _write("random.jpg", lambda: np.random.default_rng(0).bytes(5000)),
         "not a readable image (unknown format or corrupted)"),
    Case("text_file", _write("notes.txt", b"not a photo\n"), "not a readable image (unknown format or corrupted)"),
    Case("png_20000x20000", _write("huge.png", _png_20000px), BOMB),
    Case("symlink_loop", _link("loop.jpg", "loop.jpg"), "symbolic link loop"),
    Case("broken_symlink", _link("gone.jpg", "nowhere.jpg"), "broken symbolic link (its target does not exist)"),
    Case("missing_file", lambda folder: folder / "missing.jpg", "file not found"),
    Case("png_alpha", _save(_face().convert("RGBA"), "alpha.png")),
    Case("png_16bit", _save(_sixteen_bit(), "sixteen_bit.png")),
    Case("cmyk_jpeg", _save(_face().convert("CMYK"), "cmyk.jpg")),
    Case("grayscale", _save(_face().convert("L"), "gray.jpg")),
    Case("one_pixel", _save(Image.new("RGB", (1, 1), (120, 80, 60)), "one_pixel.png"), faces=0,
         crop_problem="image is 1x1 pixels, too small for a face crop (at least 20x20)"),
    Case("photo", _save(Image.open(PHOTO), "photo.jpg")),
    Case("exif_rotated", _exif_rotated()),
    Case("no_face", _save(Image.new("RGB", (300, 200), (90, 140, 200)), "no_face.jpg"), faces=0),
    Case("thirty_faces", _save(_thirty_faces(), "thirty_faces.jpg"), faces=30),
    Case("non_utf8_name", _save(_face(), b"caf\xe9 \xff.jpg")),
    Case("space_in_name", _save(_face(), "24_0_1_20170116220224657 .jpg.chip.jpg")),
    Case("markup_in_name", _save(_face(), "party [edited] [red]x :x:.jpg")),  # shown as typed: no markup, no emoji
    Case("fifo", _fifo("pipe.jpg"), "not a regular file (a FIFO, device or socket)", special=True),
    Case("dev_zero", lambda folder: Path("/dev/zero"), "not a regular file (a FIFO, device or socket)", special=True),
]
BAD = [c for c in CASES if c.problem]
IDS = [c.name for c in CASES]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Every case written into one folder (plus a symbolic link from the folder to itself)."""
    folder = tmp_path_factory.mktemp("inputs")
    paths = {}
    for case in CASES:
        try:
            paths[case.name] = case.make(folder)
        except (OSError, UnicodeError) as e:  # e.g. macOS refuses names that are not UTF-8
            paths[case.name] = None
            print(f"cannot create {case.name} here: {e}")
    os.symlink(".", folder / "self")  # a folder loop: predict on the folder must not follow it forever
    return paths


def _path(inputs, case: Case) -> Path:
    if inputs[case.name] is None:
        pytest.skip(f"this file system cannot hold the {case.name} file")
    return inputs[case.name]


def dldl_cli(*args: str | Path) -> subprocess.CompletedProcess:
    """``dldl ARGS`` in a fresh process; non-UTF-8 file names go through as bytes, as a shell passes them.
    The table is 250 columns wide, so no file name is wrapped."""
    done = run_dldl(*args, env={"COLUMNS": "250"})
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def _rows(done: subprocess.CompletedProcess, inputs) -> dict[str, dict]:
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    by_path = {r["path"]: r for r in rows}
    files = [p for p in inputs.values() if p is not None]
    assert len(rows) == len(files)  # every file has a result, bad ones included
    return {name: by_path[str(p)] for name, p in inputs.items() if p is not None}


def _needs_detector_and_model() -> None:
    if "tiny_age_net-utkface" not in dldl.list_pretrained():
        pytest.skip("no shipped model in this checkout")


@pytest.fixture(scope="module")
def photo_run(inputs, tmp_path_factory):
    """``dldl predict FILES --json --csv`` once over every case (photos: detect, align, estimate)."""
    _needs_detector_and_model()
    out = tmp_path_factory.mktemp("photo_run") / "faces.csv"
    done = dldl_cli("predict", *(p for p in inputs.values() if p is not None), "--json", "--csv", out)
    assert done.returncode == 0, done.stderr
    return _rows(done, inputs), out


@pytest.fixture(scope="module")
def crops_run(inputs):
    """``dldl predict FILES --crops --json --strict`` once over every case."""
    if "tiny_age_net-utkface" not in dldl.list_pretrained():
        pytest.skip("no shipped model in this checkout")
    done = dldl_cli("predict", *(p for p in inputs.values() if p is not None), "--crops", "--json", "--strict")
    assert done.returncode == 1, done.stderr  # --strict: some inputs could not be read
    return _rows(done, inputs)


def _check_row(row: dict, path: Path, problem: str | None, faces: int) -> None:
    if problem:
        assert row["faces"] == [] and row["error"].startswith(f"{path}: "), row
        assert "\n" not in row["error"] and problem in row["error"], row["error"]
    else:
        assert row["error"] is None and len(row["faces"]) == faces, row


# --------------------------------------------------------------------------- dldl predict


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_predict_photos_json(case, photo_run, inputs):
    rows, _ = photo_run
    _check_row(rows[case.name], _path(inputs, case), case.problem, case.faces)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_predict_crops_json_strict(case, crops_run, inputs):
    problem = case.problem or case.crop_problem
    _check_row(crops_run[case.name], _path(inputs, case), problem, 1)


def test_exif_rotation_is_applied_before_detection(photo_run):
    rows, _ = photo_run
    upright, rotated = rows["photo"]["faces"], rows["exif_rotated"]["faces"]
    assert len(upright) == len(rotated) == 1
    np.testing.assert_allclose(rotated[0]["box"], upright[0]["box"], atol=4)


def test_predict_csv_has_a_row_per_face_or_error(photo_run, inputs):
    rows, path = photo_run
    with open(path, newline="", encoding="utf-8") as f:  # valid UTF-8 even for non-UTF-8 file names
        table = list(csv.DictReader(f))
    assert len(table) == sum(max(len(r["faces"]), 1) for r in rows.values())
    errors = {r["path"]: r["error"] for r in table if r["error"] and r["error"] != "no face found"}
    assert len(errors) == len(BAD) and all(e.startswith(p + ": ") for p, e in errors.items())
    if inputs["non_utf8_name"] is not None:
        assert any(r["path"].endswith("caf\\xe9 \\xff.jpg") for r in table)


def test_predict_table_on_folder(inputs):
    """The default (table) output over the folder: broken links are reported, the folder loop is not followed."""
    _needs_detector_and_model()
    folder = inputs["photo"].parent
    done = dldl_cli("predict", folder)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    for shown in ("loop.jpg", "symbolic link loop", "zero.jpg", "empty file (0 bytes)", "no_face.jpg", "no face found",
                  "party [edited] [red]x :x:.jpg"):
        assert shown in text, shown
    assert text.count("thirty_faces.jpg") == 30  # once per face: the folder loop was not entered
    assert "notes.txt" not in text  # not an image suffix
    if inputs["non_utf8_name"] is not None:
        assert "caf\\xe9 \\xff.jpg" in text


# --------------------------------------------------------------------------- Python API


@pytest.mark.parametrize("case", BAD, ids=[c.name for c in BAD])
def test_read_image_and_load_face_name_the_file(case, inputs):
    path = _path(inputs, case)
    for read in (read_image, lambda p: load_face(p, 64)):
        with pytest.raises(DataError, match=case.problem.replace("(", r"\(").replace(")", r"\)")) as e:
            read(path)
        assert str(e.value) == f"{path}: {e.value.problem}"


def test_pixel_guard_refuses_before_decoding(inputs, monkeypatch):
    from PIL import ImageFile

    def decode(self):
        raise AssertionError("the 20000x20000 image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decode)
    with pytest.raises(DataError, match="decompression-bomb guard"):
        read_image(inputs["png_20000x20000"])


@pytest.mark.parametrize("name", ["png_alpha", "png_16bit", "cmyk_jpeg", "grayscale", "non_utf8_name"])
def test_unusual_images_read_as_rgb(name, inputs):
    path = _path(inputs, next(c for c in CASES if c.name == name))
    img = read_image(path)
    assert img.mode == "RGB" and img.size == (128, 128)
    assert np.abs(np.asarray(img.convert("L"), np.int16) - np.asarray(_face().convert("L"), np.int16)).mean() < 8


def test_estimator_and_predictor(inputs):
    if "tiny_age_net-utkface" not in dldl.list_pretrained():
        pytest.skip("no shipped model in this checkout")
    from dldl.predictor import Predictor

    est = dldl.load("tiny_age_net-utkface")
    with pytest.raises(DataError, match="truncated.jpg: cannot decode image"):
        est.predict_files([inputs["grayscale"], inputs["truncated_jpeg"]])
    with pytest.raises(DataError, match="too small for a face crop"):
        Predictor(est).predict(np.zeros((1, 1, 3), np.uint8))
    assert len(Predictor(est).predict(np.asarray(read_image(inputs["png_16bit"])))) == 1


# --------------------------------------------------------------------------- dataset loaders


def _utkface(folder: Path, bad: Path | None = None, n: int = 6) -> Path:
    """A UTKFace-style folder (images/, splits/train.txt) of ``n`` crops, plus ``bad`` as one more image."""
    (folder / "images").mkdir(parents=True)
    (folder / "splits").mkdir()
    names = [f"{20 + i}_0_0_2017011{i:04d}.jpg.chip.jpg" for i in range(n)]
    for i, name in enumerate(names):
        Image.open(SAMPLES[i % len(SAMPLES)]).resize((40, 40)).save(folder / "images" / name)
    if bad is not None:
        names.insert(n // 2, f"33_1_0_2017 bad{bad.suffix}.chip.jpg")
        target = folder / "images" / names[n // 2]
        if bad.is_symlink():  # the same link: to itself (a loop) or to a file that does not exist
            link = os.readlink(bad)
            os.symlink(target.name if link == bad.name else link, target)
        elif bad.exists():
            target.write_bytes(bad.read_bytes())
    (folder / "splits" / "train.txt").write_text("\n".join(names) + "\n")
    return folder


@pytest.mark.parametrize("case", [c for c in BAD if not c.special], ids=[c.name for c in BAD if not c.special])
def test_dataset_loader_names_the_bad_image(case, inputs, tmp_path):
    root = _utkface(tmp_path / "utk", _path(inputs, case))
    with pytest.raises(DataError) as e:  # missing files: from the loader; unreadable ones: when decoding
        load_cached(load_dataset("utkface", root, "train"), 32, tmp_path / "cache", workers=1)
    assert "2017 bad" in str(e.value) and "\n" not in str(e.value)
    assert case.problem in str(e.value) or "images not found" in str(e.value)


def test_parallel_decoding_names_the_bad_image(inputs, tmp_path):
    """With worker processes (64+ images) the error still names the file (it must cross processes)."""
    root = _utkface(tmp_path / "utk", inputs["truncated_jpeg"], n=64)
    with pytest.raises(DataError, match=r"2017 bad\.jpg\.chip\.jpg: cannot decode image"):
        load_cached(load_dataset("utkface", root, "train"), 16, tmp_path / "cache", workers=2)


# --------------------------------------------------------------------------- server


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("fastapi", reason="fastapi (dldl serve) is not installed")
    _needs_detector_and_model()
    serve = pytest.importorskip("dldl.serve", reason="dldl.serve is not in this checkout")
    from fastapi.testclient import TestClient

    with TestClient(serve.create_app()) as c:
        yield c


UPLOADS = [c for c in CASES if "link" not in c.name and c.name != "missing_file" and not c.special]


@pytest.mark.parametrize("case", UPLOADS, ids=[c.name for c in UPLOADS])
def test_server_upload(case, client, inputs):
    path = _path(inputs, case)
    upload = path.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    r = client.post("/v1/predict", files={"file": (upload, path.read_bytes(), "application/octet-stream")})
    body = r.json()
    if case.problem:
        assert r.status_code == 422 and body["faces"] == [] and "\n" not in body["error"]
        assert body["error"] == f"{upload}: {body['error'].split(': ', 1)[1]}" and case.problem in body["error"], body
    else:
        assert r.status_code == 200 and body["error"] is None and len(body["faces"]) == case.faces, body


# --------------------------------------------------------------------------- model files


def test_model_whose_metadata_does_not_match_its_weights(tmp_path):
    """A checkpoint whose label set needs another head width than its network has is refused on load."""
    if "tiny_age_net-utkface" not in dldl.list_pretrained():
        pytest.skip("no shipped model in this checkout")
    from dldl.checkpoint import load_checkpoint, save_checkpoint
    from dldl.errors import CheckpointError

    ck = load_checkpoint(ASSETS / "models" / "tiny_age_net-utkface.pt")
    bad = save_checkpoint(tmp_path / "relabelled.pt", {**ck, "labels": {**ck["labels"], "stop": 50.0}})
    with pytest.raises(CheckpointError, match="relabelled.pt: does not hold a usable dldl model spec .objective 'dldl_v2' "
                                              "on 51 labels needs 51 outputs, the spec says 101.$"):
        dldl.load(bad)


@pytest.mark.parametrize("script, args", [
    ("calibrate.py", ["{missing}", "{tmp}/out.pt"]),
    ("ensemble.py", ["{missing}", "{missing}", "--out", "{tmp}/ensemble.pt"]),
])
def test_experiment_scripts_name_a_missing_model_in_one_line(script, args, tmp_path):
    """The research scripts fail as the dldl commands do: one error line, exit status 2, no traceback."""
    repo = Path(__file__).resolve().parents[1]
    missing = tmp_path / "no such.pt"
    argv = [a.format(missing=missing, tmp=tmp_path) for a in args]
    r = subprocess.run([sys.executable, str(repo / "experiments" / script), *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {missing}") and ("not found" in lines[0] or "No such file" in lines[0]), r.stderr


def test_run_script_turns_user_errors_into_one_line(capsys, tmp_path):
    from dldl.errors import DataError, run_script

    def bad_labels():
        raise DataError(tmp_path / "labels.csv", "line 3: age 'abc' is not a number")

    def missing_file():
        open(tmp_path / "gone.txt")

    for main, line in [(bad_labels, f"error: {tmp_path / 'labels.csv'}: line 3: age 'abc' is not a number"),
                       (missing_file, f"error: {tmp_path / 'gone.txt'}: No such file or directory")]:
        with pytest.raises(SystemExit) as e:
            run_script(main)
        assert e.value.code == 2 and capsys.readouterr().err.strip() == line
    with pytest.raises(SystemExit) as e:
        run_script(lambda: 3)
    assert e.value.code == 3
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_script(lambda: 1 / 0)
