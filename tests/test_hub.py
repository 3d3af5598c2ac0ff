import json
import shutil

import pytest

import dldl
from dldl.errors import CheckpointError, DldlError
from dldl.hub import install, list_pretrained, load


def test_export_is_fp16_smaller_and_loads(tiny_run, tmp_path, monkeypatch):
    ck = tiny_run / "run" / "best.pt"
    monkeypatch.setattr("dldl.hub.MODELS_DIR", tmp_path)
    path = install(ck, "toy", {"summary": "test model"}, tmp_path)
    assert path.stat().st_size < ck.stat().st_size * 0.7
    assert list_pretrained() == ["toy"]
    est = load("toy")
    assert est.predict_files(sorted((tiny_run / "data").glob("*.png"))[:2]).estimate.shape == (2,)
    card = json.loads((tmp_path / "toy.json").read_text())
    assert card["bytes"] == path.stat().st_size


def test_hash_mismatch_is_refused(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setattr("dldl.hub.MODELS_DIR", tmp_path)
    path = install(tiny_run / "run" / "best.pt", "toy", {}, tmp_path)
    shutil.copy(tiny_run / "run" / "last.pt", path)  # swapped file
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        load("toy")


def test_unknown_name():
    with pytest.raises(DldlError, match="neither a file nor a shipped model"):
        dldl.load("definitely-not-a-model")


def test_shipped_age_model_loads_and_matches_its_card():
    if "tiny_age_net-utkface" not in list_pretrained():
        pytest.skip("no shipped model in this checkout")
    from dldl.hub import model_card

    est = load("tiny_age_net-utkface")
    card = model_card("tiny_age_net-utkface")
    assert est.task == "age" and est.labels.num_labels == 101 and est.input_size == 64
    assert card["bytes"] < 3_000_000 and "non-commercial" in card["licence"]
