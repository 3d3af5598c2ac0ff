"""The ``dldl`` command as a user runs it: output formats and one-line errors (exit 2, no traceback)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest


def dldl(*args, check=False):
    done = subprocess.run([sys.executable, "-m", "dldl.cli", *map(str, args)], capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def assert_one_line_error(done, *fragments):
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    text = " ".join(done.stderr.split())
    assert text.startswith("error:"), done.stderr
    for f in fragments:
        assert f in text, (f, done.stderr)


def test_help_lists_commands():
    out = dldl("--help", check=True).stdout
    for cmd in ("train", "eval", "predict", "info"):
        assert cmd in out


def test_info_shows_parameter_counts():
    out = dldl("info", check=True).stdout
    assert "3,708,229" in out and "934,869" in out


def test_predict_json_continues_past_bad_files(tiny_run, tmp_path):
    good = sorted((tiny_run / "data").glob("*.png"))[:2]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really")
    done = dldl("predict", *good, bad, "--crops", "--model", tiny_run / "run" / "best.pt", "--json", check=True)
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["error"] is None for r in rows] == [True, True, False]
    assert "broken.jpg" in rows[2]["path"] and rows[2]["faces"] == []
    faces = [r["faces"][0] for r in rows[:2]]
    assert all(isinstance(f["age"], float) and len(f["interval_90"]) == 2 for f in faces)
    strict = dldl("predict", *good, bad, "--crops", "--model", tiny_run / "run" / "best.pt", "--json", "--strict")
    assert strict.returncode == 1 and json.loads(strict.stdout.strip().splitlines()[-1])[0]["error"] is None


def test_eval_json_last_line_has_mae(tiny_run):
    done = dldl("eval", "--model", tiny_run / "run" / "best.pt", "--dataset", "csv", "--root",
                tiny_run / "data" / "manifest.csv", "--split", "", "--json", "--cache-dir", tiny_run / "cache", check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["count"] == 32 and "mae" in report and "no_flip" in report


def test_missing_dataset_root_is_one_line(tmp_path):
    assert_one_line_error(dldl("train", "--root", tmp_path / "nowhere", "--epochs", "1"), "nowhere")


def test_malformed_label_file_is_one_line(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\na.jpg,forty\n")
    (tmp_path / "a.jpg").write_bytes(b"")
    assert_one_line_error(dldl("train", "--dataset", "csv", "--root", csv, "--set", "train_split=null"), "labels.csv", "forty")


def test_label_outside_label_set_is_one_line(synthetic_manifest):
    done = dldl("train", "--dataset", "csv", "--root", synthetic_manifest, "--set", "train_split=null",
                "--set", "labels=0:30:1", "--set", "test_split=null")
    assert_one_line_error(done, "manifest.csv", "outside")


def test_damaged_model_file_is_one_line(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"PK\x03\x04 nope")
    assert_one_line_error(dldl("predict", "--model", bad), "model.pt", "corrupted")


def test_unknown_config_field_is_one_line():
    assert_one_line_error(dldl("train", "--root", ".", "--set", "epochz=3"), "epochz")


def test_debug_shows_traceback(tmp_path):
    done = dldl("--debug", "predict", "--model", tmp_path / "none.pt")
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_main_job_runs_on_bundled_samples_with_shipped_model():
    from dldl.pretrained import list_pretrained

    if "tiny_age_net-utkface" not in list_pretrained():
        pytest.skip("no shipped model in this checkout")
    pytest.importorskip("yuface", reason="the face detector (yuface, a CPython 3.11 wheel) is not installed")
    rows = json.loads(dldl("predict", "--json", check=True).stdout.strip().splitlines()[-1])
    assert len(rows) == 3 and all(r["error"] is None and r["faces"] for r in rows)
    for face in (f for r in rows for f in r["faces"]):
        assert 1 < face["age"] < 100 and len(face["box"]) == 4 and len(face["landmarks"]) == 5
    crops = json.loads(dldl("predict", "--crops", "--json", check=True).stdout.strip().splitlines()[-1])
    assert len(crops) == 5 and all(len(r["faces"]) == 1 for r in crops)


def test_set_values_keep_text_fields_as_text():
    from dldl.train import TrainConfig

    cfg = TrainConfig.from_sources(overrides={"labels": "1:10:0.1", "val_split": "null", "lr": "0.5", "resume": "false"})
    assert cfg.labels == "1:10:0.1"  # YAML would read this as a base-60 number
    assert cfg.val_split is None and cfg.lr == 0.5 and cfg.resume is False


def test_save_dir_writes_annotated_photos_and_distribution_plots(tmp_path):
    from dldl.pretrained import list_pretrained

    if "tiny_age_net-utkface" not in list_pretrained():
        pytest.skip("no shipped model in this checkout")
    pytest.importorskip("yuface", reason="the face detector (yuface, a CPython 3.11 wheel) is not installed")
    from PIL import Image

    from dldl.assets import PHOTOS_DIR

    photo = sorted(PHOTOS_DIR.glob("*.jpg"))[0]
    dldl("predict", photo, "--save-dir", tmp_path, "--plot-distributions", check=True)
    annotated = tmp_path / f"{photo.stem}_age.jpg"
    plot = tmp_path / f"{photo.stem}_age_distributions.png"
    assert Image.open(annotated).size == Image.open(photo).size
    assert Image.open(plot).format == "PNG" and Image.open(plot).width > 200


MEBEAUTY_ORIGINALS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mebeauty" / "original_images"


@pytest.mark.skipif(not MEBEAUTY_ORIGINALS.is_dir(), reason="../shared/data/mebeauty/original_images not present on this machine")
@pytest.mark.parametrize("task", ["age", "beauty"])
def test_predict_on_real_in_the_wild_photos(task):
    """dldl predict on MEBeauty's original photos (folder input, recursive): a face in nearly every photo."""
    pytest.importorskip("yuface", reason="the face detector (yuface, a CPython 3.11 wheel) is not installed")
    folder = MEBEAUTY_ORIGINALS / "female" / "caucasian"  # 78 photos of various sizes and sources
    rows = json.loads(dldl("predict", folder, "--task", task, "--json", check=True).stdout.strip().splitlines()[-1])
    assert len(rows) == len(list(folder.glob("*.jpg"))) and all(r["error"] is None for r in rows)
    assert sum(bool(r["faces"]) for r in rows) >= 0.95 * len(rows)
    low, high = (0, 100) if task == "age" else (1, 10)
    assert all(low <= f[task] <= high and low <= f["interval_90"][0] <= f["interval_90"][1] <= high for r in rows for f in r["faces"])
