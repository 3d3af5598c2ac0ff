"""Tests of the label-file readers in ``dldl.data.sources``.

Fixtures in ``tests/fixtures/label_files/`` are a few real lines of each dataset's files; .mat and
.xlsx inputs are written at test time. Tests on the full real files in ``../shared/data`` are
skipped when that folder is absent.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from dldl.data.datasets import DATASETS, load_dataset
from dldl.data.samples import Sample, SampleList
from dldl.data.sources import (
    DataWarning,
    check_labels_in,
    read_cfd,
    read_chalearn,
    read_manifest_csv,
    read_mebeauty,
    read_morph,
    read_morph_list,
    read_scut_fbp,
    read_scut_fbp5500,
    read_utkface,
)
from dldl.errors import DataError
from dldl.labels import LabelSet

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "label_files"
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
real = pytest.mark.skipif(not SHARED.exists(), reason="../shared/data not present")


def copy(name: str, tmp_path: Path) -> Path:
    """A writable copy of one fixture folder."""
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def touch(*paths: Path) -> None:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def error(fn, *args, **kw) -> str:
    with pytest.raises(DataError) as e:
        fn(*args, **kw)
    return str(e.value)


# --------------------------------------------------------------------------- generic CSV


def test_manifest_reads_paths_labels_sigma_meta(tmp_path):
    csv = tmp_path / "m.csv"
    shutil.copy(FIXTURES / "manifest.csv", csv)
    touch(*(tmp_path / "img" / n for n in ("a.jpg", "b.jpg", "c.jpg")))
    s = read_manifest_csv(csv)
    assert [x.label for x in s.samples] == [23.0, 41.5, 7.0]
    assert [x.sigma for x in s.samples] == [2.5, None, 1.0]
    assert s.samples[0].path == tmp_path / "img" / "a.jpg" and s.samples[0].meta == {"gender": "female"}
    assert s.samples[2].meta == {} and s.source == (str(csv),) and s.name == "csv/m"
    other = read_manifest_csv(csv, root=tmp_path / "else", require_images=False)
    assert other.samples[1].path == tmp_path / "else" / "img" / "b.jpg"


@pytest.mark.parametrize("text, problem", [
    ("", "empty file"),
    ("path,label\n", "no samples"),
    ("path,age\na.jpg,3\n", "missing column(s) label (header has: path, age)"),
    ("path,label\na.jpg,3\nb.jpg,abc\n", "line 3: label 'abc' is not a number"),
    ("path,label\na.jpg,nan\n", "line 2: label 'nan' is not a finite number"),
    ("path,label\na.jpg,\n", "line 2: label is empty"),
    ("path,label,sigma\na.jpg,3,-1\n", "line 2: sigma -1 is below 0"),
    ("path,label\na.jpg,3,4\n", "line 2: 3 fields, header has 2"),
    ("path,label\n,3\n", "line 2: image name is empty"),
])
def test_manifest_errors_name_file_and_problem(tmp_path, text, problem):
    f = write(tmp_path / "bad.csv", text)
    msg = error(read_manifest_csv, f, require_images=False)
    assert msg.startswith(str(f)) and problem in msg


def test_missing_label_file_and_missing_images(tmp_path):
    assert "nope.csv: file not found" in error(read_manifest_csv, tmp_path / "nope.csv")
    f = write(tmp_path / "m.csv", "path,label\n" + "".join(f"x{i}.jpg,{i}\n" for i in range(5)))
    touch(tmp_path / "x0.jpg")
    msg = error(read_manifest_csv, f)
    assert "4 of 5 images not found" in msg and "line 3: " in msg and "x1.jpg" in msg and "x5" not in msg


def test_duplicate_rows_dropped_with_counted_warning(tmp_path):
    f = write(tmp_path / "m.csv", "path,label\na.jpg,1\nb.jpg,2\na.jpg,1\na.jpg,1.0\n")
    with pytest.warns(DataWarning, match="2 duplicate row") as w:
        s = read_manifest_csv(f, require_images=False)
    assert [x.label for x in s.samples] == [1.0, 2.0]
    assert w[0].message.count == 2 and "line 4 repeats line 2; line 5 repeats line 2" in str(w[0].message)


def test_conflicting_duplicate_rows_are_refused_naming_both(tmp_path):
    """Reliability 3, item 6: a second row giving an image another label was dropped as a repeat."""
    f = write(tmp_path / "m.csv", "path,label\na.jpg,1\nb.jpg,2\na.jpg,9\n")
    with pytest.raises(DataError, match=r"m\.csv: line 4 and line 2 give a\.jpg different labels \(9 against 1\)"):
        read_manifest_csv(f, require_images=False)


def test_a_label_with_an_underscore_is_not_a_number(tmp_path):
    """Reliability 3, item 6: float() read "1_0" as 10."""
    f = write(tmp_path / "m.csv", "path,label\na.jpg,1_0\n")
    with pytest.raises(DataError, match=r"line 2: label '1_0' is not a number"):
        read_manifest_csv(f, require_images=False)


# --------------------------------------------------------------------------- UTKFace


def test_utkface_split_ages_and_meta(tmp_path):
    root = copy("utkface", tmp_path)
    names = (root / "splits" / "coral_train.txt").read_text().splitlines()
    touch(*(root / "images" / n for n in names))
    s = read_utkface(root, "coral_train")
    assert len(s) == 6 and s.name == "utkface/coral_train"
    assert [x.label for x in s.samples] == [36, 26, 52, 25, 39, 24]
    assert s.samples[0].meta == {"gender": "male", "race": "black"}
    assert s.samples[4].meta == {"gender": "female"}  # race missing in the file name
    assert s.samples[5].path.name == "24_0_1_20170116220224657 .jpg.chip.jpg"  # space kept
    assert len(read_utkface(root, root / "splits" / "coral_train.txt")) == 6
    (root / "labels.csv").unlink()
    assert read_utkface(root, "coral_train").samples[0].meta == {}


def test_utkface_errors(tmp_path):
    root = copy("utkface", tmp_path)
    assert "unknown split 'nope' (known: coral_train)" in error(read_utkface, root, "nope")
    msg = error(read_utkface, root, "coral_train")
    assert "coral_train.txt: 6 of 6 images not found" in msg and "line 1: " in msg
    write(root / "splits" / "bad.txt", "30_1_0_x.jpg\nabc_1_0_x.jpg\n")
    assert "bad.txt: line 2: age (first field of 'abc_1_0_x.jpg') 'abc' is not a number" in error(
        read_utkface, root, "bad", require_images=False)
    write(root / "splits" / "empty.txt", "\n\n")
    assert "empty.txt: empty file" in error(read_utkface, root, "empty")


# --------------------------------------------------------------------------- MEBeauty


def test_mebeauty_skips_faces_without_image_with_counted_warning(tmp_path):
    root = copy("mebeauty", tmp_path)
    crops = ["female/asian/13.jpg", "female/asian/42.jpg", "female/asian/20.jpg", "female/asian/21.jpg"]
    touch(*(root / "cropped_images/images_crop_align_mtcnn" / c for c in crops))  # 23.jpg listed, absent
    with pytest.warns(DataWarning, match=r"split 'train': 3 of 6 faces skipped, no crop image") as w:
        s = read_mebeauty(root, "train")
    assert w[0].message.count == 3 and "labels.csv" in w[0].message.path
    assert [x.path.name for x in s.samples] == ["13.jpg", "42.jpg", "20.jpg"]
    assert s.histogram_bins == tuple(float(k) for k in range(1, 11))
    assert s.samples[0].histogram == (0, 0, 1, 5, 5, 12, 5, 4, 2, 0)
    assert s.samples[0].label == pytest.approx(6.031972789115646)
    assert s.samples[0].meta == {"gender": "female", "ethnicity": "asian"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        val = read_mebeauty(root, "val", require_images=False)
    assert len(val) == 2 and val.samples[0].histogram is None  # a face with no ratings


def test_mebeauty_original_images_and_errors(tmp_path):
    root = copy("mebeauty", tmp_path)
    origs = ["female/asian/13.jpg", "female/asian/42.jpg", "male/caucasian/vicky-hladynets-NnmUHZ6tpSs-unsplash.jpg"]
    touch(*(root / "original_images" / o for o in origs))
    with pytest.warns(DataWarning, match="no original image"):
        s = read_mebeauty(root, "train", image="original")
    assert [x.path for x in s.samples] == [root / "original_images" / o for o in origs]
    assert [x.meta["gender"] for x in s.samples] == ["female", "female", "male"]  # the sex of the original photos too
    assert "unknown split 'dev' (split_2022 has: test, train, val)" in error(read_mebeauty, root, "dev")
    assert "image must be one of crop, original" in error(read_mebeauty, root, "train", image="raw")


# --------------------------------------------------------------------------- ChaLearn


def test_chalearn15_splits_and_sigma(tmp_path):
    f = FIXTURES / "chalearn15_lap" / "chalearn15_train_val_labels.csv"
    train = read_chalearn(f.parent, "train", require_images=False)
    val = read_chalearn(f, "val", require_images=False)
    assert (len(train), len(val)) == (6, 4)
    assert train.samples[0] == Sample(f.parent / "Train/image_4797.jpg", 21.0, 4.026539)
    assert val.samples[0].path == f.parent / "Validation/image_1931.jpg"
    assert "unknown split 'test' (column 'set' has: train, val)" in error(read_chalearn, f, "test")
    bad = write(tmp_path / "c.csv", "name,set,apparent_age_mean,apparent_age_std\nx.jpg,train,20,abc\n")
    assert "c.csv: line 2: age std 'abc' is not a number" in error(read_chalearn, bad, "train")


def test_chalearn16_format(tmp_path):
    write(tmp_path / "valid_gt.csv", "image,mean,stdv\n000001.jpg,30.5,4.1\n000002.jpg,12,2\n")
    touch(tmp_path / "valid" / "000001.jpg", tmp_path / "valid" / "000002.jpg")
    s = read_chalearn(tmp_path, "val")
    assert [(x.path.name, x.label, x.sigma) for x in s.samples] == [("000001.jpg", 30.5, 4.1), ("000002.jpg", 12, 2)]
    assert "missing column(s) name/image" in error(read_chalearn, write(tmp_path / "x.csv", "file,mean,stdv\n"), "val")


# --------------------------------------------------------------------------- MORPH


def _fold(names: list[str], sets: list[int]) -> dict:
    ages = [int(n.rsplit("M", 1)[-1].rsplit("F", 1)[-1].split(".")[0]) for n in names]
    return {"images": {"id": np.arange(1, len(names) + 1, dtype=np.uint16), "set": np.array(sets, np.uint8),
                       "name": np.array(names, dtype=object), "label": np.array([ages, [2] * len(ages)], np.uint8)},
            "meta": {"sets": np.array(["train", "val", "test"], dtype=object), "classes": np.zeros(0, np.uint8)},
            "imageDir": "/mnt/data/Morph"}


@pytest.fixture
def morph_mat(tmp_path) -> Path:
    """A tiny Morph_imdbs.mat with the real layout: IMDB(1..2).images.{id,set,name,label}."""
    import scipy.io

    names = ["009055_0M54.JPG", "009055_1M54.JPG", "019066_08M70.JPG", "100200_1F33.JPG"]
    imdb = np.empty((1, 2), dtype=object)
    imdb[0, 0], imdb[0, 1] = _fold(names, [1, 1, 2, 1]), _fold(names, [2, 1, 1, 1])
    path = tmp_path / "Morph_imdbs.mat"
    scipy.io.savemat(path, {"IMDB": imdb})
    return path


def test_morph_mat_folds_and_sets(morph_mat):
    touch(*(morph_mat.parent / n for n in ("009055_0M54.JPG", "009055_1M54.JPG", "100200_1F33.JPG")))
    train = read_morph(morph_mat)
    assert [x.label for x in train.samples] == [54, 54, 33] and train.name == "morph/fold0/train"
    assert [x.meta["gender"] for x in train.samples] == ["male", "male", "female"]
    assert train.samples[0].sigma is None
    test = read_morph(morph_mat, fold=1, split="test", require_images=False, use_file_sigma=True)
    assert test.samples == [Sample(morph_mat.parent / "009055_0M54.JPG", 54.0, 2.0)]
    assert len(read_morph(morph_mat, 0, "val", require_images=False)) == 1
    assert read_morph(morph_mat, image_root="/imgs", require_images=False).samples[0].path == Path("/imgs/009055_0M54.JPG")


def test_morph_errors(morph_mat, tmp_path):
    assert "fold 2 out of range (the file has folds 0..1)" in error(read_morph, morph_mat, fold=2)
    assert "unknown split 'dev'" in error(read_morph, morph_mat, split="dev")
    assert "1 of 1 images not found" in error(read_morph, morph_mat, split="test")
    import scipy.io
    scipy.io.savemat(tmp_path / "other.mat", {"x": np.zeros(3)})
    assert "other.mat: no variable 'IMDB'" in error(read_morph, tmp_path / "other.mat")
    assert "junk.mat: cannot read as a MATLAB .mat file" in error(read_morph, write(tmp_path / "junk.mat", "hello"))


def test_morph_list(tmp_path):
    f = FIXTURES / "morph2_splits" / "morph_list.txt"
    s = read_morph_list(f, root="/morph", require_images=False)
    assert len(s) == 6 and s.samples[2] == Sample(Path("/morph/019066_08M70.JPG"), 70.0)
    bad = write(tmp_path / "l.txt", "a.JPG 30\nb.JPG\n")
    assert "l.txt: line 2: expected '<image> <value>', got 'b.JPG'" in error(read_morph_list, bad)


# --------------------------------------------------------------------------- SCUT-FBP5500 / SCUT-FBP / CFD


def test_scut_fbp5500_resolves_either_naming_scheme(tmp_path):
    root = copy("scut-fbp5500", tmp_path)
    touch(root / "Images" / "ftw437.jpg", *(root / "Images" / f"{p}.jpg" for p in ("AM1384", "AM1234", "AM1774")))
    s = read_scut_fbp5500(root, "cv1_test")
    assert [x.path.name for x in s.samples] == ["ftw437.jpg", "AM1384.jpg", "AM1234.jpg", "AM1774.jpg"]
    assert s.samples[0].label == 2.883333 and s.samples[0].meta == {"gender": "female", "ethnicity": "caucasian"}
    sizes = {k: len(read_scut_fbp5500(root, k, require_images=False)) for k in ("all", "train", "test")}
    assert sizes == {"all": 10, "train": 6, "test": 4}
    assert read_scut_fbp5500(root, require_images=False).samples[1].path == root / "Images" / "AM1384.jpg"
    assert "10 images not found" in error(read_scut_fbp5500, root, "all")
    assert "unknown split 'cv9_test' (known: all, cv1_test" in error(read_scut_fbp5500, root, "cv9_test")


def test_scut_fbp5500_release_layout_and_its_copy(tmp_path):
    """The layout of the copy in EXTERNAL.md (data/landing/Images, data/curated/train_test_files,
    All_labels.txt, a 60/40 folder name with spaces): every split reads, and the portraits are
    aligned like photos when decoded."""
    root = copy("scut5500_release", tmp_path)
    images = root / "data" / "landing" / "Images"
    touch(*(images / n for n in ("CF437.jpg", "AM1384.jpg", "AM1234.jpg", "CM423.jpg", "AF12.jpg")))
    sizes = {k: len(read_scut_fbp5500(root, k)) for k in ("all", "train", "test", "cv1_train", "cv1_test")}
    assert sizes == {"all": 5, "train": 3, "test": 2, "cv1_train": 4, "cv1_test": 1}
    s = read_scut_fbp5500(root, "test")
    assert s.align and [x.path for x in s.samples] == [images / "AM1234.jpg", images / "CM423.jpg"]
    assert s.samples[1].meta == {"gender": "male", "ethnicity": "caucasian"} and s.samples[1].label == 2.8
    assert load_dataset("scut-fbp5500", root, "train").name == "scut-fbp5500/train"


def _xlsx(path: Path, rows: list[tuple]) -> Path:
    import openpyxl

    wb = openpyxl.Workbook()
    for row in rows:
        wb.active.append(row)
    wb.save(path)
    return path


def test_scut_fbp_labels_and_rater_histograms(tmp_path):
    _xlsx(tmp_path / "Attractiveness label.xlsx", [("#Image", "Attractiveness label", "Standard Deviation"),
                                                   (1, 2.5, 0.5), (2, 4.0, 0.0)])
    s = read_scut_fbp(tmp_path, require_images=False)
    assert s.samples[0] == Sample(tmp_path / "Data_Collection" / "SCUT-FBP-1.jpg", 2.5, 0.5)
    assert s.histogram_bins is None
    _xlsx(tmp_path / "Ratings of all raters.xlsx", [("#Rater", "#image", "Rating"), (1, 1, 2), (2, 1, 3), (1, 2, 4)])
    s = read_scut_fbp(tmp_path, require_images=False)
    assert s.histogram_bins == (1, 2, 3, 4, 5) and len(s.source) == 2
    assert [x.histogram for x in s.samples] == [(0, 1, 1, 0, 0), (0, 0, 0, 1, 0)]
    _xlsx(tmp_path / "Ratings of all raters.xlsx", [("#Rater", "#image", "Rating"), (1, 1, 7)])
    assert "Ratings of all raters.xlsx: row 2: Rating 7 is not one of 1..5" in error(read_scut_fbp, tmp_path)
    _xlsx(tmp_path / "Attractiveness label.xlsx", [("#Image", "Score")])
    assert "no header row with column(s) #Image, Attractiveness label" in error(read_scut_fbp, tmp_path)


def test_cfd_reader(tmp_path):
    f = _xlsx(tmp_path / "norms.xlsx", [("CFD norming data",), (), ("Target", "Race", "Gender", "Attractive"),
                                         ("AF-200", "A", "F", 3.12), ("WM-001", "W", "M", 2.5), (None, "note")])
    touch(tmp_path / "AF-200" / "CFD-AF-200-228-N.jpg", tmp_path / "WM-001" / "CFD-WM-001-014-N.jpg")
    s = read_cfd(f)
    assert [(x.path.name, x.label, x.meta) for x in s.samples] == [
        ("CFD-AF-200-228-N.jpg", 3.12, {"race": "A", "gender": "F"}), ("CFD-WM-001-014-N.jpg", 2.5, {"race": "W", "gender": "M"})]
    _xlsx(f, [("Target", "Attractive"), ("AF-200", "n/a")])
    assert "norms.xlsx: row 2: Attractive 'n/a' is not a number" in error(read_cfd, f)
    assert "cannot read as .xlsx" in error(read_cfd, write(tmp_path / "x.xlsx", "not a zip"))


# --------------------------------------------------------------------------- checks and dispatch


def test_check_labels_in():
    s = SampleList("toy", [Sample(Path("a.jpg"), 3.0), Sample(Path("b.jpg"), 5.2)], source=("t.csv",))
    check_labels_in(s, LabelSet(1, 5.2, 0.1))
    msg = error(check_labels_in, s, LabelSet(1, 5, 0.1))
    assert msg.startswith("t.csv: toy: 1 of 2 labels outside [1, 5]") and "b.jpg, label 5.2" in msg


def test_load_dataset_dispatch(tmp_path, morph_mat):
    assert set(DATASETS) == {"csv", "utkface", "mebeauty", "chalearn15", "chalearn16", "morph",
                             "scut-fbp5500", "scut-fbp", "cfd", "aaf", "fairface", "fgnet", "adience", "imdbwiki3"}
    no = {"require_images": False}
    assert len(load_dataset("csv", FIXTURES, "manifest.csv", **no)) == 3
    assert len(load_dataset("csv", FIXTURES / "manifest.csv", **no)) == 3
    assert len(load_dataset("utkface", FIXTURES / "utkface", "coral_train", **no)) == 6
    assert len(load_dataset("MEBeauty", FIXTURES / "mebeauty", "test", **no)) == 2
    assert len(load_dataset("chalearn15", FIXTURES / "chalearn15_lap", "val", **no)) == 4
    assert len(load_dataset("morph", morph_mat.parent, "test", fold=1, **no)) == 1
    assert len(load_dataset("morph", FIXTURES / "morph2_splits" / "morph_list.txt", **no)) == 6
    assert len(load_dataset("scut-fbp5500", FIXTURES / "scut-fbp5500", "train", **no)) == 6
    _xlsx(tmp_path / "Attractiveness label.xlsx", [("#Image", "Attractiveness label", "Standard Deviation"), (1, 2, 1)])
    assert len(load_dataset("scut-fbp", tmp_path, **no)) == 1
    assert "has no splits" in error(load_dataset, "scut-fbp", tmp_path, "train")
    assert "dataset 'utkface' needs a split" in error(load_dataset, "utkface", tmp_path)
    assert "unknown dataset 'imdb' (known: csv, utkface," in error(load_dataset, "imdb", tmp_path, "x")


# --------------------------------------------------------------------------- the real files


@real
def test_real_utkface_coral_counts_and_images():
    train = read_utkface(SHARED / "utkface", "coral_train")  # checks all 13,146 images exist
    test = read_utkface(SHARED / "utkface", "coral_test")
    assert (len(train), len(test)) == (13146, 3287)
    assert min(x.label for x in train.samples) == 21 and max(x.label for x in train.samples) == 60
    check_labels_in(train, LabelSet(0, 100))
    full = read_utkface(SHARED / "utkface", "full_val")
    assert "labels outside [0, 100]" in error(check_labels_in, full, LabelSet(0, 100))  # ages to 116


@real
def test_real_mebeauty_split_counts():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        sizes = [len(read_mebeauty(SHARED / "mebeauty", sp)) for sp in ("train", "val", "test")]
    assert sizes == [1655, 211, 506]
    assert [x.message.count for x in w] == [130, 18, 30]  # the 178 faces without an MTCNN crop


@real
def test_real_label_files_counts():
    lf = SHARED / "label_files"
    no = {"require_images": False}
    assert len(read_chalearn(lf / "chalearn15_lap", "train", **no)) == 2476
    assert len(read_chalearn(lf / "chalearn15_lap", "val", **no)) == 1136
    assert len(read_scut_fbp5500(lf / "scut-fbp5500", **no)) == 5500
    assert [len(read_scut_fbp5500(lf / "scut-fbp5500", k, **no)) for k in ("train", "test", "cv3_train", "cv3_test")
            ] == [3300, 2200, 4400, 1100]
    fbp = read_scut_fbp(lf / "scut-fbp", **no)
    assert len(fbp) == 500 and all(sum(x.histogram) >= 62 for x in fbp.samples)
    h = np.array([x.histogram for x in fbp.samples])
    np.testing.assert_allclose(h @ np.arange(1, 6) / h.sum(1), [x.label for x in fbp.samples], atol=1e-9)


@real
def test_real_morph_fold0():
    mat = SHARED / "label_files" / "morph2_splits" / "Morph_imdbs.mat"
    train, test = (read_morph(mat, 0, sp, require_images=False) for sp in ("train", "test"))
    assert (len(train), len(test)) == (49619, 5515)
    assert train.samples[0] == Sample(mat.parent / "009055_0M54.JPG", 54.0)
    check_labels_in(train, LabelSet(16, 77))


def test_csv_field_over_the_csv_limit_is_one_line(tmp_path):
    """csv refuses fields over 128 KiB (csv.Error): one DataError naming the file and the line."""
    from dldl.data.sources import read_manifest_csv
    from dldl.errors import DataError

    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,label\na.png,3\n" + "b" * 200_000 + ".png,4\n")
    with pytest.raises(DataError, match=f"^{manifest}: line 3: not valid CSV \\(field larger than field limit"):
        read_manifest_csv(manifest)
