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
