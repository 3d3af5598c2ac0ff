import math

import numpy as np
import pytest
import torch

from dldl.metrics import cs_curve, cumulative_score, epsilon_error, mae, mae_by_group, pearson, regression_report, rmse


def test_basic_metrics_against_numpy():
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 80, 200)
    p = t + rng.normal(0, 4, 200)
    assert math.isclose(mae(p, t), np.abs(p - t).mean())
    assert math.isclose(rmse(p, t), np.sqrt(((p - t) ** 2).mean()))
    assert math.isclose(pearson(p, t), np.corrcoef(p, t)[0, 1])
    assert mae(torch.tensor(p), torch.tensor(t)) == pytest.approx(mae(p, t))


def test_epsilon_error_chalearn_definition():
    assert epsilon_error([20.0, 30.0], [20.0, 30.0], [3.0, 5.0]) == 0.0
    e = epsilon_error([25.0], [20.0], [5.0])
    assert math.isclose(e, 1 - math.exp(-0.5))
    with pytest.raises(ValueError, match="sigma > 0"):
        epsilon_error([1.0], [1.0], [0.0])


def test_cs_curve_monotone_and_bounds():
    t = np.arange(100.0)
    p = t + np.linspace(-12, 12, 100)
    curve = cs_curve(p, t, 10)
    values = list(curve.values())
    assert values == sorted(values) and 0 <= values[0] <= values[-1] <= 1
    assert cumulative_score(p, t, 100) == 1.0


def test_groups():
    g = mae_by_group([11.0, 19.0, 45.0], [10.0, 15.0, 40.0])
    assert g == {"10-19": {"mae": 2.5, "count": 2}, "40-49": {"mae": 5.0, "count": 1}}
    beauty = mae_by_group([2.2, 3.9], [2.0, 3.5], width=1.0)
    assert set(beauty) == {"2-2", "3-3"}


def test_shape_mismatch_names_both():
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        mae([1.0, 2.0, 3.0], [1.0, 2.0])


def test_report_keys():
    r = regression_report([1.0, 2.0, 4.0], [1.0, 3.0, 3.0], sigma=[1.0, 1.0, 2.0])
    assert r["count"] == 3 and "epsilon_error" in r and r["cs"][0] == pytest.approx(1 / 3)
