"""Readers of the age-in-the-wild sets (All-Age-Faces, FairFace, FG-NET, Adience, IMDB-WIKI) on fixtures that copy each
set's own layout; interval targets, interval metrics and mixed-source sampling."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dldl.data.datasets import get_dataset, load_dataset
from dldl.data.samples import Sample, SampleList
from dldl.data.sources import FAIRFACE_GROUPS, fgnet_people, read_aaf, read_age_groups, read_fairface, read_fgnet
from dldl.errors import DataError
from dldl.evaluate import prediction_report
from dldl.labels import LabelSet, interval_distribution
from dldl.losses import get_objective
from dldl.runtime import Prediction

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "label_files"
NO = {"require_images": False}
EXTERNAL = Path(__file__).resolve().parents[2] / "data_external"


def error(fn, *args, **kw) -> str:
    with pytest.raises(DataError) as e:
        fn(*args, **kw)
    return str(e.value)


def test_aaf_official_split_ages_and_gender():
    s = read_aaf(FIXTURES / "aaf", "train", **NO)  # the folder holding "All-Age-Faces Dataset"
    assert [x.label for x in s.samples] == [2.0, 45.0, 80.0]
    assert [x.meta["gender"] for x in s.samples] == ["female", "female", "male"]  # ids <= 7380 are female
    assert s.samples[0].path.parts[-2] == "aglined faces" and s.align
    assert len(read_aaf(FIXTURES / "aaf" / "All-Age-Faces Dataset", "val", **NO)) == 2
    orig = read_aaf(FIXTURES / "aaf", "val", image="original", **NO)
    assert orig.samples[0].path.parts[-2] == "original images"
    assert "unknown split 'test'" in error(read_aaf, FIXTURES / "aaf", "test", **NO)
    assert "image must be one of aligned, original" in error(read_aaf, FIXTURES / "aaf", "val", image="crop", **NO)


def test_aaf_bad_name_names_the_line(tmp_path):
    sets = tmp_path / "image sets"
    sets.mkdir()
    (sets / "train.txt").write_text("00001A02.jpg 0\nface.jpg 1\n")
    assert error(read_aaf, tmp_path, "train", **NO).endswith("line 2: 'face.jpg' is not an All-Age-Faces name like 00123A25.jpg")


def test_fairface_groups_become_intervals_and_mangled_names_are_read():
    s = read_fairface(FIXTURES / "fairface", "train", **NO)
    assert [x.interval for x in s.samples] == [(50, 59), (3, 9), (10, 19), (70, 90), (0, 2)]
    assert [x.label for x in s.samples] == [54.5, 6.0, 14.5, 80.0, 1.0]
    assert s.samples[1].meta == {"gender": "female", "race": "indian"}
    assert s.samples[0].path == FIXTURES / "fairface" / "train" / "1.jpg"  # no fair_face/ folder: files beside the CSV
    assert read_fairface(FIXTURES / "fairface", "val", **NO).samples[1].interval == (3, 9)
    assert "unknown split 'test' (label files found: train, val)" in error(read_fairface, FIXTURES / "fairface", "test", **NO)
    assert FAIRFACE_GROUPS["03-Sep"] == FAIRFACE_GROUPS["3-9"]


def test_fairface_unknown_group_names_file_and_line(tmp_path):
    (tmp_path / "fairface_label_val.csv").write_text("file,age\nval/1.jpg,20-29\nval/2.jpg,teen\n")
    msg = error(read_fairface, tmp_path, "val", **NO)
    assert msg.startswith(str(tmp_path / "fairface_label_val.csv")) and "line 3: age group 'teen'" in msg


def _fgnet(tmp_path: Path) -> Path:
    images = tmp_path / "FGNET" / "images"
    images.mkdir(parents=True)
    for name in ("001A02.JPG", "001A10.JPG", "002A05a.JPG", "002A43.JPG", "003A00.JPG", "notes.txt"):
        (images / name).write_bytes(b"x")
    return tmp_path


def test_fgnet_all_and_leave_one_person_out(tmp_path):
    root = _fgnet(tmp_path)
    every = read_fgnet(root, "all")
    assert [x.label for x in every.samples] == [2.0, 10.0, 5.0, 43.0, 0.0] and every.align
    assert fgnet_people(root) == ["001", "002", "003"]
    test, train = read_fgnet(root, "lopo002_test"), read_fgnet(root, "lopo002_train")
    assert {x.meta["person"] for x in test.samples} == {"002"} and len(train) == 3
    assert "unknown split 'lopo2'" in error(read_fgnet, root, "lopo2")
    assert "no images/ folder" in error(read_fgnet, tmp_path / "FGNET" / "images")


def test_registry_supplies_defaults():
    assert get_dataset("fairface").target == "interval"
    assert get_dataset("mebeauty").defaults()["labels"] == "1:10:0.1"
    assert get_dataset("fgnet").test_split == "all"
    assert len(load_dataset("aaf", FIXTURES / "aaf", "train", **NO)) == 3


# --------------------------------------------------------------------------- interval targets, loss, metrics


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 90), st.integers(0, 20), st.floats(0.0, 5.0))
def test_interval_distribution_properties(low, width, sigma):
    labels = LabelSet(0, 100, 1)
    width = min(width, 100 - low)  # intervals inside the label set (past its end the mass piles up at the end)
    lo, hi = torch.tensor([float(low)]), torch.tensor([float(low + width)])
    p = interval_distribution(lo, hi, sigma, labels)[0]
    assert torch.isclose(p.sum(), torch.tensor(1.0), atol=1e-5) and bool((p >= 0).all())
    mean = float((p * torch.as_tensor(labels.values()).float()).sum())
    centre = low + width / 2
    assert abs(mean - centre) < 0.05 + (2.5 * sigma if low < 3 * sigma or low + width > 100 - 3 * sigma else 0.05)
    inside = p[low:low + width + 1].sum()
    assert inside > (0.99 if sigma < 0.15 else 0.5 * (width + 1) / (width + 1 + 6 * sigma))


def test_interval_distribution_of_a_point_is_the_gaussian():
    from dldl.labels import gaussian_distribution

    labels = LabelSet(0, 60, 1)
    y = torch.tensor([30.0])
    a, b = interval_distribution(y, y, 3.0, labels), gaussian_distribution(y, 3.0, labels)
    assert torch.allclose(a, b, atol=2e-3)


def test_interval_loss_is_zero_inside_and_l1_outside():
    labels = LabelSet(0, 10, 1)
    objective = get_objective("dldl_v2")
    logits = torch.full((1, 11), -30.0)
    logits[0, 5] = 30.0  # E[p] = 5
    target = interval_distribution(torch.tensor([3.0]), torch.tensor([7.0]), 1.0, labels)
    inside = objective.loss(logits, target, torch.tensor([5.0]), labels, bounds=(torch.tensor([3.0]), torch.tensor([7.0])))
    kl_only = get_objective("dldl").loss(logits, target, torch.tensor([5.0]), labels)
    assert torch.isclose(inside, kl_only)
    outside = objective.loss(logits, target, torch.tensor([8.5]), labels, bounds=(torch.tensor([8.0]), torch.tensor([9.0])),
                             lam=1.0)
    assert torch.isclose(outside - kl_only, torch.tensor(3.0), atol=1e-4)


def test_report_gives_in_interval_rate_and_coverage():
    labels = LabelSet(0, 10, 1)
    samples = SampleList("t", [Sample(Path("a"), 5.0, interval=(3.0, 7.0)), Sample(Path("b"), 1.0, interval=(0.0, 2.0)),
                               Sample(Path("c"), 9.0)])
    dist = np.zeros((3, 11))
    dist[0, 4:7] = 1 / 3
    dist[1, 8:11] = 1 / 3
    dist[2, 8:11] = 1 / 3
    pred = Prediction(np.array([5.0, 9.0, 9.0]), dist, labels)
    r = prediction_report(pred, samples)
    assert r["in_interval"] == 0.5  # 5 in 3-7; 9 not in 0-2
    assert r["coverage_90"] == pytest.approx(2 / 3) and r["width_90"] == 2.0
    assert r["mae"] == pytest.approx((0 + 8 + 0) / 3)  # to the group centre


def test_epoch_order_follows_the_weights():
    from dldl.training import epoch_order

    order = epoch_order([10, 1000], [3.0, 1.0], 400, torch.Generator().manual_seed(0))
    assert len(order) == 400 and int((order < 10).sum()) == 300  # the small source is cycled through
    assert set((order[order < 10]).tolist()) == set(range(10))
    again = epoch_order([10, 1000], [3.0, 1.0], 400, torch.Generator().manual_seed(0))
    assert torch.equal(order, again)



def scut_release_source(tmp_path: Path) -> dict:
    """A ``sources`` entry over a copy of the SCUT-FBP5500 release fixture, with empty image files."""
    import shutil

    root = Path(shutil.copytree(FIXTURES / "scut5500_release", tmp_path / "scut"))
    images = root / "data" / "landing" / "Images"
    images.mkdir(parents=True)
    for n in ("CF437.jpg", "AM1384.jpg", "AM1234.jpg", "CM423.jpg", "AF12.jpg"):
        (images / n).write_bytes(b"")
    return {"dataset": "scut-fbp5500", "root": str(root), "train_split": "train", "test_split": "test"}


def test_a_source_on_another_scale_is_mapped_onto_the_common_one(tmp_path):
    """Mixed training over sets scored on different scales: ``scale: [a, b]`` maps a source's labels
    (train, val and test) to ``a * label + b``, and its own ``sigma`` builds its targets."""
    from dldl.training import TrainConfig, build_targets, load_sources

    plain = scut_release_source(tmp_path)
    cfg = TrainConfig.from_sources(overrides={"task": "beauty", "labels": "1:10:0.1", "sigma": "1.0", "sources": [
        plain, {**plain, "scale": [2.25, -1.25], "sigma": 0.675}]})
    raw, mapped = load_sources(cfg)
    assert mapped.sigma == 0.675 and raw.sigma is None
    for a, b in ((raw.train, mapped.train), (raw.val, mapped.val), (raw.test, mapped.test)):
        assert [2.25 * x.label - 1.25 for x in a.samples] == pytest.approx([x.label for x in b.samples])
    labels = LabelSet(1, 10, 0.1)
    _, t = build_targets(mapped.train, mapped.target, mapped.sigma, labels)
    t, v = t.double().numpy(), labels.values()
    spread = np.sqrt((t * (v - (t * v).sum(1, keepdims=True)) ** 2).sum(1))
    assert spread == pytest.approx(0.675, abs=0.01)  # the source's own sigma, on the common scale
    with pytest.raises(Exception, match=r"sources\[1\]\.scale"):
        TrainConfig.from_sources(overrides={"sources": [plain, {**plain, "scale": [0, 1]}]})



def test_a_label_range_keeps_only_the_samples_inside_it_in_every_split(tmp_path):
    """``label_range: [low, high]`` keeps a source's samples whose truth lies inside, in train, val
    and test (a range drawn more often when the set is listed again with it); an empty range stops
    the run with one line."""
    from dldl.training import TrainConfig, load_sources

    plain = scut_release_source(tmp_path)
    every = sorted(x.label for x in load_sources(TrainConfig.from_sources(overrides={"sources": [plain, plain]}))[0].train.samples)
    lo, hi = every[0], every[len(every) // 2]
    cfg = TrainConfig.from_sources(overrides={"sources": [plain, {**plain, "label_range": [lo, hi]}]})
    whole, part = load_sources(cfg)
    for a, b in ((whole.train, part.train), (whole.val, part.val), (whole.test, part.test)):
        assert [x for x in a.samples if lo <= x.label <= hi] == b.samples
    assert len(part.train) < len(whole.train)
    with pytest.raises(DataError, match=r"no training sample inside label_range \[9, 10\]"):
        load_sources(TrainConfig.from_sources(overrides={"sources": [plain, {**plain, "label_range": [9, 10]}]}))
    with pytest.raises(Exception, match=r"sources\[1\]\.label_range"):
        TrainConfig.from_sources(overrides={"sources": [plain, {**plain, "label_range": [3, 1]}]})


# --------------------------------------------------------------------------- photo sets aligned when decoded


def test_photo_sets_are_aligned_to_the_model_template(tmp_path):
    pytest.importorskip("yuface", reason="the yuface face detector is not installed")
    from dldl.data.cache import load_cached

    photo = Path(__file__).resolve().parents[2] / "src" / "dldl" / "assets" / "samples"
    pics = sorted(p for p in photo.glob("*.jpg"))[:2]
    if not pics:
        pytest.skip("no bundled sample photos")
    blank = tmp_path / "blank.jpg"
    Image.new("RGB", (120, 120), (128, 128, 128)).save(blank)
    samples = SampleList("photos", [Sample(p, 30.0) for p in [*pics, blank]], align=True)
    with pytest.warns(UserWarning, match="no face found in 1 of 3 images"):
        aligned = load_cached(samples, 108, tmp_path / "cache", workers=1, template="utkface")
    whole = load_cached(dataclasses.replace(samples, align=False), 108, tmp_path / "cache", workers=1)
    assert aligned.shape == whole.shape == (3, 108, 108, 3)
    assert not np.array_equal(aligned[0], whole[0]) and np.array_equal(aligned[2], whole[2])


@pytest.mark.skipif(not (EXTERNAL / "fairface").is_dir(), reason="FairFace not laid out in data_external/ (docs/DATA.md)")
def test_real_fairface_reads():
    s = load_dataset("fairface", EXTERNAL / "fairface", "val")
    assert len(s) == 5000 and all(x.interval for x in s.samples)


def test_a_root_that_is_not_the_sets_folder_says_so(tmp_path):
    assert "folder not found" in error(read_aaf, tmp_path / "elsewhere", "train", **NO)
    (tmp_path / "image sets").mkdir()
    assert "the file of split 'train' is missing" in error(read_aaf, tmp_path, "train", **NO)


def test_age_group_sets_read_intervals_and_persons():
    s = load_dataset("adience", FIXTURES / "adience", **NO)
    assert [x.interval for x in s.samples] == [(25, 32), (25, 32), (0, 2), None]  # one exact age: no interval
    assert [x.label for x in s.samples] == [28.5, 28.5, 1.0, 35.0]
    assert [x.meta["person"] for x in s.samples] == ["u1/1", "u1/1", "u1/2", "u1/3"] and s.samples[0].meta["gender"] == "f"
    assert s.align and s.samples[2].path == FIXTURES / "adience" / "data" / "u1" / "coarse_tilt_aligned_face.2.c_o.jpg"
    w = load_dataset("imdbwiki3", FIXTURES / "imdbwiki3", "all", **NO)
    assert [x.interval for x in w.samples] == [(0, 29), (60, 100), (30, 59)]
    assert w.samples[1].meta["person"] == "Train/0002.jpg"  # no person ids: each face its own
    assert "unknown split 'val'" in error(read_age_groups, FIXTURES / "imdbwiki3", "val", **NO)
    assert "no labels.csv" in error(read_age_groups, FIXTURES, **NO)


def test_age_group_sets_name_bad_bounds(tmp_path):
    (tmp_path / "labels.csv").write_text("filename,age,age_low,age_high\na.jpg,30-20,30,20\n")
    assert error(read_age_groups, tmp_path, **NO).endswith("line 2: age_high 20 is below age_low 30")
    (tmp_path / "labels.csv").write_text("filename,age,age_low\na.jpg,30,30\n")
    assert "missing column(s) age_high" in error(read_age_groups, tmp_path, **NO)


@pytest.mark.skipif(not (EXTERNAL / "adience" / "labels.csv").is_file(), reason="Adience not laid out in data_external/adience (docs/DATA.md)")
def test_adience_real_layout():
    s = load_dataset("adience", EXTERNAL / "adience")
    assert len(s) == 1585 and len({x.meta["person"] for x in s.samples}) == 92
