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
