"""The research scripts of experiments/ on a tiny trained run: what they write, and what they refuse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "experiments" / name), *args], capture_output=True, text=True, timeout=300)


def test_calibrate_with_a_given_temperature_copies_the_weights_and_sets_the_spec(tiny_run, tmp_path):
    from dldl.checkpoint import load_checkpoint
    from dldl.runtime import Estimator

    run = tiny_run / "run" / "best.pt"
    out = tmp_path / "teacher.pt"
    r = _script("calibrate.py", str(run), str(out), "--temperature", "1.5", "--one-view")
    assert r.returncode == 0, r.stderr
    before, after = load_checkpoint(run), load_checkpoint(out)
    assert after["spec"]["temperature"] == 1.5 and after["spec"]["tta_flip"] is False
    assert before["spec"]["temperature"] != 1.5
    assert all(torch.equal(before["state_dict"][k], after["state_dict"][k]) for k in before["state_dict"])
    est = Estimator.from_checkpoint(out)
    assert est.spec.temperature == 1.5 and est.spec.tta_flip is False

    again = _script("calibrate.py", str(run), str(out), "--temperature", "2")
    assert again.returncode != 0 and "exists" in again.stderr
    assert load_checkpoint(out)["spec"]["temperature"] == 1.5  # never written over
    bad = _script("calibrate.py", str(run), str(tmp_path / "other.pt"), "--temperature", "0")
    assert bad.returncode != 0 and "--temperature 0.0: must be a number > 0" in bad.stderr
    assert not (tmp_path / "other.pt").exists()


def test_ensemble_subsets_score_the_mean_of_each_smaller_group():
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("ensemble_script", REPO / "experiments" / "ensemble.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    truth = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    est = {"good": truth + np.array([0.5, -0.5, 0.5, -0.5, 0.0]), "bad": truth[::-1].copy(), "other": truth - np.array([0.5, -0.5, 0.5, -0.5, 0.0])}
    out = mod.subset_pearsons(est, truth)
    assert set(out) == {"good + bad", "good + other", "bad + other"}  # groups of two; the whole set is reported apart
    assert out["good + other"] == 1.0  # their errors cancel in the mean
    assert out["good + bad"] < 0.5
    with pytest.raises(ValueError, match=r"estimates of bad have shape \(4,\), truth has shape \(5,\)"):
        mod.subset_pearsons({"good": truth, "bad": truth[:4]}, truth)


def _load_script(name: str):
    """An experiments/ script imported as a module (its functions, no run)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name.removesuffix(".py") + "_script", REPO / "experiments" / name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_beauty_cross_reports_pearson_by_sex_and_the_offset_between_the_sexes():
    import numpy as np

    from dldl.labels import LabelSet

    mod = _load_script("beauty_cross.py")
    truth = np.array([3.0, 4.0, 5.0, 6.0, 1.0, 2.0, 3.0, 4.0])  # women 4.5 on average, men 2.5
    sex = ["female"] * 4 + ["male"] * 4
    pred = truth.copy()
    pred[4:] += 1.0  # the model lifts men by a point: same ranking within each sex, offset halved
    out = mod.sex_stats(pred, truth, sex)
    assert (out["count_female"], out["count_male"], out["count_unknown"]) == (4, 4, 0)
    assert out["pearson_female"] == pytest.approx(1.0) and out["pearson_male"] == pytest.approx(1.0)
    sd = truth.std(ddof=1)
    assert out["raters_offset_points"] == pytest.approx(2.0) and out["raters_offset_sd"] == pytest.approx(2.0 / sd)
    assert out["model_offset_points"] == pytest.approx(1.0) and out["model_offset_sd"] == pytest.approx(1.0 / sd)
    assert out["gap_offset_points"] == pytest.approx(-1.0) and out["se_gap_offset_points"] == pytest.approx(0.0)
    unknown = mod.sex_stats(pred, truth, sex[:-1] + [None])
    assert unknown["count_male"] == 3 and unknown["count_unknown"] == 1 and unknown["count"] == 8
    assert "raters_offset_sd" not in mod.sex_stats(pred, truth, ["female"] * 8)  # one sex: no offset

    # 1-10 estimates onto SCUT's 1-5 scale, end to end (the inverse of label * 2.25 - 1.25)
    assert mod.to_scale(np.array([1.0, 5.5, 10.0]), LabelSet(1, 10, 0.1), LabelSet(1, 5, 0.05)) == pytest.approx([1, 3, 5])
    assert mod.to_scale(np.array([2.0, 4.0]), LabelSet(1, 5, 0.05), LabelSet(1, 10, 0.1)) == pytest.approx([3.25, 7.75])


