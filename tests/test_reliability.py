"""Reliability 3: no input is ever overwritten, and the rough edges a new user hits (each test
failed before its fix; docs/RELIABILITY.md has the row of each)."""

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dldl.assets import PHOTOS_DIR
from dldl.cli import app

PHOTO = sorted(PHOTOS_DIR.glob("*.jpg"))[0]


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_predict_refuses_a_csv_path_that_is_one_of_its_photos(tmp_path):
    photo = tmp_path / "photo.jpg"
    shutil.copy(PHOTO, photo)
    before = photo.read_bytes()
    run = _run("predict", photo, "--csv", photo)
    assert run.exit_code != 0 and "is an input of this command" in str(run.exception) + run.output
    assert photo.read_bytes() == before


def test_export_refuses_to_write_over_its_own_checkpoint_and_names_a_run_after_its_folder(tiny_run, tmp_path, monkeypatch):
    ck = tiny_run / "run" / "best.pt"
    before = ck.read_bytes()
    run = _run("export", "--model", ck, "-o", ck)
    assert run.exit_code != 0 and "is an input of this command" in str(run.exception) + run.output
    assert ck.read_bytes() == before
    monkeypatch.chdir(tmp_path)
    run = _run("export", "--model", tiny_run / "run")
    assert run.exit_code == 0, run.output
    assert (tmp_path / "run.onnx").is_file() and not (tmp_path / "best.onnx").exists()


def test_eval_refuses_a_report_path_inside_its_data(tiny_run):
    labels = tiny_run / "data" / "manifest.csv"
    before = labels.read_bytes()
    run = _run("eval", "--model", tiny_run / "run" / "best.pt", "--dataset", "csv", "--root", labels, "--out", labels)
    assert run.exit_code != 0 and "is an input of this command" in str(run.exception) + run.output
    assert labels.read_bytes() == before


def test_a_csv_into_a_missing_folder_says_the_folder_is_created(tmp_path):
    out = tmp_path / "new" / "faces.csv"
    with pytest.warns(UserWarning, match="does not exist; it is created"):
        run = _run("predict", PHOTO, "--csv", out)
    assert run.exit_code == 0 and out.is_file()


def test_predict_on_a_list_keeps_the_good_results_beside_an_error(tmp_path):
    import dldl

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a photo")
    good, broken = dldl.predict([PHOTO, bad])
    assert good["faces"] and good["error"] is None
    assert broken["faces"] == [] and broken["error"].startswith(f"{bad}: ")


