"""ONNX / TorchScript export: parity with eager torch and use through dldl.load."""

import numpy as np
import pytest

from dldl.errors import CheckpointError
from dldl.export import export
from dldl.runtime import load_exported
from dldl.runtime import Estimator
from dldl.hub import load


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_parity_with_torch(tiny_run, tmp_path, fmt):
    est = Estimator.from_checkpoint(tiny_run / "run" / "best.pt")
    path = export(est, tmp_path / f"m.{fmt}", fmt)
    other = load(path)
    assert (other.labels, other.input_size, other.cache_size, other.task) == (est.labels, est.input_size, est.cache_size, est.task)
    imgs = np.random.default_rng(0).integers(0, 255, (9, est.cache_size, est.cache_size, 3), dtype=np.uint8)
    a, b = est.predict_arrays(imgs), other.predict_arrays(imgs, batch_size=4)
    assert np.abs(a.distribution - b.distribution).max() < 1e-4
    assert np.abs(a.estimate - b.estimate).max() < 0.01


def test_runtime_onnx_exports_once_and_matches(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("DLDL_CACHE", str(tmp_path / "cache"))
    ck = tiny_run / "run" / "best.pt"
    est = load(ck, runtime="onnx")
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1
    files = sorted((tiny_run / "data").glob("*.png"))[:3]
    assert np.abs(est.predict_files(files).estimate - load(ck).predict_files(files).estimate).max() < 0.01


def test_bad_export_file(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(CheckpointError, match="not a dldl export"):
        load_exported(bad)
    with pytest.raises(ValueError, match="unknown export format"):
        export(None, tmp_path / "y", "tflite")


def _with_metadata(src, dst, change):
    """A copy of the ONNX file ``src`` whose dldl metadata was edited by ``change(spec_dict)``."""
    import json

    import onnx

    proto = onnx.load(str(src))
    entry = next(e for e in proto.metadata_props if e.key == "dldl")
    meta = json.loads(entry.value)
    change(meta["spec"])
    entry.value = json.dumps(meta)
    onnx.save(proto, str(dst))
    return dst


@pytest.mark.parametrize("change, problem", [
    (lambda s: s.update(objective="l1", num_outputs=1), "its graph gives a distribution over 101 labels per image, but its metadata (l1 over 101 labels) needs none"),
    (lambda s: s.update(labels={"start": 0, "stop": 50, "step": 1}, num_outputs=51), "needs one over 51 labels"),
    (lambda s: s.update(cache_size=100000), "cache_size 100000: must be a whole number in [input_size, 2048]"),
    (lambda s: s.update(input_size=96, cache_size=108), "its graph does not take the 96x96 input its metadata states"),
    (lambda s: s.update(task="age[/red] ../../x"), "task 'age[/red] ../../x': must be one of age, beauty"),
    (lambda s: s.update(objective="mystery"), "objective 'mystery': must be one of"),
    (lambda s: s.update(temperature=-1), "temperature -1: must be in [0.01, 100]"),
    (lambda s: s.update(tta_flip="no"), "tta_flip 'no': must be true or false"),
])
def test_onnx_metadata_is_checked_against_the_graph(tiny_run, tmp_path, change, problem):
    """An edited ONNX file is refused with one line naming it, never run with a wrong reading."""
    est = Estimator.from_checkpoint(tiny_run / "run" / "best.pt")
    assert est.labels.num_labels == 101 and est.input_size == 32
    bad = _with_metadata(export(est, tmp_path / "m.onnx"), tmp_path / "edited.onnx", change)
    with pytest.raises(CheckpointError) as e:
        load_exported(bad)
    assert str(e.value).startswith(f"{bad}: ") and problem in str(e.value), str(e.value)


def test_runtime_onnx_cache_heals_and_is_never_swapped(tiny_run, tmp_path, monkeypatch):
    """The cached export is keyed by the weights' sha256 and checked on every load: a truncated
    file is exported again, and another model's export put in its place is not used."""
    monkeypatch.setenv("DLDL_CACHE", str(tmp_path / "cache"))
    ck = tiny_run / "run" / "best.pt"
    load(ck, runtime="onnx")
    (cached,) = (tmp_path / "cache" / "onnx").glob("*.onnx")
    good = cached.read_bytes()
    cached.write_bytes(good[: len(good) // 2])  # truncated
    files = sorted((tiny_run / "data").glob("*.png"))[:2]
    want = load(ck).predict_files(files).estimate
    assert np.abs(load(ck, runtime="onnx").predict_files(files).estimate - want).max() < 0.01
    assert cached.read_bytes() == good
    # another model's valid export in its place (here: the same graph read as beauty scores)
    _with_metadata(cached, cached, lambda s: s.update(task="beauty"))
    healed = load(ck, runtime="onnx")
    assert healed.task == "age" and cached.read_bytes() == good


def test_export_to_a_folder_or_under_a_file_is_one_line(tmp_path):
    from dldl.errors import DldlError
    from dldl.outputs import check_output_file

    with pytest.raises(DldlError, match=f"^{tmp_path}: is a folder; give the file to write"):
        export(None, tmp_path)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DldlError, match=f"^--output {tmp_path}/afile/x.onnx: {tmp_path}/afile is a file, not a folder$"):
        check_output_file(tmp_path / "afile" / "x.onnx", "--output")


def test_runtime_auto_reuses_the_cached_copy_without_building_the_torch_network(tmp_path, monkeypatch):
    from dldl.runtime import Estimator as Est

    monkeypatch.setenv("DLDL_CACHE", str(tmp_path / "cache"))
    first = load("tiny_age_net-utkface", runtime="auto")
    assert type(first.model).__name__ == "OnnxNetwork" and first.version
    monkeypatch.setattr(Est, "from_checkpoint", classmethod(lambda *a, **k: pytest.fail("built the torch network")))
    again = load("tiny_age_net-utkface", runtime="auto")
    assert type(again.model).__name__ == "OnnxNetwork" and again.version == first.version


def test_runtime_auto_falls_back_to_torch_when_no_copy_can_be_cached(tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    monkeypatch.setenv("DLDL_CACHE", str(tmp_path / "cache"))
    with pytest.warns(RuntimeWarning, match="running tiny_age_net-utkface with torch: its ONNX copy could not be made"):
        est = load("tiny_age_net-utkface", runtime="auto")
    assert type(est.model).__name__ != "OnnxNetwork"
    with pytest.raises(NotADirectoryError):
        load("tiny_age_net-utkface", runtime="onnx")  # asked for explicitly: the error, not a fallback