def test_beauty_cross_marks_the_sets_a_model_trained_on():
    mod = _load_script("beauty_cross.py")
    assert mod.sources_seen("mobilenet_v2-scut5500") == ["scut-fbp5500"]
    assert mod.sources_seen("mobilenet_v2-mebeauty") == ["mebeauty"]
    assert sorted(mod.sources_seen("mobilenet_v2-beauty")) == ["mebeauty", "scut-fbp5500"]
    cell = {"count": 4, "count_female": 2, "count_male": 2, "pearson": 0.5, "spearman": 0.4, "pearson_female": 0.6,
            "pearson_male": None, "raters_offset_sd": 0.3, "raters_offset_points": 0.2, "model_offset_sd": -0.1,
            "model_offset_points": -0.05, "gap_offset_sd": -0.4, "se_gap_offset_sd": 0.2}
    result = {"m": {"sources_seen": ["mebeauty"], "sets": {"A": {**cell, "in_domain": True}, "B": {**cell, "in_domain": False}}}}
    text = mod.tables(result, {"A": (), "B": ()})
    assert "| m (mebeauty) | 0.500 / 0.400* (4) | 0.500 / 0.400 (4) |" in text
    assert "| m | A* | 2 / 2 | 0.500 / 0.600 / - | +0.30 (+0.20) | -0.10 (-0.05) | -0.40 +- 0.20 |" in text
    assert "| m | B | 2 / 2 |" in text


def test_loso_refuses_a_missing_source_a_bad_config_and_writing_over_its_config(tmp_path):
    config = tmp_path / "loso.yaml"
    config.write_text((REPO / "experiments" / "loso" / "age_today.yaml").read_text())
    before = config.read_bytes()
    (tmp_path / "plain.yaml").write_text("epochs: 3\n")
    for args, message in (((str(config), "--without", "morph"), "no source 'morph' (its sources: utkface, aaf, fairface)"),
                          ((str(config), "--without", "aaf", "--out", str(tmp_path)), "the file this run would write"),
                          ((str(tmp_path / "absent.yaml"), "--without", "aaf"), "cannot read the config"),
                          ((str(REPO / "pyproject.toml"), "--without", "aaf"), "cannot read the config (ParserError"),
                          ((str(tmp_path / "plain.yaml"), "--without", "aaf"),
                           "not a training config")):
        r = _script("loso.py", *args)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert config.read_bytes() == before


def test_loso_records_what_a_run_left_out_and_its_recipe_with_overrides():
    mod = _load_script("loso.py")
    cfg = {"epochs": 3, "extra": {"note": "n"}, "sources": [{"dataset": "utkface"}, {"dataset": "aaf"}, {"dataset": "aaf", "weight": 0.1}]}
    out = mod.left_out(cfg, "aaf", Path("runs/x"), mod.recipe(Path("r.yaml"), ["consistency_on=distribution", "epochs=1"]))
    assert out["sources"] == [{"dataset": "utkface"}] and out["out_dir"] == "runs/x" and out["epochs"] == 3
    assert out["extra"] == {"note": "n", "sources_seen": ["utkface"], "held_out": ["aaf"],
                            "recipe": "r.yaml --set consistency_on=distribution --set epochs=1"}
    assert mod.left_out(cfg, "none", Path("y"), "r.yaml")["extra"]["held_out"] == [] and len(cfg["sources"]) == 3


def test_crop_views_average_the_views_they_name(tiny_run):
    """experiments/crop_sensitivity.py's ``Views``: the shipped read-out's own scale (``EVAL_CROP``) with its mirror is
    the estimator's flip average; one unmirrored view is its single view; a mirrored view of a mirrored crop is the
    plain view of the crop; another scale gives another estimate."""
    import numpy as np

    from dldl.data.preprocess import EVAL_CROP
    from dldl.runtime import Estimator

    views = _load_script("crop_sensitivity.py").Views
    est = Estimator.from_checkpoint(tiny_run / "run" / "best.pt")
    crops = np.random.default_rng(0).integers(0, 256, (3, est.cache_size, est.cache_size, 3), dtype=np.uint8)
    np.testing.assert_allclose(views(est, (EVAL_CROP,)).predict_arrays(crops).estimate, est.predict_arrays(crops, tta_flip=True).estimate, rtol=1e-5)
    plain = views(est, ((EVAL_CROP, False),)).predict_arrays(crops)
    np.testing.assert_allclose(plain.estimate, est.predict_arrays(crops, tta_flip=False).estimate, rtol=1e-5)
    np.testing.assert_allclose(views(est, ((0.8, True),)).predict_arrays(crops[:, :, ::-1].copy()).estimate,
                               views(est, ((0.8, False),)).predict_arrays(crops).estimate, rtol=1e-4)
    assert not np.allclose(views(est, ((0.8, False),)).predict_arrays(crops).estimate, plain.estimate)