def test_the_first_predict_from_many_threads_at_once_loads_one_predictor(monkeypatch):
    """Eight threads making the first call at once: no deadlock, one model loaded, the same results."""
    import threading

    import dldl
    from dldl import predictor

    monkeypatch.setattr(predictor, "_PIPELINES", {})
    loads = []
    real = predictor.Predictor.__init__

    def counting(self, *a, **k):
        loads.append(1)
        real(self, *a, **k)

    monkeypatch.setattr(predictor.Predictor, "__init__", counting)
    out: list = []
    threads = [threading.Thread(target=lambda: out.append(dldl.predict(PHOTO, min_score=0.71))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    assert len(out) == 8 and len(loads) == 1 and all(r == out[0] for r in out)


def test_ctrl_c_in_predict_keeps_and_writes_what_is_done(tmp_path, monkeypatch):
    from dldl import predictor

    real = predictor.Predictor.stream

    def interrupted(self, sources, bgr=False):
        for n, result in enumerate(real(self, sources, bgr)):
            if n == 2:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(predictor.Predictor, "stream", interrupted)
    photos = sorted(PHOTOS_DIR.glob("*.jpg"))
    out = tmp_path / "faces.csv"
    run = _run("predict", *photos, "--json", "--csv", out)
    assert run.exit_code == 130
    import json

    assert len(json.loads(run.stdout.strip().splitlines()[-1])) == 2
    assert {r.split(",")[0] for r in out.read_text().splitlines()[1:]} == {str(p) for p in photos[:2]}
    assert f"interrupted: 2 of {len(photos)} photos done" in run.stderr


def test_ctrl_c_in_train_says_how_to_resume(tmp_path, monkeypatch):
    import dldl.training

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(dldl.training, "train", interrupted)
    run = _run("train", "--dataset", "csv", "--root", tmp_path / "x.csv", "--out", tmp_path / "run")
    assert run.exit_code == 130 and "--resume" in run.stderr


def test_a_console_that_cannot_show_a_character_gets_the_results(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONIOENCODING": "ascii", "LANG": "C", "LC_ALL": "C"}
    run = subprocess.run([sys.executable, "-m", "dldl.cli", "predict", str(PHOTO)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert "UnicodeEncodeError" not in run.stderr and "age estimates" in run.stdout


def test_urls_and_stdin_say_what_is_accepted():
    run = _run("predict", "https://example.org/a.jpg")
    assert run.exit_code == 1 and "URLs are not fetched: dldl works offline" in run.stderr
    run = _run("predict", "-")
    assert "standard input is not read" in run.stderr


def test_one_unreadable_photo_is_one_error_line_not_a_table(tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    run = _run("predict", bad)
    assert run.exit_code == 1 and run.stdout == ""
    assert run.stderr.strip().startswith(f"error: {bad}: not a readable image")


def test_many_annotated_photos_are_one_wrote_line_and_the_table_is_not_cut_when_piped(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for n in range(7):
        shutil.copy(PHOTO, folder / f"a-rather-long-file-name-that-would-be-cut-at-eighty-columns-{n}.jpg")
    run = _run("predict", folder, "--save-dir", tmp_path / "out")
    assert run.exit_code == 0
    assert run.stderr.count("wrote ") == 1 and f"wrote 7 files into {tmp_path / 'out'}" in run.stderr
    assert "eighty-columns-0.jpg" in run.stdout


def test_a_failed_write_names_the_file_it_was_for(tmp_path):
    import errno

    from dldl.files import write_atomic

    def full_disk(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as e:
        write_atomic(tmp_path / "faces.csv", full_disk)
    assert e.value.filename == str(tmp_path / "faces.csv") and not list(tmp_path.iterdir())


def test_load_of_none_is_one_line_and_dldl_cache_is_read_sensibly(monkeypatch):
    import dldl
    from dldl.errors import DldlError
    from dldl.files import cache_dir

    with pytest.raises(DldlError, match="a model is a shipped name or a file path, not NoneType"):
        dldl.load(None)
    monkeypatch.setenv("DLDL_CACHE", "~/somewhere")
    assert cache_dir() == Path.home() / "somewhere"
    monkeypatch.setenv("DLDL_CACHE", "")
    assert cache_dir() == Path.home() / ".cache" / "dldl"


def test_a_damaged_reference_quantile_list_in_a_card_is_one_line(tiny_run, tmp_path, monkeypatch):
    import json

    from dldl.errors import CheckpointError
    from dldl.hub import install, load

    monkeypatch.setattr("dldl.hub.MODELS_DIR", tmp_path)
    install(tiny_run / "run" / "best.pt", "toy", {"reference_estimates": {"quantiles": [1.0, "x"]}}, tmp_path)
    with pytest.raises(CheckpointError, match=r"toy\.json: the model card's reference_estimates are damaged"):
        load("toy")
    assert json.loads((tmp_path / "toy.json").read_text())["name"] == "toy"


def test_an_upper_case_onnx_suffix_is_an_onnx_file(tiny_run, tmp_path):
    from dldl.export import export
    from dldl.hub import load

    path = export(load(tiny_run / "run"), tmp_path / "MODEL.ONNX", "onnx")
    est = load(path)
    assert type(est.model).__name__ == "OnnxNetwork"


def test_info_is_a_table_or_json():
    import json

    run = _run("info", "--json")
    about = json.loads(run.stdout)
    assert run.exit_code == 0 and about["architectures"]["tiny_age_net"] == 934869
    assert any(m["default"] and m["task"] == "beauty" for m in about["models"])


def test_the_api_page_shows_no_raw_backticks():
    from fastapi.testclient import TestClient

    from dldl.serve import create_app

    page = TestClient(create_app()).get("/docs").text
    assert "``" not in page and "<code>POST /v1/predict</code>" in page


def test_a_large_real_photo_is_read_smaller_with_boxes_in_its_own_pixels(tmp_path):
    """Reliability 3, item 13: a 70 MP photo was refused by the CLI (60 MP cap) and a 30 MP one by the
    server (24 MP); now both are decoded at most 16 MP and the boxes are in the photo's pixels."""
    import io
    import json

    import numpy as np
    from fastapi.testclient import TestClient
    from PIL import Image

    from dldl.serve import create_app

    small = Image.open(PHOTO).convert("RGB")
    ref = json.loads(_run("predict", PHOTO, "--json").stdout.strip().splitlines()[-1])[0]["faces"][0]["box"]
    for side, where in ((10_240, "cli"), (6_700, "server")):
        factor = side / small.width
        big = small.resize((side, round(small.height * factor)), Image.Resampling.BILINEAR)
        assert big.width * big.height > (60_000_000 if where == "cli" else 24_000_000)
        if where == "cli":
            path = tmp_path / "big.jpg"
            big.save(path, quality=85)
            run = _run("predict", path, "--json")
            assert run.exit_code == 0, run.output
            box = json.loads(run.stdout.strip().splitlines()[-1])[0]["faces"][0]["box"]
        else:
            buf = io.BytesIO()
            big.save(buf, "JPEG", quality=85)
            r = TestClient(create_app()).post("/v1/predict", files={"file": ("big.jpg", buf.getvalue(), "image/jpeg")})
            assert r.status_code == 200, r.text
            box = r.json()["faces"][0]["box"]
        side = max(ref[2] - ref[0], ref[3] - ref[1])  # the detector sees a resampled photo: a few % of the face apart
        np.testing.assert_allclose(np.array(box) / factor, ref, atol=0.06 * side)


def test_a_beauty_interval_keeps_its_tenths_in_the_table_and_on_the_picture(monkeypatch):
    """It was '1.5-5' in the table and '(2-5)' on the annotated photo for a 1-10 score."""
    from types import SimpleNamespace

    import numpy as np
    from PIL import Image

    from dldl import annotate
    from dldl.results import FacePrediction, PhotoResult

    face = FacePrediction((10.0, 10.0, 60.0, 70.0), None, 0.9, 4.1, (1.5, 5.0), None, np.zeros((4, 4, 3), np.uint8))
    assert PhotoResult("x.jpg", [face], "beauty", "m").table_rows()[0][4] == "1.5-5.0"
    from PIL import ImageDraw

    drawn = []

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", lambda self, xy, text, **k: drawn.append(text))
    annotate.annotate_photo(Image.new("RGB", (200, 150)), [SimpleNamespace(box=face.box, value=4.1, interval=(1.5, 5.0), flags=())],
                            "beauty")
    assert drawn == ["1  beauty 4.1 (1.5-5.0)"]
