"""Broken label and split files through ``dldl train``: each is one error line naming the file and
the problem (or a counted warning where skipping is right), raised before any training starts.

The readers' own messages are tested case by case in test_sources.py; here every case goes through
the command a user runs (in this process, via ``dldl.cli.run``) and the run folder is checked to hold
no checkpoint or log: nothing was trained.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import make_synthetic_dataset
from dldl.cli import run
from dldl.data.sources import DataWarning

FAST = ["--input-size", "32", "--epochs", "1", "--batch-size", "8", "--device", "cpu",
        "--set", "workers=1", "--set", "progress=false"]
NO_SPLITS = ["--set", "train_split=null", "--set", "test_split=null"]  # a CSV root is the whole (training) set


def dldl_train(monkeypatch, capsys, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """``dldl train ARGS`` (fast settings, a fresh run folder and cache): exit code, stdout, stderr."""
    argv = ["dldl", "train", *map(str, args), *FAST, "--out", str(tmp_path / "run"), "--set", f"cache_dir={tmp_path / 'cache'}"]
    monkeypatch.setattr(sys, "argv", argv)
    try:
        run()
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_stopped_before_training(result, tmp_path: Path, *fragments: str) -> None:
    code, out, err = result
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    run_dir = tmp_path / "run"
    assert not (run_dir / "last.pt").exists() and not (run_dir / "log.jsonl").exists()


# --------------------------------------------------------------------------- a CSV manifest


@pytest.fixture
def images(tmp_path) -> Path:
    """A folder of 48 small face-like images (face_000.png ...) with their manifest.csv."""
    return make_synthetic_dataset(tmp_path / "data").parent


MANIFEST_CASES = {
    "missing_column": ("path,age\nface_000.png,30\n", "missing column(s) label (header has: path, age)"),
    "empty_file": ("", "empty file (no header line)"),
    "header_only": ("path,label\n", "no samples for csv/labels"),
    "non_numeric_label": ("path,label\nface_000.png,30\nface_001.png,forty\n", "line 3: label 'forty' is not a number"),
    "nan_label": ("path,label\nface_000.png,nan\n", "line 2: label 'nan' is not a finite number"),
    "empty_label": ("path,label\nface_000.png,\n", "line 2: label is empty"),
    "label_outside_label_set": ("path,label\nface_000.png,30\nface_001.png,130\n",
                                "1 of 2 labels outside [0, 100] (first:"),
    "path_does_not_exist": ("path,label\nface_000.png,30\nnobody.png,40\n", "1 of 2 images not found"),
    "ragged_row": ("path,label\nface_000.png,30,extra\n", "line 2: 3 fields, header has 2"),
}


@pytest.mark.parametrize("text, problem", MANIFEST_CASES.values(), ids=MANIFEST_CASES.keys())
def test_broken_manifest_stops_before_training(text, problem, images, tmp_path, monkeypatch, capsys):
    labels = images / "labels.csv"
    labels.write_text(text)
    result = dldl_train(monkeypatch, capsys, tmp_path, "--dataset", "csv", "--root", labels, *NO_SPLITS)
    assert_stopped_before_training(result, tmp_path, f"{labels}: ", problem)


def test_csv_root_with_a_split(images, tmp_path, monkeypatch, capsys):
    manifest = images / "manifest.csv"
    # the csv entry of the dataset registry has no splits by default; naming one with a CSV root is an error
    result = dldl_train(monkeypatch, capsys, tmp_path, "--dataset", "csv", "--root", manifest, "--set", "train_split=coral_train")
    assert_stopped_before_training(result, tmp_path, f"{manifest}: split 'coral_train' names a CSV in a folder")


def test_label_file_that_is_not_utf8(images, tmp_path, monkeypatch, capsys):
    labels = images / "labels.csv"
    labels.write_bytes("path,label\ncafé.png,30\n".encode("latin-1"))
    result = dldl_train(monkeypatch, capsys, tmp_path, "--dataset", "csv", "--root", labels, *NO_SPLITS)
    assert_stopped_before_training(result, tmp_path, f"{labels}: not a UTF-8 text file")


def test_duplicate_rows_are_dropped_with_a_counted_warning(images, tmp_path, monkeypatch, capsys):
    manifest = images / "manifest.csv"
    rows = manifest.read_text().splitlines()
    manifest.write_text("\n".join([*rows[:17], rows[1], rows[2]]) + "\n")  # 16 images, the first two repeated
    with pytest.warns(DataWarning, match=r"2 duplicate row\(s\) dropped \(line 18 repeats line 2; line 19 repeats line 3\)") as w:
        code, out, err = dldl_train(monkeypatch, capsys, tmp_path, "--dataset", "csv", "--root", manifest, *NO_SPLITS)
    assert code == 0, err
    assert w[0].message.count == 2 and w[0].message.path == str(manifest)
    assert (tmp_path / "run" / "last.pt").exists()  # then it trained on the 16 distinct rows


# --------------------------------------------------------------------------- UTKFace-style splits


def _utkface(root: Path, splits: dict[str, list[str]], missing: tuple[str, ...] = ()) -> Path:
    """A UTKFace-style folder: ``images/`` (40 px crops, except the ``missing`` names) and ``splits/<name>.txt``."""
    (root / "images").mkdir(parents=True)
    (root / "splits").mkdir()
    for split, names in splits.items():
        (root / "splits" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for i, name in enumerate(names):
            if name not in missing:
                Image.new("RGB", (40, 40), (5 * i, 100, 150)).save(root / "images" / name, "JPEG")
    return root


TRAIN = [f"{20 + i}_{i % 2}_0_20170109{i:06d}.jpg.chip.jpg" for i in range(12)]
TEST = [f"{30 + i}_0_1_20170110{i:06d}.jpg.chip.jpg" for i in range(4)]


def test_split_naming_a_missing_image(tmp_path, monkeypatch, capsys):
    root = _utkface(tmp_path / "utk", {"train": TRAIN, "test": TEST}, missing=(TRAIN[5],))
    result = dldl_train(monkeypatch, capsys, tmp_path, "--root", root, "--set", "train_split=train", "--set", "test_split=test")
    assert_stopped_before_training(result, tmp_path, "train.txt: 1 of 12 images not found", f"line 6: {root}/images/{TRAIN[5]}")


def test_unknown_split(tmp_path, monkeypatch, capsys):
    root = _utkface(tmp_path / "utk", {"train": TRAIN, "test": TEST})
    result = dldl_train(monkeypatch, capsys, tmp_path, "--root", root, "--set", "train_split=coral_train")
    assert_stopped_before_training(result, tmp_path, "unknown split 'coral_train' (known: test, train)")


@pytest.mark.parametrize("test_split, missing, problem", [
    ([*TEST[:2], "abc_0_0_x.jpg.chip.jpg"], (), "test.txt: line 3: age (first field of 'abc_0_0_x.jpg.chip.jpg') 'abc' is not a number"),
    (TEST, (TEST[3],), "test.txt: 1 of 4 images not found"),
    ([*TEST, "101_0_0_20170110.jpg.chip.jpg"], (), "utkface/test: 1 of 5 labels outside [0, 100]"),
], ids=["non_numeric_age", "missing_image", "age_outside_label_set"])
def test_bad_test_split_is_found_before_training(test_split, missing, problem, tmp_path, monkeypatch, capsys):
    root = _utkface(tmp_path / "utk", {"train": TRAIN, "test": test_split}, missing)
    result = dldl_train(monkeypatch, capsys, tmp_path, "--root", root, "--set", "train_split=train", "--set", "test_split=test")
    assert_stopped_before_training(result, tmp_path, problem)


def test_unreadable_test_image_is_found_before_training(tmp_path, monkeypatch, capsys):
    """The test split is decoded (and cached) before the first epoch, not after the last."""
    root = _utkface(tmp_path / "utk", {"train": TRAIN, "test": TEST})
    (root / "images" / TEST[2]).write_bytes(b"\xff\xd8\xff\xe0 cut short")
    result = dldl_train(monkeypatch, capsys, tmp_path, "--root", root, "--set", "train_split=train", "--set", "test_split=test")
    assert_stopped_before_training(result, tmp_path, f"{root}/images/{TEST[2]}: ", "cannot decode image")
