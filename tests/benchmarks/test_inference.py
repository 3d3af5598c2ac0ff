"""benchmarks/inference.py: every backend runs, int8 models agree with fp32, the report renders."""

from __future__ import annotations

import inference
import numpy as np
import pytest

import dldl
from conftest import UTKFACE, needs_shared
from dldl.data.images import load_face


def test_every_backend_runs_and_the_report_renders():
    res = inference.run(models=["tiny_age_net"], sizes=[32], threads=[1], batches=[1, 2], compile_sizes=[], reps=1,
                        budget_s=0.0, root=None)
    speed = {(r["backend"], r["batch"]): r for r in res["speed"]}
    assert speed[("compile", 1)]["na"].startswith("n/a: not compiled")
    for backend in set(inference.BACKENDS) - {"compile"}:
        assert speed[(backend, 2)]["images_per_s"] > 0, backend
    cost = res["cost"][0]
    assert cost["params"] == 934_869 and cost["forward_gflops"]["32"] > 0
    assert cost["bytes_onnx_int8"] < cost["bytes_onnx"] / 3 and cost["bytes_fp16"] < cost["bytes_fp32"] / 1.9
    assert {r["runtime"] for r in res["face_to_age"]} == set(inference.RUNTIMES)
    assert res["accuracy"][0]["na"].startswith("n/a")
    md = inference.markdown(res)
    assert "| tiny_age_net | int8-onnxruntime |" in md and "A face -> age" in md


def test_int8_and_onnx_runtimes_agree_with_torch(tmp_path):
    est = dldl.load(inference.AGE_MODEL)
    runtimes = inference.shipped_runtimes(1, inference.calibration_images(None, 0), tmp_path)
    crops = np.stack([load_face(p, est.cache_size) for p in sorted(inference.SAMPLES_DIR.glob("*.jpg"))])
    ref = runtimes["torch"].predict_arrays(crops).estimate
    np.testing.assert_allclose(runtimes["onnxruntime"].predict_arrays(crops).estimate, ref, atol=1e-3)
    for name in ("int8-torch", "int8-onnxruntime"):
        np.testing.assert_allclose(runtimes[name].predict_arrays(crops).estimate, ref, atol=1.5, err_msg=name)


@needs_shared
def test_accuracy_rows_on_utkface(tmp_path):
    rows = inference.accuracy_rows(UTKFACE, "coral_test", 24, inference.calibration_images(UTKFACE, 32), tmp_path,
                                   str(tmp_path / "cache"), threads=1)
    by = {r["runtime"]: r for r in rows}
    assert set(by) == set(inference.RUNTIMES) and all(r["faces"] == 24 for r in rows)
    assert by["onnxruntime"]["mae"] == pytest.approx(by["torch"]["mae"], abs=1e-3)
    assert abs(by["int8-onnxruntime"]["mae_change"]) < 1.0
