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


def test_the_default_models_predict_from_their_shipped_graph_without_an_export(tmp_path, monkeypatch):
    """The shipped defaults carry their ONNX graph (fp16 weights): no torch export, no cache written."""
    from dldl.hub import MODELS_DIR, model_card

    monkeypatch.setenv("DLDL_CACHE", str(tmp_path / "cache"))
    for name in ("mobilenet_v2-age", "mobilenet_v2-beauty"):
        est = load(name, runtime="onnx")
        assert type(est.model).__name__ == "OnnxNetwork" and est.model.path == MODELS_DIR / model_card(name)["onnx"]["file"]
        assert est.name == name and est.version == model_card(name)["sha256"][:12]
    assert not (tmp_path / "cache").exists()


def test_install_ships_a_graph_and_a_tampered_graph_is_refused(tiny_run, tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.setattr("dldl.hub.MODELS_DIR", tmp_path)
    install(tiny_run / "run" / "best.pt", "toy", {}, tmp_path)
    card = json.loads((tmp_path / "toy.json").read_text())
    assert card["onnx"]["file"] == "toy.onnx" and (tmp_path / "toy.onnx").stat().st_size == card["onnx"]["bytes"]
    crops = np.zeros((2, load("toy").cache_size, load("toy").cache_size, 3), np.uint8)
    graph, net = load("toy", runtime="onnx"), load("toy", runtime="torch")
    np.testing.assert_allclose(graph.predict_arrays(crops).estimate, net.predict_arrays(crops).estimate, atol=1e-3)
    with open(tmp_path / "toy.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(CheckpointError, match="sha256 does not match its model card"):
        load("toy", runtime="onnx")


def test_a_shipped_graph_vouched_for_by_its_card_loads_without_the_graph_check(tmp_path):
    """The check imports onnx and infers every shape (about 1.2 s of start-up): a shipped graph whose
    bytes hash to its card's sha256 skips it; any other bytes are checked."""
    import subprocess
    import sys

    code = ("import sys; from dldl.hub import load; load('mobilenet_v2-age', runtime='onnx'); "
            "print('onnx' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "DLDL_CACHE": str(tmp_path)})
    assert run.stdout.strip() == "False", run.stderr[-400:]
    from dldl.hub import MODELS_DIR, model_card
    from dldl.runtime import OnnxNetwork

    graph = MODELS_DIR / model_card("mobilenet_v2-age")["onnx"]["file"]
    checked = []
    net = OnnxNetwork.__new__(OnnxNetwork)
    net._check = lambda data: checked.append(len(data))  # noqa: E731 -- record the call, do not check
    OnnxNetwork.__init__(net, graph, None, "0" * 64)  # a sha256 that does not match: checked
    assert checked == [graph.stat().st_size]
