import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dldl.labels import (
    LabelSet,
    expectation,
    gaussian_distribution,
    histogram_distribution,
    posterior_median,
    quantile,
)

AGES = LabelSet(0, 100, 1)


def test_label_sets_of_the_paper():
    assert AGES.num_labels == 101
    assert LabelSet(1, 5, 0.1).num_labels == 41
    assert LabelSet(1, 7, 0.1).num_labels == 61
    assert LabelSet(1, 5, 0.1).values()[-1] == pytest.approx(5.0) and LabelSet(1, 5, 0.1).values().dtype == np.float64


@pytest.mark.parametrize("args", [(0, 10, 0), (10, 0, 1), (0, 10, 3), (0, float("nan"), 1)])
def test_bad_label_sets_raise(args):
    with pytest.raises(ValueError):
        LabelSet(*args)


def test_parse():
    assert LabelSet.parse("0:100") == AGES
    with pytest.raises(ValueError, match="start:stop"):
        LabelSet.parse("abc")


def test_gaussian_is_normalised_and_centred():
    y = torch.tensor([0.0, 37.0, 100.0, 55.5])
    p = gaussian_distribution(y, torch.tensor([2.0, 2.0, 3.0, 1.0]), AGES)
    assert p.shape == (4, 101)
    assert torch.allclose(p.sum(1), torch.ones(4))
    assert torch.isclose(expectation(p, AGES)[1], torch.tensor(37.0), atol=1e-4)
    assert p[1].argmax() == 37
    assert torch.isclose(p[3, 55], p[3, 56])  # half-way label splits evenly


def test_gaussian_matches_formula():
    p = gaussian_distribution(torch.tensor([30.0]), 4.0, AGES)[0].double()
    ref = torch.exp(-((torch.as_tensor(AGES.values()) - 30) ** 2) / (2 * 16))
    assert torch.allclose(p, ref / ref.sum(), atol=1e-7)


def test_sigma_zero_is_one_hot_on_nearest():
    p = gaussian_distribution(torch.tensor([12.4, 12.6]), torch.tensor([0.0, 0.0]), AGES)
    assert p[0, 12] == 1 and p[1, 13] == 1 and p.sum() == 2


def test_gaussian_shape_errors_name_shapes():
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        gaussian_distribution(torch.zeros(3), torch.ones(2), AGES)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_distribution(torch.zeros(1), -1.0, AGES)


def test_far_outside_label_gives_mass_at_the_end():
    p = gaussian_distribution(torch.tensor([500.0]), 2.0, AGES)
    assert torch.isfinite(p).all() and p[0, -1] > 0.99


@settings(max_examples=50, deadline=None)
@given(st.floats(0, 100), st.floats(1, 10))
def test_gaussian_mean_inside_range(y, sigma):
    p = gaussian_distribution(torch.tensor([y]), sigma, AGES)
    assert math.isclose(float(p.sum()), 1.0, rel_tol=1e-5)
    e = float(expectation(p, AGES)[0])
    # truncation at the ends pulls the mean inwards, never outwards; sigma >= 1 step keeps the
    # discretisation error of the mean negligible (a narrower Gaussian is not mean-preserving)
    assert 0 <= e <= 100
    if 4 * sigma < y < 100 - 4 * sigma:
        assert abs(e - y) < 1e-2


def test_histogram_to_label_set_keeps_mean():
    counts = torch.tensor([[0, 1, 5, 10, 3, 1, 0, 0, 0, 0.0]])
    bins = torch.arange(1, 11, dtype=torch.float32)
    labels = LabelSet(1, 10, 0.1)
    p = histogram_distribution(counts, bins, labels)
    assert p.shape == (1, labels.num_labels)
    assert torch.isclose(p.sum(), torch.tensor(1.0))
    true_mean = float((counts[0] * bins).sum() / counts.sum())
    assert math.isclose(float(expectation(p, labels)[0]), true_mean, rel_tol=1e-5)


def test_histogram_errors():
    bins = torch.arange(1, 4, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"\(1, 2\).*\(3,\)"):
        histogram_distribution(torch.ones(1, 2), bins, LabelSet(1, 3, 1))
    with pytest.raises(ValueError, match="at least one rating"):
        histogram_distribution(torch.zeros(1, 3), bins, LabelSet(1, 3, 1))


def test_median_and_quantiles():
    p = gaussian_distribution(torch.tensor([40.0]), 3.0, AGES)
    assert posterior_median(p, AGES).item() == 40
    lo, hi = quantile(p, AGES, 0.05).item(), quantile(p, AGES, 0.95).item()
    assert lo < 40 < hi and math.isclose(40 - lo, hi - 40)


def test_expectation_shape_error():
    with pytest.raises(ValueError, match=r"\(N, 101\).*\(2, 5\)"):
        expectation(torch.zeros(2, 5), AGES)
